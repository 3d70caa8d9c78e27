"""A thin vector-index layer over faiss, behind a small backend interface.

The spec is chosen by corpus size (exact, IVF-Flat, IVF-PQ with about 4*sqrt(N) lists),
ids are explicit int64 (``add_with_ids``), search parameters are passed per call (never set
on the shared index) and results are ``(D, I)`` arrays with ``-1`` for "none". Distances are
squared L2 between unit vectors (d = 2 - 2 cos).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional

import numpy as np

from .index_train import train_index
from ..config import IndexConfig
from .ipscan import IPScan

log = logging.getLogger(__name__)

# Up to this many queries a search runs on one OpenMP thread: on shared cores a second thread
# waits for a core on every small search (benchmarks/generation_speed.py measures the effect on
# generation against every thread). Larger batches use every thread faiss has.
SMALL_BATCH = 16


@contextlib.contextmanager
def search_threads(n_queries: int):
    """Run the faiss calls inside on one OpenMP thread when ``n_queries`` is small. The
    setting is the calling thread's own (OpenMP keeps it per thread), so concurrent searches
    in other threads are not affected."""
    import faiss

    prev = faiss.omp_get_max_threads()
    if n_queries > SMALL_BATCH or prev <= 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


class VectorIndex(ABC):
    """What the pattern search needs from a vector index: int64 ids, (D, I) results with -1
    for none, per-call nprobe. :class:`FaissIndex` implements it."""

    spec: str
    dim: int

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, nprobe: Optional[int] = None,
               selector=None) -> tuple[np.ndarray, np.ndarray]:
        """(D float32 [n, k], I int64 [n, k]); -1 ids where fewer than k results."""

    @abstractmethod
    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None: ...

    @abstractmethod
    def remove_ids(self, ids: np.ndarray) -> int: ...

    @property
    @abstractmethod
    def ntotal(self) -> int: ...

    @abstractmethod
    def save(self, path: str | os.PathLike) -> None: ...

    @abstractmethod
    def nbytes(self) -> int: ...


def choose_spec(n: int, dim: int, cfg: IndexConfig) -> str:
    """The faiss index_factory string for ``n`` vectors, with fall-backs for small data."""
    if cfg.spec != "auto":
        return cfg.spec
    if n < cfg.exact_threshold:
        return "IDMap2,Flat"
    nlist = cfg.nlist or max(1, int(round(4 * math.sqrt(n))))
    nlist = min(nlist, max(1, n // 39))  # faiss wants >= 39 training points per list
    if n < cfg.pq_threshold:
        return f"IVF{nlist},Flat"
    m, nbits = cfg.pq_nsplits, (4 if cfg.fast_scan else cfg.pq_nbits)
    if dim % m != 0:
        raise ValueError(f"index.pq_nsplits={m} must divide the embedding dimension {dim}")
    if n < 39 * (1 << nbits):
        log.warning("only %d vectors: too few to train %d-bit PQ codes; using IVF-Flat", n, nbits)
        return f"IVF{nlist},Flat"
    if cfg.fast_scan:
        return f"IVF{nlist},PQ{m}x4fs"
    return f"IVF{nlist},PQ{m}x{nbits}np" if nbits == 8 else f"IVF{nlist},PQ{m}x{nbits}"


def _pq_table_owner(index):
    """The IVF-PQ part of ``index`` that may hold a precomputed distance table, or None."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    ivf = faiss.downcast_index(ivf) if ivf is not None else None
    return ivf if ivf is not None and hasattr(ivf, "precomputed_table") else None


def drop_precomputed_table(index) -> None:
    """Free (and stop using) faiss' precomputed IVF-PQ distance table: the same results, a
    slower search, nlist * M * 2^nbits fewer floats in RAM."""
    ivf = _pq_table_owner(index)
    if ivf is not None:
        if hasattr(ivf, "use_precomputed_table"):
            ivf.use_precomputed_table = -1
        ivf.precomputed_table.resize(0)


def table_bytes(index) -> int:
    """RAM held by faiss' precomputed IVF-PQ distance table (not part of the index file)."""
    ivf = _pq_table_owner(index)
    return int(ivf.precomputed_table.size()) * 4 if ivf is not None else 0


def _nlist_of(index) -> int:
    import faiss

    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return 0


