"""Float16 copies of a store's vectors on disk, read a few rows at a time.

A compressed :class:`~retgen_engine.docstore.DocumentStore` keeps only codes in RAM. With
``disk_vectors=True`` it also keeps every record's unit vector as float16 in a file and
re-scores the index's ``refine_factor * k`` candidates against those rows: a handful of
768-byte reads per query instead of the whole table in RAM (the design of DiskANN and of
faiss' on-disk inverted lists, where codes in RAM pick candidates and full vectors on disk
rank them).

Rows are append-only and addressed by row number. A saved store holds them as a real
``.npy`` (``disk_vectors.npy``); a loaded store memory-maps that file read-only and writes
new rows to an anonymous temporary file (deleted by the OS when closed, even after a
crash). Reads use ``os.pread``, which is safe from several threads.
"""
from __future__ import annotations

import logging
import mmap
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f2")
_CHUNK = 1 << 16


class DiskVectors:
    """Append-only float16 rows of width ``dim``: a read-only ``.npy`` base (optional) followed
    by rows appended to an anonymous temporary file in ``directory``."""

    def __init__(self, dim: int, directory: Optional[str | os.PathLike] = None,
                 base: Optional[np.ndarray] = None):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive int")
        if base is not None and (base.ndim != 2 or base.shape[1] != dim or base.dtype != DTYPE):
            raise ValueError(f"disk vectors have shape {base.shape} ({base.dtype}); expected "
                             f"[n, {dim}] float16 rows")
        self.dim = dim
        self.directory = None if directory is None else str(directory)
        self._base = base
        self._nbase = 0 if base is None else len(base)
        self._row_bytes = dim * DTYPE.itemsize
        self._file = tempfile.TemporaryFile(prefix="retgen-vectors-", dir=self.directory)
        self._ntail = 0

    def __len__(self) -> int:
        return self._nbase + self._ntail

    @property
    def appended_rows(self) -> int:
        """Rows appended after the base file (held in the temporary file)."""
        return self._ntail

    def disk_bytes(self) -> int:
        """Bytes of the rows on disk (the base file's rows and the appended rows)."""
        return len(self) * self._row_bytes

    def append(self, rows: np.ndarray) -> None:
        """Append rows (converted to float16) after the last one."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows have shape {rows.shape}; expected [n, {self.dim}]")
        off = self._ntail * self._row_bytes
        for s in range(0, len(rows), _CHUNK):  # bounded copies; pwrite may write less
            data = memoryview(np.ascontiguousarray(rows[s:s + _CHUNK], dtype=DTYPE)).cast("B")
            done = 0
            while done < len(data):
                done += os.pwrite(self._file.fileno(), data[done:], off + done)
            off += len(data)
        self._ntail += len(rows)  # rows past _ntail from a failed append are overwritten later

    def get(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] for the given row numbers (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row numbers must be in [0, {len(self)}), got "
                             f"[{rows.min()}, {rows.max()}]")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        in_base = rows < self._nbase
        if in_base.any():
            out[in_base] = self._base[rows[in_base]]
        fd = self._file.fileno()
        for j in np.flatnonzero(~in_base):
            off = int(rows[j] - self._nbase) * self._row_bytes
            out[j] = np.frombuffer(os.pread(fd, self._row_bytes, off), dtype=DTYPE)
        return out

    def iter_chunks(self, chunk: int = _CHUNK):
        """float16 blocks of consecutive rows, first to last."""
        for s in range(0, self._nbase, chunk):
            yield np.asarray(self._base[s:s + chunk])
        fd = self._file.fileno()
        for s in range(0, self._ntail, chunk):
            n = min(chunk, self._ntail - s)
            buf = os.pread(fd, n * self._row_bytes, s * self._row_bytes)
            yield np.frombuffer(buf, dtype=DTYPE).reshape(n, self.dim)

    def save(self, path: str | os.PathLike, keep: Optional[np.ndarray] = None) -> Path:
        """Write the rows (where the boolean mask ``keep`` is true, if given) to the ``.npy``
        file ``path`` (the caller renames it into place)."""
        path = Path(path)
        keep = None if keep is None else np.asarray(keep, dtype=bool)
        if keep is not None and len(keep) != len(self):
            raise ValueError(f"mask has {len(keep)} entries for {len(self)} rows")
        n = len(self) if keep is None else int(keep.sum())
        out = np.lib.format.open_memmap(path, mode="w+", dtype=DTYPE, shape=(n, self.dim))
        s = r = 0
        for block in self.iter_chunks():
            m = len(block)
            if keep is not None:
                block = block[keep[r:r + m]]
            r += m
            out[s:s + len(block)] = block
            s += len(block)
        out.flush()
        del out
        return path

    @classmethod
    def open(cls, path: str | os.PathLike, dim: int,
             directory: Optional[str | os.PathLike] = None) -> "DiskVectors":
        """Rows of the ``.npy`` file ``path``, memory-mapped read-only; appends go elsewhere."""
        return cls(dim, directory, np.load(path, mmap_mode="r", allow_pickle=False))

    def evict_cache(self) -> None:
        """Flush the appended rows and ask the OS to drop them from the page cache, so the
        next reads come from disk (cold-read benchmarks; Linux ``posix_fadvise``)."""
        fd = self._file.fileno()
        os.fsync(fd)
        if not hasattr(os, "posix_fadvise"):
            return
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        base = self._base
        if base is not None and getattr(base, "filename", None):
            mm = getattr(base, "_mmap", None)
            if mm is not None and hasattr(mm, "madvise"):  # unmap our pages, then drop them
                mm.madvise(mmap.MADV_DONTNEED)
            try:  # the file may have been renamed since it was mapped (a save's temp dir)
                bfd = os.open(base.filename, os.O_RDONLY)
            except OSError:
                return
            try:
                os.posix_fadvise(bfd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(bfd)

    def close(self) -> None:
        self._file.close()
        self._base = None
        self._nbase = self._ntail = 0


__all__ = ["DiskVectors"]
