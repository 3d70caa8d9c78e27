"""Saving and reconnecting a Milvus-backed store.

Milvus owns the data, so a saved Milvus store is a directory with one ``manifest.json``
(format ``retgen-docstore-milvus``): the URI and collection, the store's settings, its
``extra`` and a sha256 over all of it (:func:`save_milvus`). The token is never written. For
Milvus Lite the database directory belongs inside the store directory: a store whose ``.db``
already lives in ``path`` writes the manifest next to it; otherwise the database is flushed
and copied to ``path/milvus.db`` (under the store's lock), and :func:`load_milvus` reconnects
to that copy. ``DocumentStore.load`` of such a directory returns a
:class:`~retgen_engine.docstore.milvus.MilvusStore` (:func:`load_if_milvus`).

The backend dispatch of ``DocumentStore`` lives in :mod:`.backends`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from ..config import IndexConfig
from ..persist.commit import Commit, resolve
from ..persist.errors import ModelFormatError, ModelNotFoundError
from ..persist.modeldir import safe_path

log = logging.getLogger(__name__)

MILVUS_FORMAT = "retgen-docstore-milvus"
MILVUS_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LITE_DB = "milvus.db"


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _read(path: Path) -> Optional[dict]:
    try:
        mf = resolve(path) / MANIFEST
    except ModelFormatError:
        return None
    if not mf.is_file():
        return None
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == MILVUS_FORMAT else None


def is_milvus_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a saved Milvus store's manifest."""
    return _read(Path(path)) is not None


def save_milvus(store: Any, path: str | os.PathLike) -> Path:
    """Write ``store``'s manifest (and a snapshot of its Milvus Lite database) into directory
    ``path`` with the commit protocol: the manifest is a committed version; a database copied
    in gets a name of its own (``milvus-<id>.db``), so the previous manifest's database stays
    until the new manifest is live, and goes after."""
    path = Path(path).absolute()
    if path.exists() and not (path.is_dir() and (_read(path) is not None or _only_db(path, store))):
        raise FileExistsError(f"{str(path)!r} exists and is not a RETGEN Milvus docstore; "
                              "refusing to replace it")
    path.mkdir(parents=True, exist_ok=True)
    previous = _read(path)
    with Commit(path) as c:
        db_file = None
        if store.lite is not None:
            db = Path(store.lite)
            if db.parent == path:
                db_file = db.name
            else:  # a snapshot, under a new name: the old one serves until the commit
                db_file = f"milvus-{uuid.uuid4().hex[:12]}.db"
                store.flush()
                tmp = path / f".{db_file}.tmp"
                if db.exists():
                    shutil.copytree(db, tmp, ignore=shutil.ignore_patterns("LOCK"))
                else:
                    tmp.mkdir()
                os.rename(tmp, path / db_file)
        body = {"format": MILVUS_FORMAT, "format_version": MILVUS_FORMAT_VERSION,
                "uri": None if db_file else store.uri, "db_file": db_file,
                "collection": store.collection, "db_name": store.db_name, "dim": store.dim,
                "count": len(store), "index_type": store.index_type,
                "index_params": dict(store.index_params),
                "index_config": store.index_config.model_dump(),
                "consistency_level": store.consistency_level,
                "callable_filters": store.callable_filters, "extra": store.extra,
                "saved_at": time.time()}
        (c.path / MANIFEST).write_text(json.dumps({**body, "sha256": _digest(body)}, indent=2))
        try:
            c.commit()
        except BaseException:
            if db_file and db_file.startswith("milvus-") and (previous or {}).get("db_file") != db_file:
                shutil.rmtree(path / db_file, ignore_errors=True)
            raise
    old = (previous or {}).get("db_file")
    live = Path(store.lite).name if store.lite is not None and Path(store.lite).parent == path else None
    if old and old != db_file and old != live and old.startswith("milvus-"):
        shutil.rmtree(path / old, ignore_errors=True)  # the superseded snapshot
    log.info("docstore(milvus): saved the manifest of %r (%d records) to %s",
             store.collection, body["count"], path)
    return path


def _only_db(path: Path, store: Any) -> bool:
    """True when ``path`` holds nothing but this store's own Lite database (first save)."""
    names = {p.name for p in path.iterdir()} - {".lock"}
    return not names or (store.lite is not None and Path(store.lite).parent == path
                         and names <= {Path(store.lite).name})


def load_milvus(cls: type, path: str | os.PathLike, verify: bool, token: Optional[str],
                overrides: dict) -> Any:
    """Reconnect to the collection the manifest at ``path`` names."""
    path = Path(path)
    m = _read(path)
    if m is None:
        raise ModelNotFoundError(f"no RETGEN Milvus docstore at {str(path)!r} "
                                f"({MANIFEST} is missing or not {MILVUS_FORMAT!r})")
    if m.get("format_version") != MILVUS_FORMAT_VERSION:
        raise ModelFormatError(f"Milvus docstore format version {m.get('format_version')!r} is not "
                         f"supported (this version reads {MILVUS_FORMAT_VERSION})")
    body = {k: v for k, v in m.items() if k != "sha256"}
    if _digest(body) != m.get("sha256"):  # always: a wrong URI or collection is a wrong store
        raise ModelFormatError(f"{str(resolve(path) / MANIFEST)!r} does not match its checksum "
                               "(corrupt or modified)")
    uri = str(safe_path(path.absolute(), m["db_file"], "Milvus database")) if m["db_file"] else m["uri"]
    kw = {"uri": uri, "collection": m["collection"], "token": token, "dim": m["dim"],
          "index_config": IndexConfig(**m["index_config"]), "index_type": m["index_type"],
          "index_params": m["index_params"], "consistency_level": m["consistency_level"],
          "callable_filters": m["callable_filters"], "db_name": m.get("db_name") or "",
          **overrides}
    store = cls(**kw)
    if m["count"] and not store._ready:
        raise ModelFormatError(f"Milvus docstore at {str(path)!r}: collection {m['collection']!r} "
                         f"is missing at {uri!r} (the manifest says {m['count']} records)")
    store.extra = dict(m.get("extra") or {})
    return store


__all__ = ["save_milvus", "load_milvus", "is_milvus_store", "MILVUS_FORMAT",
           "MILVUS_FORMAT_VERSION", "LITE_DB"]
