"""Model directories: real ``.npy`` arrays (memory-mapped read-only), a faiss index file and
JSON files, described by a versioned ``manifest.json`` (dtype, shape and sha256 of every file,
and a sha256 of the manifest itself), written with the commit protocol of
:mod:`retgen_engine.persist.commit` (a complete new version, then an atomic pointer switch).
No pickle anywhere: arrays load with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional

import numpy as np

from .commit import MANIFEST, Commit, is_committed_or_legacy, resolve
from .errors import ModelFormatError

log = logging.getLogger(__name__)

FORMAT = "retgen-model"
FORMAT_VERSION = 1
SEAL = "manifest_sha256"  # the manifest's own checksum, over its other keys

__all__ = ["ModelFormatError", "ModelWriter", "read_manifest", "verify_files", "load_arrays",
           "add_to_model", "atomic_write_text", "sha256_file", "versions", "seal", "check_seal",
           "safe_path", "FORMAT", "FORMAT_VERSION"]


def atomic_write_text(path: Path, text: str) -> None:
    """One small file replaced atomically (temp file, fsync, rename)."""
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


# -- the manifest's own checksum --------------------------------------------------------------
def _digest(m: Mapping[str, Any]) -> str:
    body = {k: v for k, v in m.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def seal(m: dict[str, Any]) -> dict[str, Any]:
    """``m`` with its checksum (any edit of a value is then detected on load)."""
    return {**m, SEAL: _digest(m)}


def check_seal(m: Mapping[str, Any], where: str) -> None:
    if SEAL not in m:  # written before manifests carried their checksum
        log.warning("%s has no manifest checksum (written by an older RETGEN); its values are "
                    "not verified", where)
        return
    if m[SEAL] != _digest(m):
        raise ModelFormatError(f"{where} fails its own sha256 check: a value in it was edited "
                               "or damaged")


def safe_path(root: Path, rel: Any, what: str) -> Path:
    """``root / rel`` for a relative path that stays inside ``root``."""
    if not isinstance(rel, str) or not rel:
        raise ModelFormatError(f"{what}: {rel!r} is not a file name")
    pp = PurePosixPath(rel)
    if pp.is_absolute() or ".." in pp.parts or "\\" in rel or "\x00" in rel:
        raise ModelFormatError(f"{what}: path {rel!r} points outside the directory")
    return root / Path(*pp.parts)


def _describe_files(root: Path) -> dict[str, dict]:
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(root.rglob("*")) if p.is_file()}


class ModelWriter:
    """Collects the files of a new model version; :meth:`commit` makes it live atomically."""

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"output {str(self.out)!r} exists and is not a directory")
        if self.out.is_dir() and any(p.name != ".lock" for p in self.out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"output {str(self.out)!r} exists and is not empty; "
                                      "choose another path or pass overwrite=True")
            if not is_committed_or_legacy(self.out):
                raise FileExistsError(f"output {str(self.out)!r} is not a RETGEN model; "
                                      "refusing to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._commit = Commit(self.out)
        self.tmp = self._commit.path
        (self.tmp / "arrays").mkdir()
        self.arrays: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> "ModelWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._commit.__exit__(exc_type, exc, tb)  # not committed: the temp version goes

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
        full = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": versions(), **manifest, "arrays": self.arrays,
                "files": _describe_files(self.tmp)}
        (self.tmp / MANIFEST).write_text(json.dumps(seal(full), indent=1), encoding="utf-8")
        self._commit.commit()
        log.info("model written to %s", self.out)
        return self.out


def read_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The live version's manifest, checked (format, version, its own checksum, its keys)."""
    d = Path(model_dir)
    if not d.exists():
        raise ModelFormatError(f"model directory {str(d)!r} does not exist")
    if not d.is_dir():
        raise ModelFormatError(f"{str(d)!r} is a file, not a model directory")
    v = resolve(d)
    mf = v / MANIFEST
    if not mf.is_file():
        raise ModelFormatError(f"{str(d)!r} has no manifest.json: not a RETGEN model, or an "
                               "interrupted build")
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{str(mf)!r} is corrupt: {e}") from None
    if not isinstance(m, dict):
        raise ModelFormatError(f"{str(mf)!r} is corrupt: not a JSON object")
    if m.get("format") != FORMAT:
        raise ModelFormatError(f"{str(d)!r} is not a RETGEN model (format={m.get('format')!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{str(d)!r} has format_version {m.get('format_version')!r}; this "
                               f"RETGEN reads version {FORMAT_VERSION}: rebuild the model")
    check_seal(m, repr(str(mf)))
    for key, kind in (("files", dict), ("arrays", dict)):
        if not isinstance(m.get(key), kind):
            raise ModelFormatError(f"{str(mf)!r}: {key!r} is missing or not a {kind.__name__}")
    return m


