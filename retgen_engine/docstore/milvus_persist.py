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

import numpy as np

from ..config import IndexConfig
from ..persist.commit import Commit, resolve
from ..persist.errors import ModelFormatError, ModelNotFoundError
from ..persist.modeldir import safe_path

log = logging.getLogger(__name__)

MILVUS_FORMAT = "retgen-docstore-milvus"
MILVUS_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LITE_DB = "milvus.db"
TOKEN_ENV = "RETGEN_MILVUS_TOKEN"


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
                store.flush()  # sealed and indexed before the manifest says it is there
                _settle_lite(store)
            else:  # a snapshot, under a new name: the old one serves until the commit
                db_file = f"milvus-{uuid.uuid4().hex[:12]}.db"
                store.flush()
                tmp = path / f".{db_file}.tmp"
                if db.exists():
                    _settle_lite(store)
                    _copy_stable(db, tmp)
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
                "callable_filters": store.callable_filters,
                "revision_check_s": store.revision_check_s, "extra": store.extra,
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


def _settle_lite(store: Any, timeout: float = 120.0) -> None:
    """Wait (up to ``timeout`` s) until Milvus Lite has written an index file for every flushed
    segment of the store's collection: it builds them in a background thread after a flush, and
    a snapshot copied meanwhile holds a half-written file ("Failed to read all data for array
    ... file seems not fully written?" when it is loaded; seen in a test under load). No wait
    when Lite cannot build the index (IVF_PQ: brute force, no index files)."""
    from . import milvus_index as mi

    if not store._ready or (store.index_report().get("built") == "BRUTE_FORCE"):
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        seg = mi.lite_segments(store.lite, store.collection, store.index_type)
        if seg["indexed_segments"] >= seg["segments"] and not _incomplete(Path(store.lite)):
            return
        time.sleep(0.1)
    log.warning("docstore(milvus): Milvus Lite has not indexed every segment of %r after %.0f s; "
                "saving the snapshot anyway", store.collection, timeout)


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): (st.st_size, st.st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and p.name != "LOCK"
            for st in (p.stat(),)}


def _starts_with(f: Path, magic: bytes) -> bool:
    with open(f, "rb") as fh:
        return fh.read(len(magic)) == magic


def _incomplete(root: Path) -> list[str]:
    """Files of a Lite database that are not whole (Milvus Lite writes them in place, not by
    rename, so a copy may catch one half-written): a brute-force index file (numpy's format) shorter
    or longer than its header says, another index file faiss cannot read back, a parquet file
    without its ``PAR1`` marks at both ends, a JSON file that does not parse."""
    from numpy.lib import format as npf

    bad = []
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        try:
            if f.suffix == ".idx" and not _starts_with(f, b"\x93NUMPY"):  # faiss' format
                import faiss

                faiss.read_index(str(f))  # raises on a file cut short
                ok = True
            elif f.suffix == ".idx":  # brute force: the vectors in numpy's format
                with open(f, "rb") as fh:
                    version = npf.read_magic(fh)
                    read = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
                    shape, _, dtype = read(fh)
                    ok = f.stat().st_size == fh.tell() + int(np.prod(shape)) * dtype.itemsize
            elif f.suffix == ".parquet":
                with open(f, "rb") as fh:
                    head = fh.read(4)
                    fh.seek(-4, os.SEEK_END)
                    ok = head == b"PAR1" and fh.read(4) == b"PAR1"
            elif f.suffix == ".json":
                json.loads(f.read_text())
                ok = True
            else:
                continue
        except (OSError, ValueError, RuntimeError):
            ok = False
        if not ok:
            bad.append(str(f.relative_to(root)))
    return bad


def _copy_stable(src: Path, dst: Path, attempts: int = 8) -> None:
    """Copy the Lite database ``src`` to ``dst`` so that no file changed while it was copied
    and every file in the copy is whole (:func:`_incomplete`; Milvus Lite's background threads
    write index and compaction files): copied again, after a pause, while any file's size or
    mtime moved or a copied file was cut short; a warning when it never settled."""
    for i in range(attempts):
        before = _files(src)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
        if _files(src) == before and not _incomplete(dst):
            return
        if i == attempts - 1:
            log.warning("docstore(milvus): files of %s kept changing while it was copied; the "
                        "snapshot is the last copy", src)
            return
        shutil.rmtree(dst, ignore_errors=True)
        time.sleep(0.2 * (i + 1))


def _only_db(path: Path, store: Any) -> bool:
    """True when ``path`` holds nothing but this store's own Lite database (first save)."""
    names = {p.name for p in path.iterdir()} - {".lock"}
    return not names or (store.lite is not None and Path(store.lite).parent == path
                         and names <= {Path(store.lite).name})


def load_milvus(cls: type, path: str | os.PathLike, verify: bool, token: Optional[str],
                overrides: dict) -> Any:
    """Reconnect to the collection the manifest at ``path`` names. The token is never saved:
    ``token``, else the environment variable ``RETGEN_MILVUS_TOKEN`` (how a model whose memory
    is on a server with authentication is loaded by ``retgen generate``), else none."""
    path = Path(path)
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
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
    try:
        uri = (str(safe_path(path.absolute(), m["db_file"], "Milvus database")) if m["db_file"]
               else m["uri"])
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"uri={uri!r}")
        kw = {"uri": uri, "collection": m["collection"], "token": token, "dim": m["dim"],
              "index_config": IndexConfig(**m["index_config"]), "index_type": m["index_type"],
              "index_params": m["index_params"], "consistency_level": m["consistency_level"],
              "callable_filters": m["callable_filters"], "db_name": m.get("db_name") or "",
              **({"revision_check_s": m["revision_check_s"]} if "revision_check_s" in m else {}),
              **overrides}
        store = cls(**kw)
        count = int(m["count"])
    except (KeyError, TypeError, ValueError) as e:  # a consistent manifest that is not ours
        raise ModelFormatError(f"Milvus docstore at {str(path)!r}: its manifest is missing or "
                               f"has a malformed entry ({type(e).__name__}: {e})") from None
    if count and not store._ready:
        raise ModelFormatError(f"Milvus docstore at {str(path)!r}: collection {m['collection']!r} "
                         f"is missing at {uri!r} (the manifest says {m['count']} records)")
    store.extra = dict(m.get("extra") or {})
    return store


__all__ = ["save_milvus", "load_milvus", "is_milvus_store", "MILVUS_FORMAT", "TOKEN_ENV",
           "MILVUS_FORMAT_VERSION", "LITE_DB"]
