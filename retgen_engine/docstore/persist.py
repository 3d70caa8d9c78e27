"""Persistence of a :class:`~retgen_engine.docstore.DocumentStore`: a directory with the faiss
index, the vector rows' own files (:meth:`.rows.VectorRows.save`; the format versions are in
:mod:`.formats`), the int ids, the records in SQLite and a versioned ``manifest.json`` holding
every file's sha256. Written to a temp directory and renamed into place; never pickled.

This module sees a store only as a :class:`StoreState` (what is saved, and what a load
returns): the store builds one under its lock and restores itself from one.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from urllib.request import pathname2url
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..config import IndexConfig
from ..persist.commit import Commit, resolve
from ..persist.errors import ModelFormatError, ModelNotFoundError
from ..persist.modeldir import check_seal, safe_path, seal, sha256_file
from ..search.index import FaissIndex
from .formats import (CODES_FORMAT_VERSION, DISK_FILE, DISK_FORMAT_VERSION, DOCS_FILE, FORMAT,
                      FORMAT_VERSION, IN_INDEX_FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE,
                      VERSIONS)
from .records import Record
from .rows import VectorRows, load_rows

log = logging.getLogger(__name__)


@dataclass
class StoreState:
    """Everything a saved store holds. ``settings`` are the store's constructor arguments
    (``dim``, ``index_config``, ``vector_dtype``, ``refine_factor``, ``retrain_growth``,
    ``refine_codes``, ``disk_vectors``; a load adds ``disk_dir``)."""

    settings: dict[str, Any]
    next_id: int
    records: dict[int, Record]
    rows: VectorRows
    index: Optional[FaissIndex]
    trained_n: int
    extra: dict[str, Any] = field(default_factory=dict)


def save_store(path: str | os.PathLike, write: Callable[[Path], dict]) -> Path:
    """Save a new version into directory ``path`` with the commit protocol
    (:mod:`retgen_engine.persist.commit`; the previous version stays loadable until the
    commit): ``write(tmp)`` writes the files into ``tmp`` and returns the manifest
    (:func:`write_state`), which is sealed with its own checksum."""
    path = Path(path)
    if path.exists() and not _is_replaceable(path):
        raise FileExistsError(f"{str(path)!r} exists and is not a RETGEN docstore; "
                              "refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with Commit(path) as c:
        manifest = seal(write(c.path))
        (c.path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        c.commit()
    log.info("docstore: saved %d records to %s", manifest["count"], path)
    return path


def write_state(d: Path, st: StoreState) -> dict:
    """Write ``st`` into directory ``d`` (the rows compact themselves first); the manifest."""
    cfg = st.settings
    rows = st.rows.save(d)
    if rows["in_index_codes"] and cfg["disk_vectors"] and rows["disk_vectors_file"] is None:
        raise RuntimeError("docstore with disk_vectors=True has no disk rows for its "
                           f"{len(st.rows)} records; refusing to save an inconsistent store")
    _write_sqlite(d / DOCS_FILE, st.records)
    index = None
    if st.index is not None:
        st.index.save(d / INDEX_FILE)
        index = {"file": INDEX_FILE, "spec": st.index.spec,
                 "default_nprobe": st.index.default_nprobe, "trained_n": st.trained_n}
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(d.iterdir())}
    return {"format": FORMAT, "format_version": st.rows.format_version, "dim": cfg["dim"],
            "count": len(st.records), "next_id": st.next_id,
            "vector_dtype": cfg["vector_dtype"], "refine_factor": cfg["refine_factor"],
            "retrain_growth": cfg["retrain_growth"], "refine_codes": cfg["refine_codes"],
            "refine_codec": rows["refine_codec"], "in_index_codes": bool(rows["in_index_codes"]),
            "disk_vectors": cfg["disk_vectors"],
            "disk_vectors_file": rows["disk_vectors_file"],
            "index_config": cfg["index_config"].model_dump(), "index": index,
            "files": files, "extra": st.extra, "saved_at": time.time()}


def load_state(path: str | os.PathLike, verify: bool = True,
               disk_dir: str | os.PathLike | None = None) -> StoreState:
    """The store saved at ``path``, checksums verified unless ``verify=False``. Disk rows
    memory-map their ``disk_vectors.npy`` read-only; rows added later go to a temporary file
    in ``disk_dir``. Anything missing or malformed is a ModelFormatError naming the store."""
    if disk_dir is not None and not Path(disk_dir).is_dir():  # before any file is opened
        raise ValueError(f"disk_dir={str(disk_dir)!r} is not a directory")
    try:
        return _load_state(Path(path), verify, disk_dir)
    except ModelFormatError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError, OSError,
            ValueError) as e:
        raise ModelFormatError(f"docstore at {str(path)!r} cannot be loaded: {e!r}") from None


def _load_state(path: Path, verify: bool, disk_dir) -> StoreState:
    m = read_manifest(path)
    path = resolve(path)  # the live version's files
    if verify:
        for name, info in m["files"].items():
            f = safe_path(path, name, "docstore file")
            if not f.is_file() or sha256_file(f) != info["sha256"]:
                raise ModelFormatError(f"docstore file {str(f)!r} does not match its "
                                       "checksum in manifest.json (missing, corrupt or modified)")
    settings = {"dim": m["dim"], "index_config": IndexConfig(**m["index_config"]),
                "vector_dtype": m["vector_dtype"], "refine_factor": m["refine_factor"],
                "retrain_growth": m["retrain_growth"],
                "refine_codes": m.get("refine_codes", "auto"),
                "disk_vectors": bool(m.get("disk_vectors", False)),
                "disk_dir": None if disk_dir is None else str(disk_dir)}
    index, trained_n = None, 0
    if m["index"] is not None:
        ix, cfg = m["index"], settings["index_config"]
        index = FaissIndex.load(safe_path(path, ix["file"], "docstore index"), ix["spec"], ix["default_nprobe"], mmap=False,
                                precomputed_table=cfg.precomputed_table, ip_scan=cfg.ip_scan)
        trained_n = int(ix["trained_n"])
    rows = load_rows(path, m, index, settings["disk_dir"])
    records = _read_sqlite(path / DOCS_FILE)
    ntot = index.ntotal if index is not None else 0
    if not (len(records) == len(rows) == ntot == m["count"]):
        raise ValueError(f"docstore at {str(path)!r} is inconsistent: {len(records)} "
                         f"records, {len(rows)} vectors, {ntot} indexed, manifest says "
                         f"{m['count']}")
    if records and int(m["next_id"]) <= max(records):
        raise ModelFormatError(f"docstore at {str(path)!r} is inconsistent: next_id "
                               f"{m['next_id']} is not above its largest record id {max(records)}")
    return StoreState(settings, int(m["next_id"]), records, rows, index, trained_n,
                      dict(m.get("extra") or {}))


def read_manifest(path: Path) -> dict:
    """The live version's manifest, checked (format, version, its own checksum)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"no docstore at {str(path)!r} (manifest.json is missing)")
    mf = resolve(path) / MANIFEST_FILE
    if not mf.is_file():
        raise ModelNotFoundError(f"no docstore at {str(path)!r} (manifest.json is missing)")
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{str(mf)!r} is corrupt: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ModelFormatError(f"{str(mf)!r} is not a RETGEN docstore manifest "
                               f"(format={m.get('format') if isinstance(m, dict) else m!r})")
    if m.get("format_version") not in VERSIONS:
        raise ModelFormatError(f"docstore format version {m.get('format_version')!r} is not "
                               f"supported (this version reads {', '.join(map(str, VERSIONS))})")
    check_seal(m, repr(str(mf)))
    return m


