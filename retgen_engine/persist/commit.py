"""One commit protocol for every directory RETGEN writes: models, learned parts, docstores.

A committed directory ``D`` holds complete versions and a pointer to the live one, in the manner
of LevelDB's ``CURRENT`` file::

    D/CURRENT              {"format": "retgen-commit", "version": "v-000004", "manifest_sha256": ...}
    D/v-000004/            the live version: its files and a manifest.json
    D/.v-000005.tmp-<id>/  a version being written (never read)
    D/.lock                serializes writers (flock)

A writer builds the new version in a temporary directory (every file fsync'd), renames it to its
final name, then replaces ``CURRENT`` atomically (temp file, fsync, rename, fsync of ``D``): that
rename is the commit point. Until it, readers resolve the previous version; after it, the new
one; a process killed at any moment leaves one of the two, never neither. The next writer, after
its own commit, removes stale temporary directories and superseded versions. A directory written
before this protocol (a ``manifest.json`` at the top and no ``CURRENT``) is read as one version
and replaced by the first commit into it.

``RETGEN_FAULT_AT=<step>`` in the environment makes a writer kill itself (SIGKILL) when it
reaches that step (:data:`STEPS`), or raise ``KeyboardInterrupt`` there (as Ctrl-C would) with
``RETGEN_FAULT_MODE=interrupt``: the fault-injection tests use it to interrupt every step.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import uuid
from pathlib import Path
from typing import Optional

from .errors import ModelFormatError

log = logging.getLogger(__name__)

POINTER = "CURRENT"
POINTER_FORMAT = "retgen-commit"
MANIFEST = "manifest.json"
_VERSION = re.compile(r"^v-(\d{6,})$")
#: the steps of a commit, in order (for fault injection)
STEPS = ("begin", "files-written", "version-renamed", "pointer-written", "committed", "cleaned")


class CommitError(ModelFormatError):
    """A committed directory's pointer or layout is damaged."""


def checkpoint(step: str) -> None:
    """Fault injection: die here, as a killed process would, if the environment asks to."""
    if os.environ.get("RETGEN_FAULT_AT") == step:
        if os.environ.get("RETGEN_FAULT_MODE") == "interrupt":
            raise KeyboardInterrupt(f"fault injected at commit step {step!r}")
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(d: Path) -> None:
    for p in sorted(d.rglob("*"), reverse=True):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(d)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def read_pointer(d: Path) -> Optional[dict]:
    """The parsed ``CURRENT`` of ``d`` (None when ``d`` has none: a legacy or new directory)."""
    p = Path(d) / POINTER
    if not p.is_file():
        return None
    try:
        ptr = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CommitError(f"{str(p)!r} is not a valid commit pointer: {e}") from None
    if (not isinstance(ptr, dict) or ptr.get("format") != POINTER_FORMAT
            or not isinstance(ptr.get("version"), str) or not _VERSION.match(ptr["version"])
            or not isinstance(ptr.get("manifest_sha256"), str)):
        raise CommitError(f"{str(p)!r} is not a valid commit pointer (format, version, "
                          f"manifest_sha256 expected): {str(ptr)[:200]}")
    return ptr


def resolve(d: str | os.PathLike) -> Path:
    """The directory holding the live version of ``d``: ``d/<version>`` for a committed
    directory (its manifest checked against the pointer), ``d`` itself for a legacy one."""
    d = Path(d)
    ptr = read_pointer(d)
    if ptr is None:
        return d
    v = d / ptr["version"]
    mf = v / MANIFEST
    if not mf.is_file():
        raise CommitError(f"{str(d)!r}: the live version {ptr['version']!r} has no {MANIFEST}")
    if _sha256(mf) != ptr["manifest_sha256"]:
        raise CommitError(f"{str(mf)!r} fails the sha256 its commit pointer records: the "
                          "manifest was changed or damaged")
    return v


