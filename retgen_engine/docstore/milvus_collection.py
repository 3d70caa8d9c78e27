"""The Milvus collection behind a :class:`~retgen_engine.docstore.milvus.MilvusStore`: its
schema, creation at the first add, attaching to an existing one, and the vector index.

Fields: ``pk`` (VARCHAR primary key: our string ids), ``seq`` (INT64 insertion counter),
``text`` (VARCHAR), ``metadata`` and ``md_kinds`` (JSON, :mod:`.milvus_expr`), ``vector``
(FLOAT_VECTOR of the store's dimension). The index is created without waiting for Milvus'
index-state RPCs (which Milvus Lite does not implement) and then read back
(:func:`.milvus_index.read_back`); a request Milvus does not honour is logged as a warning and
kept in the store's ``stats()["index"]``.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from . import milvus_index as mi
from .milvus_expr import KINDS, META, PK

log = logging.getLogger(__name__)

MAX_VARCHAR = 65535     # bytes: Milvus' longest VARCHAR (ids and texts)
FIELDS = (PK, "seq", "text", META, KINDS, mi.VECTOR)
_INDEX_KEYS = ("nlist", "m", "nbits", "M", "efConstruction")


def create(store: Any) -> None:
    """Create the collection (dimension ``store.dim``) with its index, and load it."""
    from pymilvus import DataType

    mi.check_dim(store.index_type, store.index_params, store.dim)
    c = store._client
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field(PK, DataType.VARCHAR, is_primary=True, max_length=MAX_VARCHAR)
    s.add_field("seq", DataType.INT64)
    s.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
    s.add_field(META, DataType.JSON)
    s.add_field(KINDS, DataType.JSON)
    s.add_field(mi.VECTOR, DataType.FLOAT_VECTOR, dim=store.dim)
    c.create_collection(store.collection, schema=s, consistency_level=store.consistency_level)
    create_index(store)
    _load(c, store.collection)
    store._ready = True


def _load(c: Any, collection: str, attempts: int = 4) -> None:
    """Load a collection; Milvus Lite can report a segment index file it is still writing as
    "No data left in file" (seen under heavy load right after a save), so that one error is
    retried a few times with a short pause before it is raised."""
    for i in range(attempts):
        try:
            return c.load_collection(collection)
        except Exception as e:  # noqa: BLE001 - pymilvus' MilvusException, re-raised below
            if "No data left in file" not in str(e) or i == attempts - 1:
                raise
            log.warning("docstore(milvus): loading %r failed (%s); retrying", collection, e)
            time.sleep(0.5 * (i + 1))


def create_index(store: Any) -> None:
    """Ask for the store's index, read back what Milvus made of it, warn when not honoured."""
    c = store._client
    ip = c.prepare_index_params()
    ip.add_index(mi.VECTOR, index_type=store.index_type, metric_type=mi.METRIC,
                 params=dict(store.index_params))
    c.create_index(store.collection, ip, sync=False)
    store._index_report = mi.read_back(c, store.collection, store.index_type,
                                       store.index_params, store.lite, store.dim)
    if store._index_report["warning"]:
        log.warning("docstore(milvus): %s", store._index_report["warning"])


def attach(store: Any) -> None:
    """Use the existing collection: check its fields, take its dimension and index, load."""
    c = store._client
    desc = c.describe_collection(store.collection)
    fields = {f["name"]: f for f in desc["fields"]}
    if set(fields) != set(FIELDS):
        raise ValueError(f"Milvus collection {store.collection!r} exists with fields "
                         f"{sorted(fields)}, not a RETGEN store's {sorted(FIELDS)}")
    dim = int(fields[mi.VECTOR]["params"]["dim"])
    if store.dim is not None and store.dim != dim:
        raise ValueError(f"embedding dimension mismatch: dim={store.dim}, collection "
                         f"{store.collection!r} holds dimension {dim}")
    store.dim = dim
    try:
        idx = c.describe_index(store.collection, mi.VECTOR) or {}
    except Exception:  # noqa: BLE001 - no index yet: create the requested one
        idx = {}
    if not idx:
        create_index(store)
    else:
        have = str(idx.get("index_type", "")).upper()
        if have != store.index_type and store._explicit_index:
            log.warning("docstore(milvus): collection %r already has a %s index; the "
                        "requested %s is not built", store.collection, have, store.index_type)
        if have in mi.INDEX_TYPES:
            params = dict(idx.get("params") or {}) or {k: idx[k] for k in _INDEX_KEYS if k in idx}
            store.index_type = have
            store.index_params = {k: _num(v) for k, v in params.items()}
    _load(c, store.collection)
    store._ready = True


def _num(v: Any) -> Any:
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


__all__ = ["create", "create_index", "attach", "connect", "quiet_lite_iterator", "FIELDS",
           "MAX_VARCHAR"]


def connect(client_cls: type, uri: str, token: Optional[str], db_name: str, lite: bool,
             attempts: int = 3) -> Any:
    """A client for ``uri``. Milvus Lite's local gRPC server sometimes drops a connection that
    pymilvus shares between clients of one URI (GOAWAY "too_many_pings" after the channel sat
    idle; seen under load in long test sessions), and the next client fails to connect: for
    Milvus Lite that failure is retried a few times, with a warning."""
    for i in range(attempts):
        try:
            return client_cls(uri=uri, token=token or "", db_name=db_name)
        except Exception as e:  # noqa: BLE001 - pymilvus' MilvusException, re-raised below
            if not lite or "Fail connecting" not in str(e) or i == attempts - 1:
                raise
            log.warning("docstore(milvus): connecting to %r failed (%s); retrying", uri, e)
            time.sleep(0.5 * (i + 1))
    raise AssertionError("unreachable")


class _NoMvccWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def quiet_lite_iterator() -> None:
    """Milvus Lite has no MVCC timestamp RPC; pymilvus' iterator warns on every scan and then
    does the right thing (client-side timestamp). Drop only that message."""
    lg = logging.getLogger("pymilvus.orm.iterator")
    if not any(isinstance(f, _NoMvccWarning) for f in lg.filters):
        lg.addFilter(_NoMvccWarning())