class FaissIndex(VectorIndex):
    def __init__(self, index, spec: str, default_nprobe: int = 16,
                 mapped_from: Optional[Path] = None, ip_scan: bool = False):
        self.index = index
        # ip_scan: only for a plain 8-bit residual IVF-PQ over L2 (else ignored, logged)
        self._ip = IPScan(index) if ip_scan and IPScan.applies(index) else None
        if ip_scan and self._ip is None:
            log.info("ip_scan does not apply to %s; searching it by L2", spec)
        if self._ip is not None:  # every search goes through the view: the L2 table is unused
            drop_precomputed_table(index)
        # faiss cannot re-serialize an index whose lists are memory-mapped: keep its file.
        self.mapped_from = mapped_from
        self.spec = spec
        self.dim = index.d
        self.nlist = _nlist_of(index)
        self.default_nprobe = default_nprobe

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, cfg: IndexConfig,
              progress: bool = False) -> "FaissIndex":
        import faiss
        from tqdm.auto import tqdm

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n, dim = vectors.shape
        if n == 0:
            raise ValueError("cannot build an index over zero vectors")
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} vectors")
        spec = choose_spec(n, dim, cfg)
        index = faiss.index_factory(dim, spec, faiss.METRIC_L2)
        nl = _nlist_of(index)
        if nl and cfg.nprobe > nl:
            log.warning("index.nprobe=%d > nlist=%d for this size; searches use nprobe=%d",
                        cfg.nprobe, nl, nl)
        if not index.is_trained:
            rng = np.random.default_rng(cfg.seed)
            tn = min(n, cfg.train_size or n)
            sample = vectors[np.sort(rng.choice(n, tn, replace=False))] if tn < n else vectors
            log.info("training %s on %d vectors", spec, len(sample))
            try:
                train_index(index, sample, desc=f"training index {spec}", progress=progress)
            except RuntimeError as e:
                log.warning("cannot train %s on %d vectors (%s); falling back to an exact index",
                            spec, n, str(e).splitlines()[0] if str(e) else e)
                spec = "IDMap2,Flat"
                index = faiss.index_factory(dim, spec, faiss.METRIC_L2)
                nl = 0
        if not cfg.precomputed_table:
            drop_precomputed_table(index)
        step = min(1 << 16, max(1024, -(-n // 100)))  # about 100 updates
        with tqdm(total=n, desc="adding to the index", unit="vec", disable=not progress) as bar:
            for s in range(0, n, step):
                index.add_with_ids(vectors[s:s + step], ids[s:s + step])
                bar.update(min(step, n - s))
        return cls(index, spec, min(cfg.nprobe, nl) if nl else cfg.nprobe, ip_scan=cfg.ip_scan)

    @classmethod
    def load(cls, path: str | os.PathLike, spec: str, default_nprobe: int = 16,
             mmap: bool = True, precomputed_table: bool = True,
             ip_scan: bool = False) -> "FaissIndex":
        import faiss

        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        mapped = Path(path) if mmap else None
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            mapped = None
            try:  # not every index type supports mmap
                index = faiss.read_index(str(path))
            except RuntimeError as e:
                raise ValueError(f"index file {str(path)!r} is corrupt or not a faiss index: "
                                 f"{str(e).splitlines()[0] if str(e) else e}") from None
        if mapped is not None and _nlist_of(index):
            # mmapped lists are OnDiskInvertedLists, whose default prefetch starts 32 threads on
            # every search (4 ms instead of 0.04 ms per query here): turn it off.
            inv = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
            if hasattr(inv, "prefetch_nthread"):
                inv.prefetch_nthread = 0
        if not precomputed_table:  # faiss rebuilds the table on read
            drop_precomputed_table(index)
        return cls(index, spec, default_nprobe, mapped_from=mapped, ip_scan=ip_scan)

    def _params(self, nprobe: Optional[int], selector):
        import faiss

        if self.nlist:
            np_ = self.default_nprobe if nprobe is None else int(nprobe)
            if np_ < 1 or np_ > self.nlist:
                raise ValueError(f"nprobe={np_} is outside [1, nlist={self.nlist}]")
            return faiss.SearchParametersIVF(nprobe=np_, sel=selector) if selector is not None \
                else faiss.SearchParametersIVF(nprobe=np_)
        if selector is not None:
            return faiss.SearchParameters(sel=selector)
        return None

    def search(self, queries, k, nprobe=None, selector=None):
        if k <= 0:
            raise ValueError(f"k={k}: the number of neighbours must be >= 1")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} does not match the index ({self.dim})")
        params = self._params(nprobe, selector)
        with search_threads(len(q)):
            if self._ip is not None:
                return self._ip.search(q, k, params.nprobe, selector)
            if params is None:
                return self.index.search(q, k)
            return self.index.search(q, k, params=params)

    @property
    def ip_scan(self) -> bool:
        """True when IVF-PQ lists are scanned by inner product (``IndexConfig.ip_scan``)."""
        return self._ip is not None

    def search_and_reconstruct(self, query, k, nprobe=None):
        """``(D, I, R)`` for one query: :meth:`search` plus the hits' vectors decoded from the
        index's codes (faiss cannot combine this with an ID selector: no ``selector``)."""
        q = np.ascontiguousarray(np.atleast_2d(query), dtype=np.float32)
        if k <= 0 or q.shape != (1, self.dim):
            raise ValueError(f"k={k} must be >= 1 and the query one {self.dim}-d vector")
        params = self._params(nprobe, None)
        with search_threads(1):
            if self._ip is not None:
                return self._ip.search_and_reconstruct(q, k, params.nprobe)
            if params is None:
                return self.index.search_and_reconstruct(q, k)
            return self.index.search_and_reconstruct(q, k, params=params)

    def add_with_ids(self, vectors, ids, lists=None):
        """Add ``vectors`` under ``ids``; ``lists`` (from :meth:`assign`) skips faiss' own
        assignment to IVF lists when the caller already has it."""
        import faiss

        if self.mapped_from is not None:
            raise RuntimeError("this index is memory-mapped read-only; load it with mmap=False to add")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if lists is None:
            self.index.add_with_ids(x, ids)
            return
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        if not (len(x) == len(ids) == len(lists)):
            raise ValueError(f"{len(x)} vectors, {len(ids)} ids and {len(lists)} list numbers")
        faiss.extract_index_ivf(self.index).add_core(
            len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))

    def remove_ids(self, ids) -> int:
        import faiss

        if self.mapped_from is not None:
            raise RuntimeError("this index is memory-mapped read-only; load it with mmap=False to remove")
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64))))

    def assign(self, vectors) -> np.ndarray:
        """The IVF list each vector goes to (int64), as ``add_with_ids`` would place it."""
        import faiss

        if not self.nlist:
            raise ValueError(f"index {self.spec!r} has no inverted lists")
        q = faiss.extract_index_ivf(self.index).quantizer
        _, lists = q.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return lists[:, 0]

    def reconstruct_from_lists(self, ids, lists) -> np.ndarray:
        """Vectors decoded from the index's own codes for ``ids`` stored in IVF lists
        ``lists`` (one per id, from :meth:`assign`): float32 rows in the order of ``ids``.
        KeyError names an id that is not in its list."""
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        ids = np.asarray(ids, dtype=np.int64)
        lists = np.asarray(lists, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for lst in np.unique(lists):
            sel = np.flatnonzero(lists == lst)
            n = ivf.invlists.list_size(int(lst))
            held = (np.asarray(faiss.rev_swig_ptr(ivf.invlists.get_ids(int(lst)), n))
                    if n else np.zeros(0, dtype=np.int64))
            match = held[:, None] == ids[sel][None, :]
            if not match.any(axis=0).all():
                raise KeyError(f"ids {ids[sel][~match.any(axis=0)][:5].tolist()} are not in "
                               f"IVF list {int(lst)}")
            for j, off in zip(sel, match.argmax(axis=0)):
                ivf.reconstruct_from_offset(int(lst), int(off), faiss.swig_ptr(out[j]))
        return out

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def describe(self, file: str) -> dict:
        """The manifest entry of this index saved as ``file``."""
        return {"file": file, "spec": self.spec, "metric": "L2", "ntotal": self.ntotal,
                "dim": self.dim, "nlist": self.nlist}

    def save(self, path) -> None:
        import faiss

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if self.mapped_from is not None:
            shutil.copyfile(self.mapped_from, tmp)
        else:
            faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)

    def nbytes(self) -> int:
        """The index file's bytes plus faiss' precomputed IVF-PQ table, which lives in RAM,
        plus the inner-product view's codebook copy (``ip_scan``)."""
        import faiss

        ip = self._ip.nbytes() if self._ip is not None else 0
        if self.mapped_from is not None:
            return self.mapped_from.stat().st_size + table_bytes(self.index) + ip
        return int(faiss.serialize_index(self.index).nbytes) + table_bytes(self.index) + ip
