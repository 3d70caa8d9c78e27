"""Training the store's faiss index, and switching its rows from raw vectors to codes.

The store stays exact (``IDMap2,Flat``, :func:`exact_index`) until
``IndexConfig.exact_threshold`` records; then :func:`train` builds the index chosen by
:func:`retgen_engine.search.index.choose_spec` from the stored vectors (the store calls it
again when it has grown ``retrain_growth``-fold). When that index uses compressed codes and
there are :data:`~retgen_engine.docstore.codes.MIN_CODEC_TRAIN` records, raw rows are replaced:

- ``refine_codes="auto"`` or a codec spec: by refine codes (:class:`~.rows.CodecRows`); later
  retraining fills the index from their decoded vectors, never re-encoding them;
- ``refine_codes="index"``: by the index's own codes (:class:`~.rows.InIndexRows`, with
  ``disk_vectors`` :class:`~.rows.DiskRows`), the index sized for
  :data:`~retgen_engine.docstore.codes.IN_INDEX_GROWTH`-fold growth and never retrained
  (re-encoding decoded vectors would compound their error).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from . import codes as refine
from .diskvectors import DiskVectors
from .rows import RawRows, VectorRows, to_codes, to_in_index
from ..config import IndexConfig
from ..search.index import FaissIndex, choose_spec

log = logging.getLogger(__name__)

EXACT_SPEC = "IDMap2,Flat"


def has_codes(spec: str) -> bool:
    """True when a faiss index of ``spec`` holds compressed codes rather than vectors."""
    return any(t in spec for t in ("PQ", "SQ", "LSH", "RQ"))


def exact_index(dim: int, nprobe: int) -> FaissIndex:
    """An empty exact index (what a store uses below ``exact_threshold``)."""
    import faiss

    return FaissIndex(faiss.index_factory(dim, EXACT_SPEC, faiss.METRIC_L2), EXACT_SPEC, nprobe)


def train(rows: VectorRows, cfg: IndexConfig, refine_codes: Optional[str],
          disk_vectors: bool = False, disk_dir: Optional[str] = None
          ) -> tuple[FaissIndex, VectorRows]:
    """(a new index over every row, the rows it goes with): ``rows`` themselves (compacted
    first) or the codes that replace raw rows. On an error nothing the caller holds changed
    (but for the compaction): a disk error while writing disk rows keeps the raw rows."""
    rows.compact()
    n = len(rows)
    t0 = time.perf_counter()
    vecs = rows.vectors()  # raw rows, or decoded refine codes (in-index rows never retrain)
    if (isinstance(rows, RawRows) and refine_codes is not None and n >= refine.MIN_CODEC_TRAIN
            and has_codes(choose_spec(n, rows.dim, cfg))):
        if refine_codes == "index":
            return _to_index_codes(rows, vecs, cfg, disk_vectors, disk_dir, t0)
        rows = _to_codes(rows, vecs, refine_codes, cfg)
    index = FaissIndex.build(vecs, rows.ids(), cfg)
    del vecs
    log.info("docstore: trained %s on %d vectors in %.2fs", index.spec, n,
             time.perf_counter() - t0)
    return index, rows


def _to_codes(rows: RawRows, vecs: np.ndarray, refine_codes: str,
              cfg: IndexConfig) -> VectorRows:
    """Refine codes of ``vecs`` (the raw rows) from a codec trained on them, or the raw rows
    themselves when faiss cannot train it."""
    spec = (refine.auto_refine_spec(rows.dim, len(vecs)) if refine_codes == "auto"
            else refine_codes)
    t0 = time.perf_counter()
    try:
        codec, codes = refine.train_codec(vecs, spec, cfg.seed)
    except RuntimeError as e:
        log.warning("docstore: cannot train refine codec %s on %d vectors (%s); keeping "
                    "raw vectors", spec, len(vecs), str(e).splitlines()[0] if str(e) else e)
        return rows
    log.info("docstore: %d raw vectors replaced by %s refine codes (%d B each) in %.2fs",
             len(vecs), spec, codes.shape[1], time.perf_counter() - t0)
    return to_codes(rows, codec, spec, codes)


def _to_index_codes(rows: RawRows, vecs: np.ndarray, cfg: IndexConfig, disk_vectors: bool,
                    disk_dir: Optional[str], t0: float) -> tuple[FaissIndex, VectorRows]:
    """The final index (nlist with growth headroom) and in-index rows replacing the raw ones
    (the raw rows, when training fell back to an index without codes)."""
    n = len(vecs)
    cfg = cfg.model_copy(update={"nlist": cfg.nlist or refine.in_index_nlist(n)})
    index = FaissIndex.build(vecs, rows.ids(), cfg)
    if not index.nlist or not has_codes(index.spec):  # training fell back: keep raw rows
        return index, rows
    lists = index.assign(vecs)
    disk = None
    if disk_vectors:  # written before any state changes: a disk error keeps raw rows
        disk = DiskVectors(rows.dim, disk_dir)
        disk.append(vecs)
    out = to_in_index(rows, index, lists, disk)
    log.info("docstore: %d raw vectors replaced by in-index %s codes in %.2fs "
             "(trained once)", n, index.spec, time.perf_counter() - t0)
    return index, out


__all__ = ["EXACT_SPEC", "has_codes", "exact_index", "train"]