def verify_files(model_dir: Path, manifest: dict[str, Any]) -> None:
    root = resolve(model_dir)
    for rel, meta in manifest["files"].items():
        p = safe_path(root, rel, f"model {str(model_dir)!r}")
        if not isinstance(meta, dict) or not {"bytes", "sha256"} <= set(meta):
            raise ModelFormatError(f"manifest entry of {rel!r} lacks bytes/sha256")
        if not p.is_file():
            raise ModelFormatError(f"model file {rel!r} is missing from {str(model_dir)!r}")
        if p.stat().st_size != meta["bytes"]:
            raise ModelFormatError(f"model file {rel!r} has {p.stat().st_size} bytes, the "
                                   f"manifest says {meta['bytes']}: the file is corrupt")
        if sha256_file(p) != meta["sha256"]:
            raise ModelFormatError(f"model file {rel!r} fails its sha256 check: the file is corrupt")


def load_arrays(model_dir: Path, manifest: dict[str, Any], mmap: bool = True) -> dict[str, np.ndarray]:
    root = resolve(model_dir)
    out = {}
    for name, meta in manifest["arrays"].items():
        if not isinstance(meta, dict) or not {"file", "dtype", "shape"} <= set(meta):
            raise ModelFormatError(f"manifest entry of array {name!r} lacks file/dtype/shape")
        p = safe_path(root, meta["file"], f"array {name!r}")
        try:
            a = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"array {meta['file']!r} cannot be read: {e}") from None
        if a.dtype.str != meta["dtype"] or list(a.shape) != meta["shape"]:
            raise ModelFormatError(f"array {name!r} is {a.dtype.str}{list(a.shape)}, the manifest "
                                   f"says {meta['dtype']}{meta['shape']}")
        # a plain ndarray view of the mapping: indexing a np.memmap makes a memmap object per
        # lookup (its __array_finalize__ was a tenth of a generation step)
        out[name] = np.asarray(a) if mmap else a
    return out


def add_to_model(model_dir: str | os.PathLike, entries: dict[str, Any],
                 modules: Optional[Mapping[str, Any]] = None) -> dict:
    """A new version of a model: the files of the live one (hard-linked, not copied), the
    ``modules`` (name -> a SavableModule, written as ``name/``, replacing any old one) and
    manifest ``entries``, committed at once; returns the new manifest."""
    d = Path(model_dir)
    modules = dict(modules or {})
    read_manifest(d)  # a model at all (clear error before taking the writers' lock)
    with Commit(d) as c:
        m = read_manifest(d)  # the live version, under the lock
        files = {}
        for rel, meta in m["files"].items():
            if rel.split("/", 1)[0] not in modules:
                c.link(safe_path(c.previous, rel, f"model {str(d)!r}"), rel)
                files[rel] = meta
        for name, module in modules.items():
            module.write_into(c.path / name)
            files.update({f"{name}/{k}": v for k, v in _describe_files(c.path / name).items()})
        m = {k: v for k, v in m.items() if k not in ("files", SEAL)}
        m.update(entries)
        m["files"] = dict(sorted(files.items()))
        m = seal(m)
        (c.path / MANIFEST).write_text(json.dumps(m, indent=1), encoding="utf-8")
        c.commit()
    return m
