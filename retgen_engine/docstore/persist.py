"""Persistence of a :class:`~retgen_engine.docstore.DocumentStore`: a directory with the faiss
index, the vectors (``vectors.npy``), refine codes (``codes.npy`` + ``refine_codec.faiss``) or,
with in-index codes, each record's IVF list number (``lists.npy``) and optionally float16
vectors (``disk_vectors.npy``, memory-mapped on load), the int ids, the records in
SQLite and a versioned ``manifest.json`` holding every file's sha256. Written to a temp
directory and renamed into place; never pickled.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from ..config import IndexConfig
from .diskvectors import DiskVectors
from ..search.index import FaissIndex, drop_precomputed_table
from ..persist.modeldir import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

FORMAT = "retgen-docstore"
FORMAT_VERSION = 1          # raw vectors (vectors.npy)
CODES_FORMAT_VERSION = 2    # refine codes (codes.npy + refine_codec.faiss), no raw vectors
IN_INDEX_FORMAT_VERSION = 3  # codes only in index.faiss (+ lists.npy), no raw vectors
DISK_FORMAT_VERSION = 4     # version 3 + float16 vectors on disk (disk_vectors.npy)
DISK_FILE = "disk_vectors.npy"  # float16 unit vectors (DocumentStore(disk_vectors=True))
VERSIONS = (FORMAT_VERSION, CODES_FORMAT_VERSION, IN_INDEX_FORMAT_VERSION, DISK_FORMAT_VERSION)


def save_store(store, path: str | os.PathLike) -> Path:
    """Write ``store`` to directory ``path`` (temp dir, then rename; replaces a store)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _is_replaceable(path):
        raise FileExistsError(f"{str(path)!r} exists and is not a RETGEN docstore; "
                              "refusing to replace it")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        with store._lock:
            if store._disk is not None:
                _write_disk_rows(store, tmp)
            else:
                store._compact()
            manifest = _write_files(store, tmp)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("docstore: saved %d records to %s", len(store), path)
    return path


def _write_disk_rows(store, d: Path) -> None:
    """Write the live disk rows to ``d/disk_vectors.npy`` and compact the store onto them: it
    then reads that file (memory-mapped; it stays valid through the rename) and the previous
    rows' file is released (no second copy left behind)."""
    n = store._nrows
    if len(store._disk) != n:
        raise RuntimeError(f"docstore holds {len(store._disk)} disk vectors for {n} rows; "
                           "refusing to save an inconsistent store")
    store._disk.save(d / DISK_FILE, keep=store._alive[:n])
    store._compact(disk=DiskVectors.open(d / DISK_FILE, store.dim, store.disk_dir))


def _write_files(store, d: Path) -> dict:
    import faiss

    n = store._nrows
    codec = None
    if store._codec is not None:  # large store: refine codes, never raw vectors
        np.save(d / "codes.npy", store._vecs[:n], allow_pickle=False)
        faiss.write_index(store._codec, str(d / "refine_codec.faiss"))
        codec = {"file": "refine_codec.faiss", "spec": store._codec_spec,
                 "codes": "codes.npy"}
    elif store._in_index:  # the index holds the only codes; rows hold their IVF list number
        np.save(d / "lists.npy", store._vecs[:n], allow_pickle=False)
        if store.disk_vectors and store._disk is None:
            raise RuntimeError("docstore with disk_vectors=True has no disk rows for its "
                               f"{n} records; refusing to save an inconsistent store")
    else:
        np.save(d / "vectors.npy", store._vecs[:n], allow_pickle=False)
    np.save(d / "int_ids.npy", store._row_ids[:n], allow_pickle=False)
    _write_sqlite(d / "docs.sqlite", store._records)
    index = None
    if store._index is not None:
        store._index.save(d / "index.faiss")
        index = {"file": "index.faiss", "spec": store._index.spec,
                 "default_nprobe": store._index.default_nprobe, "trained_n": store._trained_n}
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(d.iterdir())}
    version = (CODES_FORMAT_VERSION if codec is not None else
               DISK_FORMAT_VERSION if store._disk is not None else
               IN_INDEX_FORMAT_VERSION if store._in_index else FORMAT_VERSION)
    return {"format": FORMAT, "format_version": version, "dim": store.dim,
            "count": len(store._records), "next_id": store._next_id,
            "vector_dtype": store.vector_dtype, "refine_factor": store.refine_factor,
            "retrain_growth": store.retrain_growth, "refine_codes": store.refine_codes,
            "refine_codec": codec, "in_index_codes": bool(store._in_index),
            "disk_vectors": store.disk_vectors,
            "disk_vectors_file": DISK_FILE if store._disk is not None else None,
            "index_config": store.index_config.model_dump(), "index": index,
            "files": files, "extra": store.extra, "saved_at": time.time()}


