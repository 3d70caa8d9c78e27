"""Refine codes and the large-store profiles of :class:`~retgen_engine.docstore.DocumentStore`.

A large store keeps no raw vectors. Its faiss index (IVF-PQ, 4-bit fast-scan) proposes
``refine_factor * k`` candidates, which are re-scored against vectors decoded from a finer
per-record code (faiss ``sa_encode``/``sa_decode``, renormalized). The codec is trained once,
on the raw vectors present when the store switches to codes, and never re-encodes: later index
retraining uses the decoded vectors, so codes never compound their error.

The alternative, ``refine_codes="index"``, keeps a single representation: the codes of the
index itself (8-bit residual PQ scored by ADC), no second code per record. Its profiles scan
the lists by inner product (``IndexConfig.ip_scan``: one query table instead of one per probed
list; the same codes) and re-score the top 8k from the same codes, decoded and renormalized
(or, ``"compact-disk"``, from float16 vectors on disk).

Profiles (:func:`large_store_kwargs`), measured in ``benchmarks/results/vectorstore.md``:

- ``"compact"``: in-index ``IVF{L},PQ{dim/3}`` codes (128 B for MiniLM's 384 dimensions).
- ``"balanced"``: in-index ``IVF{L},PQ{dim/2}`` codes (192 B).
- ``"compact-disk"``: ``"compact"`` in RAM, plus float16 vectors on disk (``2 * dim`` B) that
  re-score the candidates (:mod:`retgen_engine.docstore.diskvectors`).
- ``"refine-pq"``: IVF-PQ 4-bit fast-scan candidates + ``IVF{L},PQ{dim/3}`` refine codes;
  retrains its index as the store grows.
- ``"refine-sq8"``: the same candidates + ``SQ8`` refine codes (384 B), near-exact re-scoring.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from ..config import IndexConfig
from .ranking import unit_rows
from ..search.index import drop_precomputed_table

log = logging.getLogger(__name__)

MIN_CODEC_TRAIN = 10_000    # records needed to train an 8-bit PQ refine codec (39 * 256)
CODEC_TRAIN_MAX = 65_536    # training sample cap (k-means cost grows with it, quality barely)
PROFILES = ("compact", "balanced", "compact-disk", "refine-pq", "refine-sq8")
IN_INDEX_REFINE_FACTOR = 8  # ADC (inner product) top 8k re-scored: decoded codes or disk rows
IN_INDEX_GROWTH = 16        # in-index codes are trained once: nlist sized for this growth


def auto_refine_spec(dim: int, n: int) -> str:
    """The "auto" refine codec for ``n`` training vectors: ``IVF{L},PQ{m}``, a coarse quantizer
    with ``L`` (<= 1024, >= 39 training points each) centroids plus an 8-bit PQ of the residual
    with one sub-quantizer per 3 dimensions (or the closest divisor of ``dim`` below):
    2 + dim/3 bytes. Residual PQ is markedly more accurate than plain PQ of the same size."""
    m = _divisor_at_most(dim, dim // 3)
    lists = 1 << max(0, min(10, int(np.log2(max(1, n // 39)))))
    return f"IVF{lists},PQ{m}"


def in_index_nlist(n: int, growth: int = IN_INDEX_GROWTH) -> int:
    """IVF lists for an index trained once on ``n`` vectors and expected to grow ``growth``-fold:
    about 4*sqrt(growth * n) (the usual 4*sqrt(N) at the final size), at most n/39 (faiss wants
    >= 39 training points per list)."""
    return max(1, min(n // 39, int(round(4 * np.sqrt(growth * n)))))


def _divisor_at_most(dim: int, m: int) -> int:
    m = max(1, min(dim, m))
    while dim % m:
        m -= 1
    return m


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
    drop_precomputed_table(codec)  # sa_encode/sa_decode never use it
    codes = np.empty((len(vecs), codec.sa_code_size()), dtype=np.uint8)
    for s in range(0, len(vecs), 1 << 16):
        codes[s:s + (1 << 16)] = codec.sa_encode(np.ascontiguousarray(vecs[s:s + (1 << 16)]))
    return codec, codes


def decode(codec, codes: np.ndarray, dim: int) -> np.ndarray:
    """Unit float32 vectors reconstructed from refine codes."""
    out = np.empty((len(codes), dim), dtype=np.float32)
    for s in range(0, len(codes), 1 << 16):
        out[s:s + (1 << 16)] = codec.sa_decode(np.ascontiguousarray(codes[s:s + (1 << 16)]))
    return unit_rows(out)


def large_store_config(**overrides: Any) -> IndexConfig:
    """The index configuration for large (10^5-10^7) MiniLM-size stores: exact below 20k,
    IVF-Flat below 50k, then IVF-PQ 48x4-bit fast-scan candidate codes probed 64 lists deep."""
    cfg = dict(exact_threshold=20_000, pq_threshold=50_000, pq_nsplits=48, fast_scan=True,
               nprobe=64, precomputed_table=True)  # fast-scan: a small (4-bit) table
    cfg.update(overrides)
    return IndexConfig(**cfg)


LARGE_REFINE_FACTOR = 16


def large_store_kwargs(profile: str = "compact", refine_factor: Optional[int] = None,
                       dim: int = 384, disk_dir: Optional[str] = None,
                       **index_overrides: Any) -> dict:
    """``DocumentStore(**large_store_kwargs(profile))`` for 10^5-10^7 records of ``dim``
    dimensions (MiniLM: 384). All profiles drop raw vectors once they have codes.

    ``"compact"`` / ``"balanced"``: in-index 8-bit residual PQ codes of ``dim/3`` / ``dim/2``
    bytes (one representation; ADC candidates re-scored from the renormalized decoded codes;
    trained once); ``"refine-pq"`` / ``"refine-sq8"``:
    IVF-PQ 4-bit fast-scan candidates re-scored from ``IVF{L},PQ{dim/3}`` / ``SQ8`` refine
    codes (two representations; the index is retrained as the store grows);
    ``"compact-disk"``: ``"compact"`` whose candidates are re-scored from float16 vectors kept
    on disk (``disk_dir``, default: the system temp directory) instead of the decoded codes."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; allowed: {', '.join(PROFILES)}")
    if profile in ("compact", "balanced", "compact-disk"):
        m = _divisor_at_most(dim, dim // 2 if profile == "balanced" else dim // 3)
        cfg = dict(fast_scan=False, pq_nsplits=m, pq_nbits=8, nprobe=64,
                   train_size=CODEC_TRAIN_MAX, precomputed_table=False, ip_scan=True)
        cfg.update(index_overrides)
        out = {"index_config": large_store_config(**cfg), "refine_codes": "index",
               "refine_factor": refine_factor or IN_INDEX_REFINE_FACTOR}
        if profile == "compact-disk":
            out.update(disk_vectors=True, disk_dir=disk_dir)
        return out
    return {"index_config": large_store_config(**index_overrides),
            "refine_factor": refine_factor or LARGE_REFINE_FACTOR,
            "refine_codes": "auto" if profile == "refine-pq" else "SQ8"}


__all__ = ["auto_refine_spec", "in_index_nlist", "train_codec", "decode", "large_store_config",
           "large_store_kwargs", "LARGE_REFINE_FACTOR", "IN_INDEX_REFINE_FACTOR",
           "IN_INDEX_GROWTH", "MIN_CODEC_TRAIN", "PROFILES"]
