"""Refine codes: the compact second representation of each record in a large document store.

A large store keeps no raw vectors. Its faiss index (IVF-PQ, 4-bit fast-scan) proposes
``refine_factor * k`` candidates, which are re-scored against vectors decoded from a finer
per-record code (faiss ``sa_encode``/``sa_decode``, renormalized). The codec is trained once,
on the raw vectors present when the store switches to codes, and never re-encodes: later index
retraining uses the decoded vectors, so codes never compound their error.

Profiles (:func:`large_store_kwargs`), measured in ``benchmarks/results/vectorstore.md``:

- ``"compact"``: ``IVF{L},PQ{dim/3}`` residual codes (2 + 128 B for MiniLM's 384 dimensions).
- ``"balanced"``: ``SQ8`` (one byte per dimension, 384 B), near-exact re-scoring.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from .config import IndexConfig

log = logging.getLogger(__name__)

MIN_CODEC_TRAIN = 10_000    # records needed to train an 8-bit PQ refine codec (39 * 256)
CODEC_TRAIN_MAX = 65_536    # training sample cap (k-means cost grows with it, quality barely)
PROFILES = ("compact", "balanced")


def auto_refine_spec(dim: int, n: int) -> str:
    """The "auto" refine codec for ``n`` training vectors: ``IVF{L},PQ{m}``, a coarse quantizer
    with ``L`` (<= 1024, >= 39 training points each) centroids plus an 8-bit PQ of the residual
    with one sub-quantizer per 3 dimensions (or the closest divisor of ``dim`` below):
    2 + dim/3 bytes. Residual PQ is markedly more accurate than plain PQ of the same size."""
    m = max(1, dim // 3)
    while dim % m:
        m -= 1
    lists = 1 << max(0, min(10, int(np.log2(max(1, n // 39)))))
    return f"IVF{lists},PQ{m}"


def train_codec(vecs: np.ndarray, spec: str, seed: int = 0):
    """(trained faiss codec, uint8 codes [n, code_size]) for the raw rows ``vecs``; raises
    RuntimeError when faiss cannot train ``spec`` on them."""
    import faiss

    codec = faiss.index_factory(vecs.shape[1], spec, faiss.METRIC_L2)
    if not codec.is_trained:
        tn = min(len(vecs), CODEC_TRAIN_MAX)
        rng = np.random.default_rng(seed)
        codec.train(vecs[np.sort(rng.choice(len(vecs), tn, replace=False))]
                    if tn < len(vecs) else vecs)
    codes = np.empty((len(vecs), codec.sa_code_size()), dtype=np.uint8)
    for s in range(0, len(vecs), 1 << 16):
        codes[s:s + (1 << 16)] = codec.sa_encode(np.ascontiguousarray(vecs[s:s + (1 << 16)]))
    return codec, codes


def decode(codec, codes: np.ndarray, dim: int) -> np.ndarray:
    """Unit float32 vectors reconstructed from refine codes."""
    out = np.empty((len(codes), dim), dtype=np.float32)
    for s in range(0, len(codes), 1 << 16):
        out[s:s + (1 << 16)] = codec.sa_decode(np.ascontiguousarray(codes[s:s + (1 << 16)]))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def large_store_config(**overrides: Any) -> IndexConfig:
    """The index configuration for large (10^5-10^7) MiniLM-size stores: exact below 20k,
    IVF-Flat below 50k, then IVF-PQ 48x4-bit fast-scan candidate codes probed 64 lists deep."""
    cfg = dict(exact_threshold=20_000, pq_threshold=50_000, pq_nsplits=48, fast_scan=True,
               nprobe=64)
    cfg.update(overrides)
    return IndexConfig(**cfg)


LARGE_REFINE_FACTOR = 16


def large_store_kwargs(profile: str = "compact", refine_factor: Optional[int] = None,
                       **index_overrides: Any) -> dict:
    """``DocumentStore(**large_store_kwargs(profile))`` for 10^5-10^7 MiniLM-size records.

    ``"compact"``: IVF-PQ48x4fs candidates + ``IVF{L},PQ{dim/3}`` refine codes (the most
    memory-frugal); ``"balanced"``: the same candidates + ``SQ8`` refine codes (about 2.5x the
    bytes, re-scoring close to exact). Both drop raw vectors once they have codes."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; allowed: {', '.join(PROFILES)}")
    return {"index_config": large_store_config(**index_overrides),
            "refine_factor": refine_factor or LARGE_REFINE_FACTOR,
            "refine_codes": "auto" if profile == "compact" else "SQ8"}


__all__ = ["auto_refine_spec", "train_codec", "decode", "large_store_config",
           "large_store_kwargs", "LARGE_REFINE_FACTOR", "MIN_CODEC_TRAIN", "PROFILES"]
