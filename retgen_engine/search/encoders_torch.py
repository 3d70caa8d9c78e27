"""The torch backend: a local sentence-transformers model in float32 or bfloat16.

Batches go through sentence-transformers on the available cores; a single query takes the lean
path (the Rust tokenizer and the transformer module, one intra-op thread). torch's thread count
is process-global: it is set for the call and restored afterwards.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .encoders_base import (BUNDLED_NAME, Encoder, bundled_minilm_path, fast_tokenizer,
                            quiet_loading)


@contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads, then restore the previous count."""
    import torch

    prev = torch.get_num_threads()
    if prev != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if prev != n:
            torch.set_num_threads(prev)


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded from a local path, never from a hub (torch)."""

    backend = "torch"

    def __init__(self, path: str | os.PathLike | None = None, dtype: str = "float32",
                 device: str = "cpu", threads: Optional[int] = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"encoder dtype {dtype!r} with backend 'torch': use 'float32' or "
                             "'bfloat16'")
        p = Path(path) if path is not None else bundled_minilm_path()
        if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise FileNotFoundError(f"encoder path {str(p)!r} is not a sentence-transformers model "
                                    "directory (no modules.json/config.json)")
        import torch
        from sentence_transformers import SentenceTransformer

        from .encoders_export import exportable
        from .encoders_select import batch_threads

        with quiet_loading():
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
        self.name = BUNDLED_NAME if path is None else p.name
        self.threads = batch_threads(threads)
        # the lean single-query path needs plain mean pooling and a Rust tokenizer
        lean = device == "cpu" and exportable(p) is None
        self._tok = fast_tokenizer(p, self.max_seq_length) if lean else None
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "dtype": self.dtype,
                "max_seq_length": self.max_seq_length, "backend": self.backend}

    @staticmethod
    def _unit(v) -> np.ndarray:
        v = v.float().cpu().numpy().astype(np.float32, copy=False)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # exact in fp32

    def _encode_one(self, text: str) -> Optional[np.ndarray]:
        if self._tok is None:
            return None
        import torch

        ids = torch.tensor([self._tok.encode(text).ids], dtype=torch.long)
        mask = torch.ones_like(ids)
        with self._lock, torch_threads(1), torch.inference_mode():
            h = self.model[0].auto_model(input_ids=ids, attention_mask=mask,
                                         token_type_ids=torch.zeros_like(ids)).last_hidden_state
            # what sentence-transformers' mean Pooling + Normalize compute, in the model's dtype
            m = mask.unsqueeze(-1).to(h.dtype)
            v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
        return self._unit(v)[0]

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        # Texts longer than max_seq_length word pieces are truncated by the tokenizer (documented).
        with self._lock, torch_threads(1 if len(texts) == 1 else self.threads):
            v = self.model.encode(list(texts), batch_size=len(texts), convert_to_numpy=False,
                                  convert_to_tensor=True, normalize_embeddings=True,
                                  show_progress_bar=False)
        return self._unit(v)
