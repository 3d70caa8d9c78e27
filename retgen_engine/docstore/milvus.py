"""The document store on Milvus: ``DocumentStore(backend="milvus", uri=..., collection=...)``.

The same public methods as the faiss :class:`~retgen_engine.docstore.DocumentStore` that the
LangChain and LlamaIndex adapters call (``upsert delete clear get where vectors search
max_marginal_relevance search_energy save load stats ids __len__ extra``), so the adapters take
either store unchanged. ``uri`` is a local path ending in ``.db`` (Milvus Lite, embedded in
this process) or a server address (``http://host:19530``, with ``token`` where one is needed).

Data. Milvus owns it: one collection with our string ids as the primary key ``pk``, an
insertion counter ``seq`` (``where``/``ids`` keep insertion order, an upsert moves a record to
the end, as in the faiss store), ``text``, ``metadata`` (JSON), ``md_kinds`` (JSON: the kind of
each metadata value, which makes the filters exact: :mod:`.milvus_expr`) and ``vector``. The
collection is created at the first add (the dimension is taken from it) with consistency level
``Strong`` by default, so a search sees every earlier write, as with faiss.

Scores. Vectors are L2-normalized on the way in and searched by inner product; the distance
is ``d = 2 - 2 ip`` (squared L2 between unit vectors, in [0, 4]) and the relevance ``1 - d/4``,
the faiss store's convention. The index (FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ, HNSW) and its
parameters come from ``index_type``/``index_params`` or the ``IndexConfig``
(:mod:`.milvus_index`); what Milvus actually built is read back into :meth:`stats`.

Filters are Milvus expressions (:mod:`.milvus_expr`), evaluated in the engine. A callable
filter raises :class:`~.milvus_expr.CallableFilterError` unless the store was made with
``callable_filters="client"``: then the callable (or a dict filter Milvus cannot express
exactly, :class:`~.milvus_expr.NotExpressibleError`) runs here over every record's metadata
and the matching ids go to Milvus (a scan per call).

Persistence (:mod:`.milvus_persist`): :meth:`save` writes a checksummed manifest (and for
Milvus Lite the database directory), :meth:`load` reconnects. Threads: every call that talks
to Milvus runs under one re-entrant lock.

Readers that derive state from the records (the document memory): :mod:`.milvus_sync`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..checks import ArgumentError, float_arg, optional
from ..config import IndexConfig
from . import milvus_index as mi
from .filters import Filter, compile_filter
from .milvus_collection import MAX_VARCHAR, attach, connect, create, quiet_lite_iterator
from .milvus_sync import REVISION_CHECK_S, ChangeTracking
from .milvus_expr import KINDS, META, PK, NotExpressibleError, ids_expr, kinds_of, to_expr
from .ranking import RerankedSearch, batch_rows, normalize_rows
from .records import Hit, Record, check_batch, check_ids

log = logging.getLogger(__name__)

MAX_TOPK = 16384        # Milvus' largest search limit
BATCH = 1000            # rows or ids per request
CALLABLE_MODES = ("error", "client")


class MilvusStore(ChangeTracking, RerankedSearch):
    """Texts, metadata and vectors in a Milvus collection (module docstring)."""

    backend = "milvus"

    def __init__(self, uri: str = "./retgen_milvus.db", collection: str = "retgen_docs",
                 token: Optional[str] = None, dim: Optional[int] = None,
                 index_config: Optional[IndexConfig] = None, index_type: Optional[str] = None,
                 index_params: Optional[Mapping[str, Any]] = None,
                 consistency_level: str = "Strong", callable_filters: str = "error",
                 vector_dtype: str = "float32", db_name: str = "",
                 revision_check_s: Optional[float] = REVISION_CHECK_S) -> None:
        from pymilvus import MilvusClient

        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ArgumentError(f"dim={dim!r} must be a positive int (or None: set by the first "
                                "add)")
        if vector_dtype != "float32":
            raise ArgumentError(f"vector_dtype={vector_dtype!r}: the Milvus backend stores "
                                "float32")
        if callable_filters not in CALLABLE_MODES:
            raise ArgumentError(f"callable_filters={callable_filters!r}; allowed: "
                                f"{', '.join(CALLABLE_MODES)}")
        if not isinstance(collection, str) or not collection:
            raise ArgumentError(f"collection={collection!r} must be a non-empty name")
        self.revision_check_s = optional(float_arg, "revision_check_s", revision_check_s, lo=0.0)
        self.uri, self.collection, self.db_name = str(uri), collection, db_name
        self.index_config = index_config or IndexConfig()
        self.index_type, self.index_params = mi.requested_index(index_type, self.index_config,
                                                                index_params)
        self._explicit_index = index_type is not None or index_config is not None
        self.consistency_level = consistency_level
        self.callable_filters = callable_filters
        self.vector_dtype = vector_dtype
        self.dim = dim
        self.extra: dict[str, Any] = {}
        self.lite = mi.lite_path(self.uri)
        if self.lite is not None:
            Path(self.lite).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._last_seq = 0
        self._index_report: Optional[dict] = None
        self._init_tracking()
        if self.lite is not None:
            quiet_lite_iterator()
        self._client = connect(MilvusClient, self.uri, token, db_name, self.lite is not None)
        self._ready = False
        if self._client.has_collection(collection):
            attach(self)
            self._view_complete, self._log_base = False, None

    def index_report(self) -> dict:
        """What Milvus reports and built for the vector index (:func:`.milvus_index.read_back`;
        the build check is cached, the segment counts are current)."""
        with self._lock:
            if not self._ready:
                return {"requested": self.index_type, "requested_params": self.index_params,
                        "built": None, "honoured": None, "warning": None}
            if self._index_report is None:
                self._index_report = mi.read_back(self._client, self.collection,
                                                  self.index_type, self.index_params,
                                                  self.lite, self.dim)
            elif self.lite is not None:
                self._index_report.update(mi.lite_segments(self.lite, self.collection,
                                                           self.index_type))
            return dict(self._index_report)

    # -- introspection ---------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            if not self._ready:
                return 0
            res = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            return int(res[0]["count(*)"])

    @property
    def spec(self) -> Optional[str]:
        return self.index_type if self._ready else None

    @property
    def storage_mode(self) -> str:
        return "milvus"

    @property
    def compressed(self) -> bool:
        return self.index_type in ("IVF_SQ8", "IVF_PQ")

    def ids(self) -> list[str]:
        return [r.id for r in self._scan("", with_text=False)]

    def stats(self) -> dict[str, Any]:
        """``backend``, ``uri``, ``lite``, ``collection``, ``records``, ``dim``,
        ``index_spec`` (requested), ``index`` (:meth:`index_report`: what was built, and
        ``honoured``/``warning`` when Milvus did not build what was asked), consistency level
        and the callable-filter mode."""
        with self._lock:
            return {"backend": self.backend, "mode": self.storage_mode, "uri": self.uri,
                    "lite": self.lite is not None, "collection": self.collection,
                    "records": len(self), "dim": self.dim, "index_spec": self.index_type,
                    "index_params": dict(self.index_params), "index": self.index_report(),
                    "consistency_level": self.consistency_level,
                    "callable_filters": self.callable_filters}

    # -- mutation --------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], texts: Sequence[str], vectors: Any,
               metadatas: Optional[Sequence[Optional[Mapping[str, Any]]]] = None) -> list[str]:
        """Insert or replace records; returns the ids. Vectors are L2-normalized on the way in."""
        ids, texts, metadatas = check_batch(ids, texts, metadatas)
        n = len(ids)
        if n == 0:
            return []
        with self._lock:
            v = batch_rows(vectors, self.dim, n)
            rows = [self._row(x, t, m, vec) for x, t, m, vec in zip(ids, texts, metadatas, v)]
            if not self._ready:
                self.dim = self.dim or int(v.shape[1])
                create(self)
            try:
                for i in range(0, n, BATCH):
                    self._client.upsert(self.collection, rows[i:i + BATCH])
            except BaseException:
                self._outside_write("failed mid-write")  # some batches may be in
                raise
            removed = [self._view.pop(x)[1] for x in ids if x in self._view]
            added = []
            for x, t, m, row in zip(ids, texts, metadatas, rows):
                iid, self._next_iid = self._next_iid, self._next_iid + 1
                self._view[x] = (row["seq"], iid)
                added.append((iid, Record(x, t, dict(m or {}))))
            self._max_seq = max(self._max_seq, self._last_seq)
            self._logged(added, removed)
        return ids

    def _row(self, id: str, text: str, md: Optional[Mapping[str, Any]], vec: np.ndarray) -> dict:
        for what, s in (("id", id), ("text", text)):
            if len(s.encode("utf-8")) > MAX_VARCHAR:
                raise ArgumentError(f"{what} of record {id[:40]!r} is longer than Milvus' "
                                 f"{MAX_VARCHAR}-byte VARCHAR limit")
        md = dict(md or {})
        try:
            json.dumps(md, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ArgumentError(f"metadata of record {id!r} is not JSON-serializable ({e}); Milvus "
                             "stores only JSON values (str, number, bool, None, list, dict)"
                             ) from None
        self._last_seq = max(time.time_ns(), self._last_seq + 1)
        return {PK: id, "seq": self._last_seq, "text": text, META: md, KINDS: kinds_of(md),
                mi.VECTOR: vec}

    def delete(self, ids: Iterable[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = sorted(set(check_ids(ids)))
        with self._lock:
            if not self._ready or not ids:
                return 0
            found = [r.id for r in self.get(ids, with_text=False)]
            try:
                for i in range(0, len(found), BATCH):
                    self._client.delete(self.collection, ids=found[i:i + BATCH])
            except BaseException:
                self._outside_write("failed mid-delete")
                raise
            if found:
                self._logged([], [self._view.pop(x)[1] for x in found if x in self._view])
            return len(found)

    def clear(self) -> None:
        """Delete every record (the collection is dropped; the next add creates it again)."""
        with self._lock:
            if self._client.has_collection(self.collection):
                self._client.drop_collection(self.collection)
            self._ready, self._index_report = False, None
            self._view, self._view_complete = {}, True
            self._revision += 1
            self._log.clear()
            self._log_rows, self._log_base, self._fp_count = 0, self._revision, None

    # -- reads -----------------------------------------------------------------------
    def get(self, ids: Sequence[str], with_text: bool = True) -> list[Record]:
        """Records for ``ids`` in the same order; missing ids are skipped."""
        ids = check_ids(ids)
        with self._lock:
            if not self._ready or not ids:
                return []
            fields = [PK, "text", META] if with_text else [PK]
            got: dict[str, dict] = {}
            uniq = list(dict.fromkeys(ids))
            for i in range(0, len(uniq), BATCH):
                for r in self._client.query(self.collection, filter=ids_expr(uniq[i:i + BATCH]),
                                            output_fields=fields):
                    got[r[PK]] = r
        return [Record(x, got[x].get("text", ""), dict(got[x].get(META) or {}))
                for x in ids if x in got]

    def where(self, flt: Filter) -> list[Record]:
        """All records whose metadata match ``flt`` (insertion order)."""
        if self._client_side(flt):
            pred = compile_filter(flt)
            return [r for r in self._scan("") if pred(r.metadata)]
        return self._scan(to_expr(flt) or "")

    def _client_side(self, flt: Filter | None) -> bool:
        """Whether ``flt`` runs here, not in Milvus: a callable, or a dict Milvus cannot
        express exactly, with ``callable_filters="client"``."""
        if self.callable_filters != "client" or flt is None:
            return False
        if callable(flt):
            return True
        try:
            to_expr(flt)
        except NotExpressibleError:
            return True
        return False

    def _scan(self, expr: str, with_text: bool = True) -> list[Record]:
        fields = [PK, "seq", META] + (["text"] if with_text else [])
        with self._lock:
            if not self._ready:
                return []
            rows = self._scan_rows(expr, fields)
        return [Record(r[PK], r.get("text", ""), dict(r.get(META) or {})) for r in rows]

    def _scan_rows(self, expr: str, fields: list[str]) -> list[dict]:
        """Every row matching ``expr`` (``query_iterator``, BATCH rows a page), one per pk (the
        newest ``seq``: a write by another client during the scan can show a pk twice), in
        ``seq`` order. Called under the lock."""
        it = self._client.query_iterator(self.collection, batch_size=BATCH, filter=expr,
                                         output_fields=fields)
        rows: dict[str, dict] = {}
        try:
            while batch := it.next():
                for r in batch:
                    old = rows.get(r[PK])
                    if old is None or r["seq"] > old["seq"]:
                        rows[r[PK]] = r
        finally:
            it.close()
        return sorted(rows.values(), key=lambda r: r["seq"])

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored (unit, float32) vectors for ``ids``; KeyError names an unknown id."""
        ids = check_ids(ids)
        with self._lock:
            got: dict[str, Any] = {}
            uniq = list(dict.fromkeys(ids))
            for i in range(0, len(uniq), BATCH) if self._ready else ():
                for r in self._client.query(self.collection, filter=ids_expr(uniq[i:i + BATCH]),
                                            output_fields=[PK, mi.VECTOR]):
                    got[r[PK]] = r[mi.VECTOR]
        missing = [x for x in ids if x not in got]
        if missing:
            raise KeyError(f"unknown ids: {missing[:5]}")
        return np.asarray([got[x] for x in ids], dtype=np.float32).reshape(len(ids), -1)

    def _filter_expr(self, flt: Filter | None, only: Optional[list[str]]) -> Optional[str]:
        """The search expression for a filter and an id restriction (None: everything)."""
        if self._client_side(flt):
            pred = compile_filter(flt)
            cand = self._scan("" if only is None else ids_expr(only), with_text=False)
            return ids_expr([r.id for r in cand if pred(r.metadata)])
        expr = to_expr(flt)
        parts = [p for p in (expr, None if only is None else ids_expr(only)) if p]
        return " and ".join(f"({p})" for p in parts) if parts else None

    def search(self, query: Any, k: int = 4, filter: Filter | None = None,
               with_vectors: bool = False, nprobe: Optional[int] = None,
               ids: Optional[Sequence[str]] = None, ef: Optional[int] = None) -> list[Hit]:
        """The ``k`` nearest records matching ``filter`` (and among ``ids`` when given), best
        first; fewer when fewer exist. ``nprobe`` (IVF) or ``ef`` (HNSW) per call."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ArgumentError(f"k={k!r} must be an int >= 1")
        k = int(k)
        if k > MAX_TOPK:
            raise ArgumentError(f"k={k} is above Milvus' search limit of {MAX_TOPK}")
        only = None if ids is None else list(dict.fromkeys(check_ids(ids)))
        q = normalize_rows(query, self.dim, "query vector")
        if len(q) != 1:
            raise ArgumentError(f"search takes one query vector, got {len(q)}")
        fields = ["text", META] + ([mi.VECTOR] if with_vectors else [])
        with self._lock:
            expr = self._filter_expr(filter, only)
            if not self._ready or expr == "false":
                return []
            res = self._search(q[0], k, expr, fields, nprobe, ef)
            if len(res) < k and nprobe is None and self.index_type.startswith("IVF"):
                # a selective filter left the probed lists short: probe every list
                res = self._search(q[0], k, expr, fields, int(self.index_params["nlist"]), ef)
        hits = []
        for r in res:
            e = r["entity"]
            d = float(np.clip(2.0 - 2.0 * float(r["distance"]), 0.0, 4.0))
            vec = np.asarray(e[mi.VECTOR], dtype=np.float32) if with_vectors else None
            hits.append(Hit(r[PK], e["text"], dict(e.get(META) or {}), d, 1.0 - d / 4.0, vec))
        hits.sort(key=lambda h: h.distance)
        return hits

    def _search(self, q: np.ndarray, k: int, expr: Optional[str], fields: list[str],
                nprobe: Optional[int], ef: Optional[int]) -> list[dict]:
        params = mi.search_params(self.index_type, k, nprobe, ef, self.index_config.nprobe)
        res = self._client.search(self.collection, data=[q], anns_field=mi.VECTOR, limit=k,
                                  filter=expr or "", output_fields=fields, search_params=params)
        return list(res[0]) if res else []


    def flush(self) -> None:
        """Ask Milvus to seal what it holds in memory (segments get their index built)."""
        with self._lock:
            if self._ready:
                self._client.flush(self.collection)

    # -- persistence (retgen_engine.docstore.milvus_persist) ---------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the manifest (URI, collection, settings; for Milvus Lite also the database)
        into directory ``path``; the data stays in Milvus."""
        from .milvus_persist import save_milvus

        with self._lock:
            return save_milvus(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True, token: Optional[str] = None,
             **overrides: Any) -> "MilvusStore":
        """Reconnect to the collection a :meth:`save` named (the token is never saved)."""
        from .milvus_persist import load_milvus

        return load_milvus(cls, path, verify, token, overrides)

    def close(self) -> None:
        with self._lock:
            self._client.close()


__all__ = ["MilvusStore", "MAX_VARCHAR", "MAX_TOPK", "CALLABLE_MODES"]
