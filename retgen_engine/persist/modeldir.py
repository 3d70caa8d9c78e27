"""Model directories: real ``.npy`` arrays (memory-mapped read-only), a faiss index file and
JSON files, described by a versioned ``manifest.json`` (dtype, shape and sha256 of every file).

A model is written into a temporary sibling directory and renamed into place only when
complete, so an interrupted build never leaves a directory that loads. No pickle anywhere:
arrays load with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
from importlib import metadata
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "retgen-model"
FORMAT_VERSION = 1


class ModelFormatError(ValueError):
    """A model directory is missing, incomplete, corrupt or incompatible."""


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "faiss", "torch", "sentence_transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    try:
        out["retgen"] = metadata.version("retgen")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
        out["retgen"] = "unknown"
    return out


class ModelWriter:
    """Collects files in a temporary directory; :meth:`commit` renames it into place."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not overwrite:
            raise FileExistsError(f"output {str(self.out)!r} exists and is not empty; "
                                  "choose another path or pass overwrite=True (--overwrite)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.building-", dir=self.out.parent))
        (self.tmp / "arrays").mkdir()
        self.overwrite = overwrite
        self.files: dict[str, dict[str, Any]] = {}
        self.arrays: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> "ModelWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():  # not committed: leave nothing behind
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, rel: str) -> Path:
        return self.tmp / rel

    def add_array(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if arr.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only plain dtypes are stored")
        rel = f"arrays/{name}.npy"
        np.save(self.tmp / rel, arr, allow_pickle=False)
        self.arrays[name] = {"file": rel, "dtype": arr.dtype.str, "shape": list(arr.shape)}

    def add_json(self, rel: str, obj: Any) -> None:
        (self.tmp / rel).write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")

    def add_text(self, rel: str, text: str) -> None:
        (self.tmp / rel).write_text(text, encoding="utf-8")

    def commit(self, manifest: dict[str, Any]) -> Path:
        files = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.tmp).as_posix()
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        full = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": versions(), **manifest, "arrays": self.arrays, "files": files}
        atomic_write_text(self.tmp / "manifest.json", json.dumps(full, indent=1))
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log.info("model written to %s", self.out)
        return self.out


def read_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelFormatError(f"model directory {str(d)!r} does not exist")
    mf = d / "manifest.json"
    if not mf.is_file():
        raise ModelFormatError(f"{str(d)!r} has no manifest.json: not a RETGEN model, or an "
                               "interrupted build")
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{str(mf)!r} is corrupt: {e}") from None
    if m.get("format") != FORMAT:
        raise ModelFormatError(f"{str(d)!r} is not a RETGEN model (format={m.get('format')!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{str(d)!r} has format_version {m.get('format_version')!r}; this "
                               f"RETGEN reads version {FORMAT_VERSION}: rebuild the model")
    return m


def verify_files(model_dir: Path, manifest: dict[str, Any]) -> None:
    for rel, meta in manifest["files"].items():
        p = model_dir / rel
        if not p.is_file():
            raise ModelFormatError(f"model file {rel!r} is missing from {str(model_dir)!r}")
        if p.stat().st_size != meta["bytes"]:
            raise ModelFormatError(f"model file {rel!r} has {p.stat().st_size} bytes, the "
                                   f"manifest says {meta['bytes']}: the file is corrupt")
        if sha256_file(p) != meta["sha256"]:
            raise ModelFormatError(f"model file {rel!r} fails its sha256 check: the file is corrupt")


def load_arrays(model_dir: Path, manifest: dict[str, Any], mmap: bool = True) -> dict[str, np.ndarray]:
    out = {}
    for name, meta in manifest["arrays"].items():
        p = model_dir / meta["file"]
        try:
            a = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"array {meta['file']!r} cannot be read: {e}") from None
        if a.dtype.str != meta["dtype"] or list(a.shape) != meta["shape"]:
            raise ModelFormatError(f"array {name!r} is {a.dtype.str}{list(a.shape)}, the manifest "
                                   f"says {meta['dtype']}{meta['shape']}")
        out[name] = a
    return out


def add_to_model(model_dir: str | os.PathLike, entries: dict[str, Any], subdirs: list[str]) -> dict:
    """Record new sub-directories (already written) and manifest entries in an existing model;
    the manifest is rewritten atomically, with checksums of the new files."""
    d = Path(model_dir)
    m = read_manifest(d)
    for sub in subdirs:
        m["files"] = {k: v for k, v in m["files"].items() if not k.startswith(sub + "/")}
        for p in sorted((d / sub).rglob("*")):
            if p.is_file():
                rel = p.relative_to(d).as_posix()
                m["files"][rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    m.update(entries)
    atomic_write_text(d / "manifest.json", json.dumps(m, indent=1))
    return m