def load_store(cls, path: str | os.PathLike, verify: bool = True,
               disk_dir: str | os.PathLike | None = None):
    """A ``cls`` (DocumentStore) read from ``path``, checksums verified unless ``verify=False``.
    A store with disk vectors memory-maps its ``disk_vectors.npy`` read-only; rows added later
    go to a temporary file in ``disk_dir``."""
    path = Path(path)
    m = read_manifest(path)
    if verify:
        for name, info in m["files"].items():
            if sha256_file(path / name) != info["sha256"]:
                raise ValueError(f"docstore file {str(path / name)!r} does not match its "
                                 "checksum in manifest.json (corrupt or modified)")
    s = cls(m["dim"], IndexConfig(**m["index_config"]), m["vector_dtype"],
            m["refine_factor"], m["retrain_growth"], m.get("refine_codes", "auto"),
            bool(m.get("disk_vectors", False)), disk_dir)
    s.extra = dict(m.get("extra") or {})
    codec = m.get("refine_codec")
    if codec is not None:
        import faiss

        s._codec = faiss.read_index(str(path / codec["file"]))
        drop_precomputed_table(s._codec)
        s._codec_spec = codec["spec"]
        s._vecs = np.load(path / codec["codes"], allow_pickle=False)
        if s._vecs.dtype != np.uint8 or s._vecs.shape[1:] != (s._codec.sa_code_size(),):
            raise ValueError(f"docstore at {str(path)!r}: refine codes have shape "
                             f"{s._vecs.shape} ({s._vecs.dtype}), expected uint8 rows of "
                             f"{s._codec.sa_code_size()} bytes")
    elif m.get("in_index_codes"):
        s._in_index = True
        s._vecs = np.load(path / "lists.npy", allow_pickle=False)
        if s._vecs.ndim != 1 or s._vecs.dtype.kind not in "iu":
            raise ValueError(f"docstore at {str(path)!r}: lists.npy has shape {s._vecs.shape} "
                             f"({s._vecs.dtype}), expected one integer list number per record")
        if m.get("disk_vectors_file"):
            s._disk = DiskVectors.open(path / m["disk_vectors_file"], s.dim, s.disk_dir)
            if len(s._disk) != len(s._vecs):
                raise ValueError(f"docstore at {str(path)!r}: {len(s._disk)} disk vectors for "
                                 f"{len(s._vecs)} records")
    else:
        s._vecs = np.load(path / "vectors.npy", allow_pickle=False)
    s._row_ids = np.load(path / "int_ids.npy", allow_pickle=False).astype(np.int64)
    s._nrows = len(s._row_ids)
    s._alive = np.ones(s._nrows, dtype=bool)
    s._records = _read_sqlite(path / "docs.sqlite")
    s._id_map = {r.id: iid for iid, r in s._records.items()}
    s._next_id = int(m["next_id"])
    if m["index"] is not None:
        ix = m["index"]
        s._index = FaissIndex.load(path / ix["file"], ix["spec"], ix["default_nprobe"],
                                   mmap=False,
                                   precomputed_table=s.index_config.precomputed_table,
                                   ip_scan=s.index_config.ip_scan)
        s._trained_n = int(ix["trained_n"])
    ntot = s._index.ntotal if s._index is not None else 0
    if not (len(s._records) == s._nrows == ntot == m["count"]):
        raise ValueError(f"docstore at {str(path)!r} is inconsistent: {len(s._records)} "
                         f"records, {s._nrows} vectors, {ntot} indexed, manifest says "
                         f"{m['count']}")
    return s


def read_manifest(path: Path) -> dict:
    mf = Path(path) / "manifest.json"
    if not mf.is_file():
        raise FileNotFoundError(f"no docstore at {str(path)!r} (manifest.json is missing)")
    m = json.loads(mf.read_text(encoding="utf-8"))
    if m.get("format") != FORMAT:
        raise ValueError(f"{str(mf)!r} is not a RETGEN docstore manifest "
                         f"(format={m.get('format')!r})")
    if m.get("format_version") not in VERSIONS:
        raise ValueError(f"docstore format version {m.get('format_version')!r} is not supported "
                         f"(this version reads {', '.join(map(str, VERSIONS))})")
    return m


def _is_replaceable(path: Path) -> bool:
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        read_manifest(path)
        return True
    except (OSError, ValueError):
        return False


def _json_metadata(rec) -> str:
    try:
        return json.dumps(rec.metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata of record {rec.id!r} is not JSON-serializable ({e}); "
                         "only JSON values (str, number, bool, None, list, dict) can be saved"
                         ) from None


def _write_sqlite(path: Path, records: Mapping[int, object]) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE docs (iid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
                    "text TEXT NOT NULL, metadata TEXT NOT NULL)")
        con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
                        ((iid, r.id, r.text, _json_metadata(r)) for iid, r in records.items()))
        con.commit()
    finally:
        con.close()


def _read_sqlite(path: Path) -> dict:
    from .store import Record

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT iid, id, text, metadata FROM docs ORDER BY iid").fetchall()
    finally:
        con.close()
    return {int(iid): Record(sid, text, json.loads(md)) for iid, sid, text, md in rows}