def is_committed_or_legacy(d: Path, legacy_marker: str = MANIFEST) -> bool:
    """Whether ``d`` is a directory this protocol may replace (a committed one, or a legacy
    one with ``legacy_marker`` at the top)."""
    return (d / POINTER).is_file() or (d / legacy_marker).is_file()


class Commit:
    """Write a new version of directory ``target``::

        with Commit(target) as c:
            (c.path / "a.npy").write_bytes(...)   # files of the new version
            c.commit()                            # manifest.json must be in c.path by now

    Leaving the block without :meth:`commit` removes the temporary directory; the previous
    version stays live."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self._created = not self.target.exists()  # an aborted first commit leaves no directory
        self.target.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.target / ".lock", "a+")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.committed = False
        self.path = self.target / ".unused"
        try:
            self.previous: Optional[Path] = None
            try:
                if (self.target / POINTER).exists() or (self.target / MANIFEST).is_file():
                    self.previous = resolve(self.target)
            except CommitError as e:  # a damaged pointer: this commit replaces it
                log.warning("%s; writing a new version over it", e)
            n = [int(m.group(1)) for p in self.target.iterdir() if (m := _VERSION.match(p.name))]
            self.version = f"v-{max(n, default=0) + 1:06d}"
            self.path = self.target / f".{self.version}.tmp-{uuid.uuid4().hex[:8]}"
            self.path.mkdir()
            checkpoint("begin")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __enter__(self) -> "Commit":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.committed and self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            if not self.committed and self._created:
                _remove(self.target / ".lock")
                try:
                    self.target.rmdir()
                except OSError:  # another writer has started meanwhile
                    pass
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def link(self, src: Path, rel: str) -> None:
        """Put file ``src`` (of the previous version) into the new one as ``rel``, without
        copying its bytes where the file system allows a hard link."""
        dst = self.path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def commit(self) -> Path:
        """Make the new version live (atomically); returns its directory."""
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise CommitError(f"commit into {str(self.target)!r} without a {MANIFEST}")
        fsync_tree(self.path)
        checkpoint("files-written")
        final = self.target / self.version
        os.rename(self.path, final)
        fsync_dir(self.target)
        checkpoint("version-renamed")
        ptr = {"format": POINTER_FORMAT, "version": self.version,
               "manifest_sha256": _sha256(final / MANIFEST)}
        tmp = self.target / f".{POINTER}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(ptr))
            f.flush()
            os.fsync(f.fileno())
        checkpoint("pointer-written")
        os.replace(tmp, self.target / POINTER)  # the commit point
        fsync_dir(self.target)
        self.committed = True
        self.path = final
        checkpoint("committed")
        self._clean()
        checkpoint("cleaned")
        log.info("committed %s (%s)", self.target, self.version)
        return final

    def _clean(self) -> None:
        """Remove stale temporary files, a legacy layout's files and superseded versions but
        the one just replaced (a reader that resolved it a moment ago still finds its files)."""
        keep = {POINTER, ".lock", self.version}
        if self.previous is not None and self.previous != self.target:
            keep.add(self.previous.name)
        for p in self.target.iterdir():
            if p.name in keep:
                continue
            if _VERSION.match(p.name) or p.name.startswith((".v-", f".{POINTER}.tmp-")):
                _remove(p)
        if self.previous == self.target:  # the legacy version lived at the top: its own files
            self._clean_legacy()

    def _clean_legacy(self) -> None:
        try:
            listed = json.loads((self.target / MANIFEST).read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            listed = {}
        for rel in [*listed, MANIFEST]:
            if isinstance(rel, str) and ".." not in Path(rel).parts and not Path(rel).is_absolute():
                _remove(self.target / rel)
        for d in sorted((p for p in self.target.rglob("*") if p.is_dir()), reverse=True):
            if _VERSION.match(d.relative_to(self.target).parts[0]):
                continue  # inside a committed version
            try:
                d.rmdir()  # the legacy layout's directories, once empty
            except OSError:
                pass


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except OSError:  # pragma: no cover - already gone
            pass
