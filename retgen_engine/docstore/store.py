"""A document vector store: texts + metadata + vectors behind stable string ids.

Shared by the LangChain and LlamaIndex adapters (no framework imports here). Ranking helpers
live in :mod:`retgen_engine.docranking`, refine codes in :mod:`retgen_engine.refine`,
persistence in :mod:`retgen_engine.docstore_io`.

Ids. Callers name records with strings; internally every record gets an int64 id from a
counter that only grows (never reused, also across upserts and saves), with a
``str -> int`` map. Re-adding an existing string id replaces the record (upsert).

Index. Exact (``IDMap2,Flat``) until ``IndexConfig.exact_threshold`` records, then an IVF
index chosen by :func:`retgen_engine.index.choose_spec` (IVF-Flat, IVF-PQ above
``pq_threshold``), trained automatically from the stored vectors and retrained when the store
has grown by ``retrain_growth`` since the last training. Retraining keeps every int id.
With compressed codes (PQ/SQ) the index proposes ``refine_factor * k`` candidates that are
re-scored from a second, finer representation of each record: the raw vectors of a small
store, or (once there are ``MIN_CODEC_TRAIN`` records and the index uses codes) the refine
codes of :mod:`retgen_engine.refine`, after which no raw vector is kept. Search distances,
:meth:`DocumentStore.vectors`, ``with_vectors``, MMR and energy reranking then use the
reconstructed vectors. ``refine_codes=None`` keeps raw vectors at every size.

``refine_codes="index"`` keeps one representation only: once the index uses codes (and there
are ``MIN_CODEC_TRAIN`` records) it is built with ``nlist`` sized for 16-fold growth
(:func:`~retgen_engine.refine.in_index_nlist`), the raw vectors are dropped, and the index's
own codes (8-bit residual PQ scored by ADC) rank the candidates; with ``refine_factor > 1`` the
best ``refine_factor * k`` are re-scored from their decoded, renormalized codes (the same
bytes; renormalizing removes the norm error of the decoded vector). Vectors are decoded via
each record's IVF list number. Such an index is trained once and never retrained
(re-encoding decoded vectors would compound their error).

``disk_vectors=True`` (with ``refine_codes="index"``) also writes each record's unit vector as
float16 to a file (:mod:`retgen_engine.diskvectors`, in ``disk_dir``) and re-scores the
candidates against those rows instead of the decoded codes: RAM holds the codes only, and
each query reads ``refine_factor * k`` rows of ``2 * dim`` bytes from disk (or the page cache).

Scores. One convention everywhere (:func:`~retgen_engine.docranking.relevance`): the
distance ``d`` is squared L2 between unit vectors, in [0, 4]; the relevance is ``1 - d / 4``
in [0, 1], higher is better.

Filters (:mod:`retgen_engine.filters`) are evaluated on metadata to get the allowed int ids,
which go into the faiss search as an ``IDSelectorBatch`` passed per call, so a filtered
search returns the best *matching* records rather than filtering a fixed top-k.

Threads. Mutations and the faiss search run under one re-entrant lock; a search copies what
it returns (a snapshot) so MMR, energy reranking and callers never see later mutations.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import codes as refine
from ..config import IndexConfig
from .ranking import (energy_rerank, energy_scores, freq_prior, mmr_select, normalize_rows,
                         relevance, unit_rows)
from .persist import (CODES_FORMAT_VERSION, DISK_FORMAT_VERSION, FORMAT, FORMAT_VERSION,
                          IN_INDEX_FORMAT_VERSION,
                          load_store, read_manifest, save_store)
from .diskvectors import DiskVectors
from ..search.energy import EnergyModel
from .filters import Filter, compile_filter
from ..search.index import FaissIndex, choose_spec
from .codes import (LARGE_REFINE_FACTOR, MIN_CODEC_TRAIN, auto_refine_spec, in_index_nlist,
                     large_store_config, large_store_kwargs)

log = logging.getLogger(__name__)

EXACT_SPEC = "IDMap2,Flat"
VECTOR_DTYPES = ("float32", "float16")


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class Hit:
    """One search result. ``score`` is the relevance ``1 - distance / 4`` (higher better)."""

    id: str
    text: str
    metadata: dict[str, Any]
    distance: float
    score: float
    vector: Optional[np.ndarray] = field(default=None, repr=False)
    energy: Optional[float] = None
    weight: Optional[float] = None

def _check_ids(ids: Iterable[Any], what: str = "id") -> list[str]:
    out = list(ids)
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise TypeError(f"{what} {i} is {x!r} ({type(x).__name__}); ids must be strings")
    return out


class DocumentStore:
    """Texts, metadata and vectors with upsert/delete, filtered search, MMR and persistence."""

    def __init__(self, dim: Optional[int] = None, index_config: Optional[IndexConfig] = None,
                 vector_dtype: str = "float32", refine_factor: int = 4,
                 retrain_growth: float = 2.0, refine_codes: Optional[str] = "auto",
                 disk_vectors: bool = False, disk_dir: Optional[str | os.PathLike] = None):
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim={dim!r} must be a positive int (or None: set by the first add)")
        if vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype={vector_dtype!r}; allowed: {', '.join(VECTOR_DTYPES)}")
        if refine_factor < 1:
            raise ValueError(f"refine_factor={refine_factor} must be >= 1")
        if retrain_growth <= 1.0:
            raise ValueError(f"retrain_growth={retrain_growth} must be > 1")
        if refine_codes is not None and (not isinstance(refine_codes, str) or not refine_codes):
            raise ValueError(f"refine_codes={refine_codes!r} must be 'auto', 'index' (the "
                             "index's codes only), a faiss index_factory string (e.g. 'PQ96') "
                             "or None (keep raw vectors)")
        if not isinstance(disk_vectors, bool):
            raise TypeError(f"disk_vectors={disk_vectors!r} must be a bool")
        if disk_vectors and refine_codes != "index":
            raise ValueError(f"disk_vectors=True needs refine_codes='index' (got "
                             f"{refine_codes!r}): the float16 rows on disk re-score the "
                             "index's candidates")
        if disk_dir is not None and not Path(disk_dir).is_dir():
            raise ValueError(f"disk_dir={str(disk_dir)!r} is not a directory")
        self.dim = dim
        self.disk_vectors = disk_vectors
        self.disk_dir = None if disk_dir is None else str(disk_dir)
        self._disk: Optional[DiskVectors] = None  # float16 rows on disk (disk_vectors=True)
        self.index_config = index_config or IndexConfig()
        self.vector_dtype = vector_dtype
        self.refine_factor = refine_factor
        self.retrain_growth = retrain_growth
        self.refine_codes = refine_codes
        self._codec = None          # trained faiss codec once raw vectors are dropped
        self._codec_spec: Optional[str] = None
        self._in_index = False      # refine_codes="index" after compression: _vecs = list nos
        self._growth_warned = False
        self.extra: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._next_id = 0
        self._id_map: dict[str, int] = {}
        self._records: dict[int, Record] = {}
        # per row: the raw vector, its refine code, or (in-index codes) its IVF list number
        self._vecs = np.zeros((0, dim or 0), dtype=vector_dtype)
        self._row_ids = np.zeros(0, dtype=np.int64)   # int id of each row, ascending
        self._alive = np.zeros(0, dtype=bool)
        self._nrows = 0
        self._index: Optional[FaissIndex] = None
        self._trained_n = 0

    # -- introspection -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    @property
    def spec(self) -> Optional[str]:
        return self._index.spec if self._index is not None else None

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self._records.values()]

    def int_id(self, id: str) -> Optional[int]:
        return self._id_map.get(id)

    @property
    def compressed(self) -> bool:
        """True once raw vectors were replaced by refine codes or in-index codes."""
        return self._codec is not None or self._in_index

    @property
    def refine_spec(self) -> Optional[str]:
        return self._codec_spec

    def disk_bytes(self) -> int:
        """Bytes of the float16 vectors kept on disk (``disk_vectors=True``; else 0)."""
        with self._lock:
            return self._disk.disk_bytes() if self._disk is not None else 0

    def evict_disk_cache(self) -> None:
        """Ask the OS to drop the disk vectors from its page cache (no-op without them), so the
        next searches read them from disk: for cold-read measurements."""
        with self._lock:
            if self._disk is not None:
                self._disk.evict_cache()

    def _close_disk(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def nbytes(self) -> int:
        """Bytes held by the faiss index, the stored vectors or refine codes (and codec), the
        row ids and liveness flags of every live row (not texts or metadata)."""
        import faiss

        with self._lock:
            n = self._nrows
            idx = self._index.nbytes() if self._index is not None else 0
            codec = int(faiss.serialize_index(self._codec).nbytes) if self._codec else 0
            return (idx + codec + int(self._vecs[:n].nbytes) + int(self._row_ids[:n].nbytes)
                    + int(self._alive[:n].nbytes))

    # -- mutation ----------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], texts: Sequence[str], vectors: Any,
               metadatas: Optional[Sequence[Optional[Mapping[str, Any]]]] = None) -> list[str]:
        """Insert or replace records; returns the ids. Vectors are L2-normalized on the way in."""
        ids = _check_ids(ids)
        texts = list(texts)
        n = len(ids)
        metadatas = [None] * n if metadatas is None else list(metadatas)
        if not (len(texts) == n == len(metadatas)):
            raise ValueError(f"got {n} ids, {len(texts)} texts and {len(metadatas)} metadatas; "
                             "they must have the same length")
        if n == 0:
            return []
        if len(set(ids)) != n:
            dup = sorted({x for x in ids if ids.count(x) > 1})[:5]
            raise ValueError(f"duplicate ids in one batch: {dup}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        for i, m in enumerate(metadatas):
            if m is not None and not isinstance(m, Mapping):
                raise TypeError(f"metadata {i} is {type(m).__name__}, expected a dict or None")
        with self._lock:
            v = normalize_rows(vectors, self.dim)
            if len(v) != n:
                raise ValueError(f"got {len(v)} vectors for {n} ids")
            if self.dim is None:
                self.dim = int(v.shape[1])
                self._vecs = np.zeros((0, self.dim), dtype=self.vector_dtype)
            iids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            lists = self._index.assign(v) if self._in_index else None  # assigned once
            self._append_rows(v, iids, lists)  # first: a disk error leaves the store as it was
            self._next_id += n
            self._remove_int_ids([self._id_map[x] for x in ids if x in self._id_map])
            for x, t, m, iid in zip(ids, texts, metadatas, iids.tolist()):
                self._id_map[x] = iid
                self._records[iid] = Record(x, t, dict(m or {}))
            self._ensure_index().add_with_ids(v, iids, lists)
            self._maybe_retrain()
        return ids

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = _check_ids(ids)
        with self._lock:
            iids = [self._id_map[x] for x in set(ids) if x in self._id_map]
            self._remove_int_ids(iids)
            return len(iids)

    def clear(self) -> None:
        with self._lock:
            self._id_map.clear()
            self._records.clear()
            self._vecs = np.zeros((0, self.dim or 0), dtype=self.vector_dtype)
            self._row_ids = np.zeros(0, dtype=np.int64)
            self._alive = np.zeros(0, dtype=bool)
            self._nrows = 0
            self._index = None
            self._trained_n = 0
            self._codec = None
            self._codec_spec = None
            self._in_index = False
            self._close_disk()

    def _remove_int_ids(self, iids: list[int]) -> None:
        if not iids:
            return
        arr = np.asarray(sorted(iids), dtype=np.int64)
        rows = np.searchsorted(self._row_ids[:self._nrows], arr)
        self._alive[rows] = False
        for iid in iids:
            rec = self._records.pop(iid)
            del self._id_map[rec.id]
        if self._index is not None:
            self._index.remove_ids(arr)

    def _append_rows(self, v: np.ndarray, iids: np.ndarray,
                     lists: Optional[np.ndarray] = None) -> None:
        if self._disk is not None:  # the only step that can fail: before any state changes
            self._disk.append(v)
        need = self._nrows + len(v)
        if need > len(self._vecs):
            cap = max(need, 2 * len(self._vecs), 64)
            self._vecs = _grow(self._vecs, cap)
            self._row_ids = _grow(self._row_ids, cap)
            self._alive = _grow(self._alive, cap)
        if self._in_index:
            self._vecs[self._nrows:need] = lists
        else:
            self._vecs[self._nrows:need] = self._codec.sa_encode(v) if self._codec else v
        self._row_ids[self._nrows:need] = iids
        self._alive[self._nrows:need] = True
        self._nrows = need

    def _compact(self, disk: Optional[DiskVectors] = None) -> None:
        """Drop dead rows. A store with disk vectors compacts only in a save, which passes the
        live rows it wrote as ``disk``."""
        live = self._alive[:self._nrows]
        if self._disk is not None:
            if disk is None:
                raise RuntimeError("a store with disk vectors compacts only when saved")
            old, self._disk = self._disk, disk
            old.close()
        if live.all():
            return
        self._vecs = np.ascontiguousarray(self._vecs[:self._nrows][live])
        self._row_ids = np.ascontiguousarray(self._row_ids[:self._nrows][live])
        self._nrows = len(self._row_ids)
        self._alive = np.ones(self._nrows, dtype=bool)

    def _ensure_index(self) -> FaissIndex:
        if self._index is None:
            import faiss

            self._index = FaissIndex(faiss.index_factory(self.dim, EXACT_SPEC, faiss.METRIC_L2),
                                     EXACT_SPEC, self.index_config.nprobe)
        return self._index

    def _maybe_retrain(self) -> None:
        """Train at ``exact_threshold`` records, retrain after growing ``retrain_growth``-fold."""
        n = len(self._records)
        if self._in_index:  # trained once (module docstring); say when lists grow too long
            if not self._growth_warned and n >= refine.IN_INDEX_GROWTH * self._trained_n:
                log.warning("docstore: %d records, %dx the %d its in-index codes were trained "
                            "on; searches slow down as IVF lists grow: rebuild the store from "
                            "raw vectors to retrain", n, n // self._trained_n, self._trained_n)
                self._growth_warned = True
            return
        if n >= self.index_config.exact_threshold and n >= self.retrain_growth * self._trained_n:
            self._rebuild(self.index_config)

    def _rebuild(self, cfg: IndexConfig) -> None:
        self._compact()
        n = self._nrows
        t0 = time.perf_counter()
        if self._codec is None:
            vecs = self._vecs[:n].astype(np.float32)
            if (self.refine_codes is not None and n >= MIN_CODEC_TRAIN
                    and _has_codes(choose_spec(n, self.dim, cfg))):
                if self.refine_codes == "index":
                    return self._to_index_codes(vecs, cfg, t0)
                self._to_codes(vecs, cfg)
        else:  # no raw vectors left: train and fill the index from the decoded refine codes
            vecs = self._decode(self._vecs[:n])
        index = FaissIndex.build(vecs, self._row_ids[:n], cfg)
        del vecs
        log.info("docstore: trained %s on %d vectors in %.2fs", index.spec, n,
                 time.perf_counter() - t0)
        self._index = index
        self._trained_n = n

    def _to_codes(self, vecs: np.ndarray, cfg: IndexConfig) -> None:
        """Train the refine codec on ``vecs`` (the raw rows), encode them, drop the raw rows."""
        spec = (auto_refine_spec(self.dim, len(vecs)) if self.refine_codes == "auto"
                else self.refine_codes)
        t0 = time.perf_counter()
        try:
            codec, codes = refine.train_codec(vecs, spec, cfg.seed)
        except RuntimeError as e:
            log.warning("docstore: cannot train refine codec %s on %d vectors (%s); keeping "
                        "raw vectors", spec, len(vecs), str(e).splitlines()[0] if str(e) else e)
            return
        self._codec, self._codec_spec, self._vecs = codec, spec, codes
        log.info("docstore: %d raw vectors replaced by %s refine codes (%d B each) in %.2fs",
                 len(vecs), spec, codes.shape[1], time.perf_counter() - t0)

    def _to_index_codes(self, vecs: np.ndarray, cfg: IndexConfig, t0: float) -> None:
        """Build the final index (nlist with growth headroom) and drop the raw rows."""
        n = len(vecs)
        cfg = cfg.model_copy(update={"nlist": cfg.nlist or in_index_nlist(n)})
        index = FaissIndex.build(vecs, self._row_ids[:n], cfg)
        if not index.nlist or not _has_codes(index.spec):  # training fell back: keep raw rows
            self._index, self._trained_n = index, n
            return
        lists = index.assign(vecs)
        disk = None
        if self.disk_vectors:  # written before any state changes: a disk error keeps raw rows
            disk = DiskVectors(self.dim, self.disk_dir)
            disk.append(vecs)
        self._vecs = lists.astype(np.uint16 if index.nlist <= 1 << 16 else np.int32)
        self._index, self._trained_n, self._in_index, self._disk = index, n, True, disk
        log.info("docstore: %d raw vectors replaced by in-index %s codes in %.2fs "
                 "(trained once)", n, index.spec, time.perf_counter() - t0)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """Unit float32 vectors reconstructed from refine codes."""
        return refine.decode(self._codec, codes, self.dim)

    def get(self, ids: Sequence[str]) -> list[Record]:
        """Records for ``ids`` in the same order; missing ids are skipped."""
        ids = _check_ids(ids)
        with self._lock:
            out = []
            for x in ids:
                iid = self._id_map.get(x)
                if iid is not None:
                    r = self._records[iid]
                    out.append(Record(r.id, r.text, dict(r.metadata)))
            return out

    def where(self, flt: Filter) -> list[Record]:
        """All records whose metadata match ``flt`` (insertion order)."""
        pred = compile_filter(flt)
        with self._lock:
            return [Record(r.id, r.text, dict(r.metadata)) for r in self._records.values()
                    if pred is None or pred(r.metadata)]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored (unit, float32) vectors for ``ids``; KeyError names an unknown id. For a
        compressed (large) store these are reconstructed from the refine codes."""
        ids = _check_ids(ids)
        with self._lock:
            missing = [x for x in ids if x not in self._id_map]
            if missing:
                raise KeyError(f"unknown ids: {missing[:5]}")
            return self._rows_of(np.array([self._id_map[x] for x in ids], dtype=np.int64))

    def _rows_of(self, iids: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self._row_ids[:self._nrows], iids)
        if self._disk is not None:
            return unit_rows(self._disk.get(rows))
        if self._in_index:
            return unit_rows(self._index.reconstruct_from_lists(iids, self._vecs[rows]))
        if self._codec is not None:
            return self._decode(self._vecs[rows])
        return self._vecs[rows].astype(np.float32)

    def search(self, query: Any, k: int = 4, filter: Filter | None = None,
               with_vectors: bool = False, nprobe: Optional[int] = None,
               ids: Optional[Sequence[str]] = None) -> list[Hit]:
        """The ``k`` nearest records matching ``filter`` (and among ``ids`` when given), best
        first; fewer when fewer exist."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} must be an int >= 1")
        pred = compile_filter(filter)
        only = None if ids is None else _check_ids(ids)
        q = normalize_rows(query, self.dim, "query vector")
        if len(q) != 1:
            raise ValueError(f"search takes one query vector, got {len(q)}")
        with self._lock:
            if not self._records:
                return []
            allowed = self._allowed(pred, only)
            if allowed is not None and len(allowed) == 0:
                return []
            n_cand = len(allowed) if allowed is not None else len(self._records)
            refine = (self.refine_factor > 1 if self._in_index else
                      self._index.spec != EXACT_SPEC and _has_codes(self._index.spec))
            kk = min(n_cand, k * self.refine_factor if refine else k)
            need_vecs = refine or with_vectors
            if (self._in_index and need_vecs and allowed is None
                    and self._disk is None):  # decoded by faiss from (list, offset)
                D, I, R = self._index.search_and_reconstruct(q, kk, nprobe)
                D, I, R = D[0], I[0], unit_rows(R[0][I[0] >= 0])
            else:
                D, I = self._faiss_search(q, kk, allowed, nprobe)
                R = None
            keep = I >= 0
            iids, dists = I[keep], np.clip(D[keep], 0.0, 4.0)
            vecs = (R if R is not None else self._rows_of(iids)) if need_vecs and len(iids) \
                else None
            if refine and len(iids):
                dists = np.clip(2.0 - 2.0 * (vecs @ q[0]), 0.0, 4.0)
                order = np.argsort(dists, kind="stable")[:k]
                iids, dists, vecs = iids[order], dists[order], vecs[order]
            recs = [self._records[int(i)] for i in iids]
            hits = [Hit(r.id, r.text, dict(r.metadata), float(d), float(relevance(d)),
                        vecs[j] if with_vectors else None)
                    for j, (r, d) in enumerate(zip(recs, dists))]
        return hits

    def _allowed(self, pred, only: Optional[list[str]]) -> Optional[np.ndarray]:
        """Sorted int ids passing the filter and the id restriction (None: everything)."""
        if pred is None and only is None:
            return None
        if only is not None:
            cand = ((iid, self._records[iid]) for iid in
                    {self._id_map[x] for x in only if x in self._id_map})
        else:
            cand = iter(self._records.items())
        return np.sort(np.fromiter((iid for iid, r in cand if pred is None or pred(r.metadata)),
                                   dtype=np.int64))

    def _faiss_search(self, q: np.ndarray, kk: int, allowed: Optional[np.ndarray],
                      nprobe: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        selector = faiss.IDSelectorBatch(allowed) if allowed is not None else None
        D, I = self._index.search(q, kk, nprobe=nprobe, selector=selector)
        nlist = self._index.nlist
        if nlist and (I[0] >= 0).sum() < kk and nprobe is None:
            # a selective filter left the probed lists short: probe every list (still in faiss)
            D, I = self._index.search(q, kk, nprobe=nlist, selector=selector)
        return D[0], I[0]

    def max_marginal_relevance(self, query: Any, k: int = 4, fetch_k: int = 20,
                               lambda_mult: float = 0.5, filter: Filter | None = None,
                               ids: Optional[Sequence[str]] = None) -> list[Hit]:
        """MMR over the ``fetch_k`` nearest matching records (``lambda_mult=1``: plain search)."""
        if not 0.0 <= lambda_mult <= 1.0:
            raise ValueError(f"lambda_mult={lambda_mult} must be in [0, 1]")
        hits = self.search(query, max(k, fetch_k), filter=filter, with_vectors=True, ids=ids)
        if not hits:
            return []
        q = normalize_rows(query, self.dim, "query vector")[0]
        order = mmr_select(q, np.stack([h.vector for h in hits]), k, lambda_mult)
        return [hits[i] for i in order]

    def search_energy(self, query: Any, k: int = 4, fetch_k: int = 20,
                      filter: Filter | None = None, model: Optional[EnergyModel] = None,
                      tau: float = 0.5, freq_key: str = "freq",
                      ids: Optional[Sequence[str]] = None) -> list[Hit]:
        """Nearest ``fetch_k`` candidates reranked by energy; the best ``k`` with energy/weight."""
        hits = self.search(query, max(k, fetch_k), filter=filter, with_vectors=True, ids=ids)
        q = normalize_rows(query, self.dim, "query vector")[0]
        return energy_rerank(q, hits, model, tau, freq_key)[:k]

    # -- persistence -------------------------------------------------------------------

    # -- persistence (retgen_engine.docstore_io) ---------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the store to directory ``path`` (temp dir, then rename; replaces a store)."""
        return save_store(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True,
             disk_dir: Optional[str | os.PathLike] = None) -> "DocumentStore":
        """Read a store written by :meth:`save`; checksums are verified unless ``verify=False``.
        Disk vectors stay in the saved ``disk_vectors.npy`` (memory-mapped read-only); rows
        added later go to a temporary file in ``disk_dir``."""
        return load_store(cls, path, verify, disk_dir)


def _has_codes(spec: str) -> bool:
    return any(t in spec for t in ("PQ", "SQ", "LSH", "RQ"))


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
    out[:len(a)] = a
    return out


__all__ = ["DocumentStore", "Record", "Hit", "relevance", "mmr_select", "energy_scores",
           "energy_rerank", "freq_prior", "normalize_rows", "read_manifest", "large_store_config",
           "large_store_kwargs", "auto_refine_spec", "LARGE_REFINE_FACTOR", "MIN_CODEC_TRAIN",
           "FORMAT", "FORMAT_VERSION", "CODES_FORMAT_VERSION", "IN_INDEX_FORMAT_VERSION",
           "DISK_FORMAT_VERSION"]