def _is_replaceable(path: Path) -> bool:
    if path.is_dir() and not any(p.name != ".lock" for p in path.iterdir()):
        return True
    try:
        read_manifest(path)
        return True
    except (OSError, ValueError):
        return False


def _json_metadata(rec: Record) -> str:
    try:
        return json.dumps(rec.metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata of record {rec.id!r} is not JSON-serializable ({e}); "
                         "only JSON values (str, number, bool, None, list, dict) can be saved"
                         ) from None


def _write_sqlite(path: Path, records: Mapping[int, Record]) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE docs (iid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
                    "text TEXT NOT NULL, metadata TEXT NOT NULL)")
        con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
                        ((iid, r.id, r.text, _json_metadata(r)) for iid, r in records.items()))
        con.commit()
    finally:
        con.close()


def _read_sqlite(path: Path) -> dict[int, Record]:
    # a URI names the file: quote the path, so '%', '#' or '?' in it cannot change which file
    try:
        con = sqlite3.connect(f"file:{pathname2url(str(Path(path).resolve()))}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT iid, id, text, metadata FROM docs ORDER BY iid").fetchall()
        finally:
            con.close()
        out = {int(iid): Record(sid, text, json.loads(md)) for iid, sid, text, md in rows}
    except (sqlite3.Error, ValueError, TypeError) as e:
        raise ModelFormatError(f"docstore records {str(path)!r} cannot be read: {e}") from None
    for r in out.values():
        if not isinstance(r.id, str) or not isinstance(r.text, str) or not isinstance(r.metadata, dict):
            raise ModelFormatError(f"docstore records {str(path)!r}: record {r.id!r} is malformed")
    return out


__all__ = ["StoreState", "save_store", "write_state", "load_state", "read_manifest",
           "FORMAT", "FORMAT_VERSION", "CODES_FORMAT_VERSION", "IN_INDEX_FORMAT_VERSION",
           "DISK_FORMAT_VERSION", "DISK_FILE", "VERSIONS"]
