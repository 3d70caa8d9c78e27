"""Saving and reconnecting a Milvus-backed store, and the backend dispatch of ``DocumentStore``.

Milvus owns the data, so a saved Milvus store is a directory with one ``manifest.json``
(format ``retgen-docstore-milvus``): the URI and collection, the store's settings, its
``extra`` and a sha256 over all of it (:func:`save_milvus`). The token is never written. For
Milvus Lite the database directory belongs inside the store directory: a store whose ``.db``
already lives in ``path`` writes the manifest next to it; otherwise the database is flushed
and copied to ``path/milvus.db`` (under the store's lock), and :func:`load_milvus` reconnects
to that copy. ``DocumentStore.load`` of such a directory returns a
:class:`~retgen_engine.docstore.milvus.MilvusStore` (:func:`load_if_milvus`).

:class:`StoreDispatch` is ``DocumentStore``'s metaclass: ``DocumentStore(backend="milvus",
uri=..., collection=..., token=None, ...)`` returns a ``MilvusStore``; ``backend="faiss"`` (the
default) builds the faiss store exactly as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from ..config import IndexConfig
from ..persist.modeldir import atomic_write_text

log = logging.getLogger(__name__)

MILVUS_FORMAT = "retgen-docstore-milvus"
MILVUS_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LITE_DB = "milvus.db"
BACKENDS = ("faiss", "milvus")


class StoreDispatch(type):
    """Metaclass of ``DocumentStore``: picks the backend (module docstring)."""

    def __call__(cls, *args: Any, backend: str = "faiss", **kwargs: Any) -> Any:
        if backend == "faiss":
            return super().__call__(*args, **kwargs)
        if backend == "milvus":
            from .milvus import MilvusStore

            return MilvusStore(*args, **kwargs)
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _read(path: Path) -> Optional[dict]:
    mf = path / MANIFEST
    if not mf.is_file():
        return None
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == MILVUS_FORMAT else None


def save_milvus(store: Any, path: str | os.PathLike) -> Path:
    """Write ``store``'s manifest (and its Milvus Lite database) into directory ``path``."""
    path = Path(path).absolute()
    if path.exists() and not (path.is_dir() and (_read(path) is not None or _only_db(path, store))):
        raise FileExistsError(f"{str(path)!r} exists and is not a RETGEN Milvus docstore; "
                              "refusing to replace it")
    path.mkdir(parents=True, exist_ok=True)
    db_file = None
    if store.lite is not None:
        db = Path(store.lite)
        if db.parent == path:
            db_file = db.name
        else:
            db_file = LITE_DB
            store.flush()
            target = path / LITE_DB
            tmp = path / f".{LITE_DB}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            if db.exists():
                shutil.copytree(db, tmp, ignore=shutil.ignore_patterns("LOCK"))
            else:
                tmp.mkdir()
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    body = {"format": MILVUS_FORMAT, "format_version": MILVUS_FORMAT_VERSION,
            "uri": None if db_file else store.uri, "db_file": db_file,
            "collection": store.collection, "db_name": store.db_name, "dim": store.dim,
            "count": len(store), "index_type": store.index_type,
            "index_params": dict(store.index_params),
            "index_config": store.index_config.model_dump(),
            "consistency_level": store.consistency_level,
            "callable_filters": store.callable_filters, "extra": store.extra,
            "saved_at": time.time()}
    atomic_write_text(path / MANIFEST, json.dumps({**body, "sha256": _digest(body)}, indent=2))
    log.info("docstore(milvus): saved the manifest of %r (%d records) to %s",
             store.collection, body["count"], path)
    return path


def _only_db(path: Path, store: Any) -> bool:
    """True when ``path`` holds nothing but this store's own Lite database (first save)."""
    names = {p.name for p in path.iterdir()}
    return not names or (store.lite is not None and Path(store.lite).parent == path
                         and names <= {Path(store.lite).name})


def load_milvus(cls: type, path: str | os.PathLike, verify: bool, token: Optional[str],
                overrides: dict) -> Any:
    """Reconnect to the collection the manifest at ``path`` names."""
    path = Path(path)
    m = _read(path)
    if m is None:
        raise FileNotFoundError(f"no RETGEN Milvus docstore at {str(path)!r} "
                                f"({MANIFEST} is missing or not {MILVUS_FORMAT!r})")
    if m.get("format_version") != MILVUS_FORMAT_VERSION:
        raise ValueError(f"Milvus docstore format version {m.get('format_version')!r} is not "
                         f"supported (this version reads {MILVUS_FORMAT_VERSION})")
    if verify:
        body = {k: v for k, v in m.items() if k != "sha256"}
        if _digest(body) != m.get("sha256"):
            raise ValueError(f"{str(path / MANIFEST)!r} does not match its checksum "
                             "(corrupt or modified)")
    uri = str(path.absolute() / m["db_file"]) if m["db_file"] else m["uri"]
    kw = {"uri": uri, "collection": m["collection"], "token": token, "dim": m["dim"],
          "index_config": IndexConfig(**m["index_config"]), "index_type": m["index_type"],
          "index_params": m["index_params"], "consistency_level": m["consistency_level"],
          "callable_filters": m["callable_filters"], "db_name": m.get("db_name") or "",
          **overrides}
    store = cls(**kw)
    if m["count"] and not store._ready:
        raise ValueError(f"Milvus docstore at {str(path)!r}: collection {m['collection']!r} "
                         f"is missing at {uri!r} (the manifest says {m['count']} records)")
    store.extra = dict(m.get("extra") or {})
    return store


def load_if_milvus(path: str | os.PathLike, verify: bool = True) -> Any:
    """The Milvus store saved at ``path``, or None when ``path`` holds another store."""
    if _read(Path(path)) is None:
        return None
    from .milvus import MilvusStore

    return MilvusStore.load(path, verify)


__all__ = ["StoreDispatch", "save_milvus", "load_milvus", "load_if_milvus", "MILVUS_FORMAT",
           "MILVUS_FORMAT_VERSION", "LITE_DB", "BACKENDS"]
