"""A document vector store: texts + metadata + vectors behind stable string ids.

Shared by the LangChain and LlamaIndex adapters (no framework imports here). This module holds
the ids, the records, the lock and search; the vector rows (one per record, in one of four
storage modes) are in :mod:`.rows`, index training and the switch to codes in :mod:`.training`,
ranking helpers in :mod:`.ranking`, refine codes and the large-store profiles in
:mod:`.codes`, metadata filters in :mod:`.filters`, persistence in :mod:`.persist`.

Ids. Callers name records with strings; internally every record gets an int64 id from a
counter that only grows (never reused, also across upserts and saves), with a
``str -> int`` map. Re-adding an existing string id replaces the record (upsert).

Index. Exact (``IDMap2,Flat``) until ``IndexConfig.exact_threshold`` records, then an IVF
index chosen by :func:`retgen_engine.search.index.choose_spec` (IVF-Flat, IVF-PQ above
``pq_threshold``), trained automatically from the stored vectors and retrained when the store
has grown by ``retrain_growth`` since the last training. Retraining keeps every int id.
With compressed codes (PQ/SQ) the index proposes ``refine_factor * k`` candidates that are
re-scored from a second, finer representation of each record: the raw vectors of a small
store, or (once there are ``MIN_CODEC_TRAIN`` records and the index uses codes) the refine
codes of :mod:`retgen_engine.docstore.codes`, after which no raw vector is kept. Search
distances, :meth:`DocumentStore.vectors`, ``with_vectors``, MMR and energy reranking then use
the reconstructed vectors. ``refine_codes=None`` keeps raw vectors at every size.

``refine_codes="index"`` keeps one representation only: once the index uses codes (and there
are ``MIN_CODEC_TRAIN`` records) it is built with ``nlist`` sized for 16-fold growth and
trained once (:mod:`.training`), the raw vectors are dropped and the index's own codes (8-bit
residual PQ scored by ADC) rank the candidates; with ``refine_factor > 1`` the best
``refine_factor * k`` are re-scored from their decoded, renormalized codes, or with
``disk_vectors=True`` from float16 copies of the vectors on disk (``disk_dir``; the storage
modes are described in :mod:`.rows`).

Scores. One convention everywhere (:func:`~retgen_engine.docstore.ranking.relevance`): the
distance ``d`` is squared L2 between unit vectors, in [0, 4]; the relevance is ``1 - d / 4``
in [0, 1], higher is better.

Filters (:mod:`retgen_engine.docstore.filters`) are evaluated on metadata to get the allowed
int ids, which go into the faiss search as an ``IDSelectorBatch`` passed per call, so a
filtered search returns the best *matching* records rather than filtering a fixed top-k.

Threads. Mutations and the faiss search run under one re-entrant lock; a search copies what
it returns (a snapshot) so MMR, energy reranking and callers never see later mutations.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import codes as refine
from ..config import IndexConfig
from ..search.index import FaissIndex
from .codes import (LARGE_REFINE_FACTOR, MIN_CODEC_TRAIN, auto_refine_spec, large_store_config,
                    large_store_kwargs)
from .filters import Filter, compile_filter
from .formats import (CODES_FORMAT_VERSION, DISK_FORMAT_VERSION, FORMAT, FORMAT_VERSION,
                      IN_INDEX_FORMAT_VERSION)
from .backends import StoreDispatch, load_if_milvus
from .persist import StoreState, load_state, read_manifest, save_store, write_state
from .ranking import (RerankedSearch, batch_rows, energy_rerank, energy_scores, freq_prior,
                      mmr_select, normalize_rows, relevance, unit_rows)
from .records import (VECTOR_DTYPES, Hit, Record, check_batch, check_ids,  # noqa: F401
                      check_settings)
from .rows import STORAGE_MODES, RawRows, VectorRows  # noqa: F401
from .training import EXACT_SPEC, exact_index, has_codes, train

log = logging.getLogger(__name__)


class DocumentStore(RerankedSearch, metaclass=StoreDispatch):  # backend="milvus": .milvus.MilvusStore
    """Texts, metadata and vectors with upsert/delete, filtered search, MMR and persistence."""

    def __init__(self, dim: Optional[int] = None, index_config: Optional[IndexConfig] = None,
                 vector_dtype: str = "float32", refine_factor: int = 4,
                 retrain_growth: float = 2.0, refine_codes: Optional[str] = "auto",
                 disk_vectors: bool = False, disk_dir: Optional[str | os.PathLike] = None):
        check_settings(dim, vector_dtype, refine_factor, retrain_growth, refine_codes,
                       disk_vectors, disk_dir)
        self.dim = dim
        self.disk_vectors = disk_vectors
        self.disk_dir = None if disk_dir is None else str(disk_dir)
        self.index_config = index_config or IndexConfig()
        self.vector_dtype = vector_dtype
        self.refine_factor = refine_factor
        self.retrain_growth = retrain_growth
        self.refine_codes = refine_codes
        self._growth_warned = False
        self.extra: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._next_id = 0
        self._id_map: dict[str, int] = {}
        self._records: dict[int, Record] = {}
        self._rows: VectorRows = RawRows(dim or 0, vector_dtype)
        self._index: Optional[FaissIndex] = None
        self._trained_n = 0
        self._revision = 0

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
    def revision(self) -> int:
        """A counter that changes with every upsert, delete or clear (readers that derive state
        from the records, such as the document memory, compare it)."""
        return self._revision

    def items(self) -> list[tuple[int, Record]]:
        """(int id, record) of every record, in insertion order (a snapshot)."""
        with self._lock:
            return [(iid, Record(r.id, r.text, dict(r.metadata))) for iid, r in self._records.items()]

    @property
    def storage_mode(self) -> str:
        """What a record's row holds (one of :data:`STORAGE_MODES`, :mod:`.rows`): ``"raw"``
        vectors, refine ``"codes"``, ``"in-index"`` codes only, or those plus float16
        vectors on ``"disk"``."""
        return self._rows.mode

    @property
    def compressed(self) -> bool:
        """True once raw vectors were replaced by refine codes or in-index codes."""
        return self._rows.mode != "raw"

    @property
    def refine_spec(self) -> Optional[str]:
        return self._rows.refine_spec

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: ``mode`` (:attr:`storage_mode`), ``records``, ``rows`` (held,
        deleted ones included until compacted on retraining or saving), ``live_rows``,
        ``row_dtype`` and ``row_bytes`` (what one row holds in RAM: a vector, a refine code or
        an IVF list number), ``index_spec``, ``index_ntotal``, ``trained_n`` (records the
        index was last trained on), ``ip_scan``, ``refine_spec``, ``table_bytes`` (faiss'
        precomputed IVF-PQ tables of the index and the codec), ``nbytes`` (:meth:`nbytes`),
        ``disk_bytes``, ``disk_rows`` and ``disk_appended_rows`` (disk rows added since the
        store was last saved or loaded, held in a temporary file)."""
        from ..search.index import table_bytes

        with self._lock:
            ix = self._index
            return {"mode": self._rows.mode, "records": len(self._records), **self._rows.stats(),
                    "index_spec": self.spec, "index_ntotal": ix.ntotal if ix else 0,
                    "trained_n": self._trained_n, "ip_scan": bool(ix and ix.ip_scan),
                    "refine_spec": self.refine_spec,
                    "table_bytes": (table_bytes(ix.index) if ix else 0) + self._rows.table_bytes(),
                    "nbytes": self.nbytes(), "disk_bytes": self._rows.disk_bytes()}

    def disk_bytes(self) -> int:
        """Bytes of the float16 vectors kept on disk (``disk_vectors=True``; else 0)."""
        with self._lock:
            return self._rows.disk_bytes()

    def evict_disk_cache(self) -> None:
        """Ask the OS to drop the disk vectors from its page cache (no-op without them), so the
        next searches read them from disk: for cold-read measurements."""
        with self._lock:
            self._rows.evict_cache()

    def nbytes(self) -> int:
        """Bytes held by the faiss index, the stored vectors, refine codes (and codec) or list
        numbers, the row ids and liveness flags (not texts or metadata); deleted rows count
        until a retraining or a save compacts them."""
        with self._lock:
            idx = self._index.nbytes() if self._index is not None else 0
            return idx + self._rows.nbytes()

    # -- mutation ----------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], texts: Sequence[str], vectors: Any,
               metadatas: Optional[Sequence[Optional[Mapping[str, Any]]]] = None) -> list[str]:
        """Insert or replace records; returns the ids. Vectors are L2-normalized on the way in."""
        ids, texts, metadatas = check_batch(ids, texts, metadatas)
        n = len(ids)
        if n == 0:
            return []
        with self._lock:
            v = batch_rows(vectors, self.dim, n)
            if self.dim is None:
                self.dim = int(v.shape[1])
                self._rows = RawRows(self.dim, self.vector_dtype)
            iids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            lists = self._rows.append(v, iids)  # first: a disk error leaves the store as it was
            self._next_id += n
            self._remove_int_ids([self._id_map[x] for x in ids if x in self._id_map])
            for x, t, m, iid in zip(ids, texts, metadatas, iids.tolist()):
                self._id_map[x] = iid
                self._records[iid] = Record(x, t, dict(m or {}))
            self._ensure_index().add_with_ids(v, iids, lists)
            self._maybe_retrain()
            self._revision += 1
        return ids

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = check_ids(ids)
        with self._lock:
            iids = [self._id_map[x] for x in set(ids) if x in self._id_map]
            self._remove_int_ids(iids)
            self._revision += bool(iids)
            return len(iids)

    def clear(self) -> None:
        with self._lock:
            self._id_map.clear()
            self._records.clear()
            self._rows.close()
            self._rows = RawRows(self.dim or 0, self.vector_dtype)
            self._index = None
            self._trained_n = 0
            self._revision += 1

    def _remove_int_ids(self, iids: list[int]) -> None:
        if not iids:
            return
        arr = np.asarray(sorted(iids), dtype=np.int64)
        self._rows.delete(arr)
        for iid in iids:
            rec = self._records.pop(iid)
            del self._id_map[rec.id]
        if self._index is not None:
            self._index.remove_ids(arr)

    def _ensure_index(self) -> FaissIndex:
        if self._index is None:
            self._index = exact_index(self.dim, self.index_config.nprobe)
        return self._index

    def _maybe_retrain(self) -> None:
        """Train at ``exact_threshold`` records, retrain after growing ``retrain_growth``-fold."""
        n = len(self._records)
        if self._rows.in_index:  # trained once (module docstring); say when lists grow too long
            if not self._growth_warned and n >= refine.IN_INDEX_GROWTH * self._trained_n:
                log.warning("docstore: %d records, %dx the %d its in-index codes were trained "
                            "on; searches slow down as IVF lists grow: rebuild the store from "
                            "raw vectors to retrain", n, n // self._trained_n, self._trained_n)
                self._growth_warned = True
            return
        if n >= self.index_config.exact_threshold and n >= self.retrain_growth * self._trained_n:
            self._index, self._rows = train(self._rows, self.index_config, self.refine_codes,
                                            self.disk_vectors, self.disk_dir)
            self._trained_n = len(self._rows)

    # -- reads -------------------------------------------------------------------------
    def get(self, ids: Sequence[str]) -> list[Record]:
        """Records for ``ids`` in the same order; missing ids are skipped."""
        ids = check_ids(ids)
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
        compressed (large) store these are reconstructed from the codes (or read from disk)."""
        ids = check_ids(ids)
        with self._lock:
            missing = [x for x in ids if x not in self._id_map]
            if missing:
                raise KeyError(f"unknown ids: {missing[:5]}")
            return self._rows.get(np.array([self._id_map[x] for x in ids], dtype=np.int64))

    def search(self, query: Any, k: int = 4, filter: Filter | None = None,
               with_vectors: bool = False, nprobe: Optional[int] = None,
               ids: Optional[Sequence[str]] = None) -> list[Hit]:
        """The ``k`` nearest records matching ``filter`` (and among ``ids`` when given), best
        first; fewer when fewer exist."""
        with self._lock:
            iids, dists, vecs = self._search(query, k, filter, ids, nprobe, with_vectors)
            recs = [self._records[i] for i in iids.tolist()]
        rel = relevance(dists).tolist()  # once for all hits (per hit it cost more than a search)
        return [Hit(r.id, r.text, dict(r.metadata), d, rel[j], vecs[j] if with_vectors else None)
                for j, (r, d) in enumerate(zip(recs, dists.tolist()))]

    def search_ids(self, query: Any, k: int = 4, filter: Filter | None = None,
                   nprobe: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` as (int ids [n <= k], relevance [n]), best first, without hits."""
        with self._lock:
            iids, dists, _ = self._search(query, k, filter, None, nprobe, False)
        return iids, relevance(dists)

    def _search(self, query, k, filter, ids, nprobe, with_vectors):
        """(int ids, squared L2 distances, unit vectors or None) of the nearest records."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r} must be an int >= 1")
        pred = compile_filter(filter)
        only = None if ids is None else check_ids(ids)
        q = normalize_rows(query, self.dim, "query vector")
        if len(q) != 1:
            raise ValueError(f"search takes one query vector, got {len(q)}")
        allowed = self._allowed(pred, only) if self._records else np.zeros(0, np.int64)
        if allowed is not None and len(allowed) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), None
        rows = self._rows
        n_cand = len(allowed) if allowed is not None else len(self._records)
        rescore = (self.refine_factor > 1 if rows.in_index else
                   self._index.spec != EXACT_SPEC and has_codes(self._index.spec))
        kk = min(n_cand, k * self.refine_factor if rescore else k)
        need_vecs = rescore or with_vectors
        if rows.decoded_by_index and need_vecs and allowed is None:
            D, I, R = self._index.search_and_reconstruct(q, kk, nprobe)  # (list, offset)
            D, I, R = D[0], I[0], unit_rows(R[0][I[0] >= 0])
        else:
            D, I = self._faiss_search(q, kk, allowed, nprobe)
            R = None
        keep = I >= 0
        iids, dists = I[keep], np.clip(D[keep], 0.0, 4.0)
        vecs = (R if R is not None else rows.get(iids)) if need_vecs and len(iids) else None
        if rescore and len(iids):
            dists = np.clip(2.0 - 2.0 * (vecs @ q[0]), 0.0, 4.0)
            order = np.argsort(dists, kind="stable")[:k]
            iids, dists, vecs = iids[order], dists[order], vecs[order]
        return iids.astype(np.int64), dists, (vecs if with_vectors else None)

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


    # -- persistence (retgen_engine.docstore.persist) ----------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the store to directory ``path`` (temp dir, then rename; replaces a store)."""
        return save_store(path, self._write_into)

    def _write_into(self, d: Path) -> dict:
        with self._lock:  # the rows compact (and disk rows switch onto the saved file) here
            settings = {"dim": self.dim, "index_config": self.index_config,
                        "vector_dtype": self.vector_dtype, "refine_factor": self.refine_factor,
                        "retrain_growth": self.retrain_growth, "refine_codes": self.refine_codes,
                        "disk_vectors": self.disk_vectors}
            return write_state(d, StoreState(settings, self._next_id, self._records, self._rows,
                                             self._index, self._trained_n, self.extra))

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True,
             disk_dir: Optional[str | os.PathLike] = None) -> "DocumentStore":
        """Read a store written by :meth:`save`; checksums are verified unless ``verify=False``.
        Disk vectors stay in the saved ``disk_vectors.npy`` (memory-mapped read-only); rows
        added later go to a temporary file in ``disk_dir``."""
        if (milvus := load_if_milvus(path, verify)) is not None:  # a Milvus store reconnects
            return milvus
        st = load_state(path, verify, disk_dir)
        s = cls(**st.settings)
        s.extra = st.extra
        s._next_id, s._rows, s._index, s._trained_n = st.next_id, st.rows, st.index, st.trained_n
        s._records = st.records  # a fresh dict from the SQLite file
        s._id_map = {r.id: iid for iid, r in s._records.items()}
        return s


__all__ = ["DocumentStore", "Record", "Hit", "relevance", "mmr_select", "energy_scores",
           "energy_rerank", "freq_prior", "normalize_rows", "read_manifest", "large_store_config",
           "large_store_kwargs", "auto_refine_spec", "LARGE_REFINE_FACTOR", "MIN_CODEC_TRAIN",
           "FORMAT", "FORMAT_VERSION", "CODES_FORMAT_VERSION", "IN_INDEX_FORMAT_VERSION",
           "DISK_FORMAT_VERSION"]
