"""The vector rows of a :class:`~retgen_engine.docstore.DocumentStore`, behind one interface.

Every record has one row, and rows are kept in ascending int-id order (ids only grow, so an
append keeps the order and a row is found by binary search). What a row holds depends on the
storage mode:

- ``"raw"`` (:class:`RawRows`): the unit vector, float32 or float16 (``vector_dtype``);
- ``"codes"`` (:class:`CodecRows`): a refine code of a faiss codec trained once on the raw
  vectors (:mod:`retgen_engine.docstore.codes`), decoded and renormalized when read;
- ``"in-index"`` (:class:`InIndexRows`): the IVF list number of the record, whose only code is
  in the faiss index itself; read by decoding that code (``reconstruct_from_offset``);
- ``"disk"`` (:class:`DiskRows`): ``"in-index"`` plus the unit vector as float16 in a file
  (:mod:`retgen_engine.docstore.diskvectors`), which is what a read returns.

:class:`VectorRows` is the interface the store and :mod:`.persist` use:
:meth:`~VectorRows.append`, :meth:`~VectorRows.get` (unit float32 vectors for re-scoring, MMR
and energy),
:meth:`~VectorRows.delete` and :meth:`~VectorRows.compact`, :meth:`~VectorRows.save` and
:func:`load_rows` (each mode writes and reads its own files), and sizes. Rows are not
thread-safe: the store's lock guards every call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from . import codes as refine
from .diskvectors import DiskVectors
from .formats import (CODEC_FILE, CODES_FILE, CODES_FORMAT_VERSION, DISK_FILE,
                      DISK_FORMAT_VERSION, FORMAT_VERSION, IDS_FILE, IN_INDEX_FORMAT_VERSION,
                      LISTS_FILE, VECTORS_FILE)
from .ranking import unit_rows
from ..persist.modeldir import safe_path
from ..search.index import FaissIndex, drop_precomputed_table, table_bytes


class VectorRows:
    """Per-record rows in ascending int-id order, with deletion marks until :meth:`compact`.

    This base class keeps the row ids, the liveness flags and the payload array (one entry per
    row), grown together; a subclass says what a payload row is and how it is read back.
    """

    mode: ClassVar[str] = ""
    format_version: ClassVar[int] = 0
    #: the rows hold IVF list numbers; the codes are the index's own (one representation)
    in_index: ClassVar[bool] = False
    #: faiss can decode the rows in the same call as a search (``search_and_reconstruct``)
    decoded_by_index: ClassVar[bool] = False

    def __init__(self, dim: int, data: np.ndarray, row_ids: np.ndarray):
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if len(data) != len(row_ids):
            raise ValueError(f"{len(data)} vector rows for {len(row_ids)} ids")
        self.dim = dim
        self._data = data
        self._row_ids = row_ids
        self._alive = np.ones(len(row_ids), dtype=bool)
        self._n = len(row_ids)

    # -- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Rows held, deleted ones included until :meth:`compact`."""
        return self._n

    def live(self) -> int:
        return int(self._alive[:self._n].sum())

    def ids(self) -> np.ndarray:
        """The int id of every row (a view; after :meth:`compact` all of them are live)."""
        return self._row_ids[:self._n]

    @property
    def refine_spec(self) -> Optional[str]:
        return None

    def nbytes(self) -> int:
        """RAM of the payload, row ids and liveness flags of the rows held (and the codec)."""
        n = self._n
        return int(self._data[:n].nbytes) + int(self._row_ids[:n].nbytes) + int(
            self._alive[:n].nbytes)

    def table_bytes(self) -> int:
        """RAM of a codec's precomputed distance table (0: none is kept)."""
        return 0

    def disk_bytes(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return {"rows": self._n, "live_rows": self.live(), "row_dtype": str(self._data.dtype),
                "row_bytes": int(self._data.dtype.itemsize * np.prod(self._data.shape[1:])),
                "disk_rows": 0, "disk_appended_rows": 0}

    # -- mutation ------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, iids: np.ndarray) -> Optional[np.ndarray]:
        """Add rows for unit ``vectors`` under the new (larger than every held) ``iids``.
        Returns the IVF lists the index must file them under (in-index rows), else None."""
        self._put(self._encode(vectors), iids)
        return None

    def delete(self, iids: np.ndarray) -> None:
        """Mark the rows of the sorted held ``iids`` dead (dropped by :meth:`compact`)."""
        self._alive[np.searchsorted(self._row_ids[:self._n], iids)] = False

    def compact(self) -> None:
        """Drop dead rows."""
        live = self._alive[:self._n]
        if live.all():
            return
        self._data = np.ascontiguousarray(self._data[:self._n][live])
        self._row_ids = np.ascontiguousarray(self._row_ids[:self._n][live])
        self._n = len(self._row_ids)
        self._alive = np.ones(self._n, dtype=bool)

    def close(self) -> None:
        """Release files (disk rows); the rows are unusable afterwards."""

    def evict_cache(self) -> None:
        """Drop rows kept on disk from the OS page cache (no-op without them)."""

    # -- reads ---------------------------------------------------------------------------
    def get(self, iids: np.ndarray) -> np.ndarray:
        """Unit float32 vectors [len(iids), dim] for held int ids (any order)."""
        rows = np.searchsorted(self._row_ids[:self._n], iids)
        return self._decode(rows, iids)

    def vectors(self) -> np.ndarray:
        """float32 vectors of every row in order (after :meth:`compact`): for training."""
        return self.get(self.ids())

    # -- files ---------------------------------------------------------------------------
    def save(self, d: Path) -> dict[str, Any]:
        """Compact, write the rows' files into directory ``d`` and return their manifest
        entries (``refine_codec``, ``in_index_codes``, ``disk_vectors_file``)."""
        self.compact()
        return self._write(d)

    def _write(self, d: Path) -> dict[str, Any]:
        np.save(d / self._payload_file(), self._data[:self._n], allow_pickle=False)
        np.save(d / IDS_FILE, self._row_ids[:self._n], allow_pickle=False)
        return {"refine_codec": None, "in_index_codes": self.in_index, "disk_vectors_file": None}

    # -- what a subclass defines -----------------------------------------------------------
    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, rows: np.ndarray, iids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _payload_file(self) -> str:
        raise NotImplementedError

    def _put(self, payload: np.ndarray, iids: np.ndarray) -> None:
        need = self._n + len(payload)
        if need > len(self._data):
            cap = max(need, 2 * len(self._data), 64)
            self._data = _grow(self._data, cap)
            self._row_ids = _grow(self._row_ids, cap)
            self._alive = _grow(self._alive, cap)
        self._data[self._n:need] = payload
        self._row_ids[self._n:need] = iids
        self._alive[self._n:need] = True
        self._n = need


class RawRows(VectorRows):
    """The unit vectors themselves (float32 or float16)."""

    mode = "raw"
    format_version = FORMAT_VERSION

    def __init__(self, dim: int, dtype: str = "float32", data: Optional[np.ndarray] = None,
                 row_ids: Optional[np.ndarray] = None):
        if data is None:
            data, row_ids = np.zeros((0, dim), dtype=dtype), np.zeros(0, dtype=np.int64)
        super().__init__(dim, data, row_ids)

    def _encode(self, vectors):
        return vectors

    def _decode(self, rows, iids):
        return self._data[rows].astype(np.float32)

    def vectors(self) -> np.ndarray:
        return self._data[:self._n].astype(np.float32)

    def _payload_file(self) -> str:
        return VECTORS_FILE


class CodecRows(VectorRows):
    """Refine codes (uint8) of a trained faiss codec; reads decode and renormalize them."""

    mode = "codes"
    format_version = CODES_FORMAT_VERSION

    def __init__(self, dim: int, codec, spec: str, codes: np.ndarray, row_ids: np.ndarray):
        if codes.dtype != np.uint8 or codes.shape[1:] != (codec.sa_code_size(),):
            raise ValueError(f"refine codes have shape {codes.shape} ({codes.dtype}), "
                             f"expected uint8 rows of {codec.sa_code_size()} bytes")
        super().__init__(dim, codes, row_ids)
        self.codec = codec
        self.spec = spec

    @property
    def refine_spec(self) -> Optional[str]:
        return self.spec

    def nbytes(self) -> int:
        import faiss

        return super().nbytes() + int(faiss.serialize_index(self.codec).nbytes)

    def table_bytes(self) -> int:
        return table_bytes(self.codec)

    def _encode(self, vectors):
        return self.codec.sa_encode(vectors)

    def _decode(self, rows, iids):
        return refine.decode(self.codec, self._data[rows], self.dim)

    def vectors(self) -> np.ndarray:
        return refine.decode(self.codec, self._data[:self._n], self.dim)

    def _payload_file(self) -> str:
        return CODES_FILE

    def _write(self, d: Path) -> dict[str, Any]:
        import faiss

        out = super()._write(d)
        faiss.write_index(self.codec, str(d / CODEC_FILE))
        out["refine_codec"] = {"file": CODEC_FILE, "spec": self.spec, "codes": CODES_FILE}
        return out


class InIndexRows(VectorRows):
    """The IVF list number of each row; the record's only code is in ``index`` (trained once,
    so a list number never changes)."""

    mode = "in-index"
    format_version = IN_INDEX_FORMAT_VERSION
    in_index = True
    decoded_by_index = True

    def __init__(self, index: FaissIndex, lists: np.ndarray, row_ids: np.ndarray):
        if lists.ndim != 1 or lists.dtype.kind not in "iu":
            raise ValueError(f"{LISTS_FILE} has shape {lists.shape} ({lists.dtype}), "
                             "expected one integer list number per record")
        super().__init__(index.dim, lists, row_ids)
        self.index = index

    @staticmethod
    def list_dtype(nlist: int) -> type:
        return np.uint16 if nlist <= 1 << 16 else np.int32

    def append(self, vectors, iids):
        lists = self.index.assign(vectors)  # assigned once, here
        self._put(lists, iids)
        return lists

    def _decode(self, rows, iids):
        return unit_rows(self.index.reconstruct_from_lists(iids, self._data[rows]))

    def _payload_file(self) -> str:
        return LISTS_FILE


class DiskRows(InIndexRows):
    """In-index rows whose reads come from float16 unit vectors on disk (``disk``)."""

    mode = "disk"
    format_version = DISK_FORMAT_VERSION
    decoded_by_index = False

    def __init__(self, index: FaissIndex, lists: np.ndarray, row_ids: np.ndarray,
                 disk: DiskVectors):
        super().__init__(index, lists, row_ids)
        if len(disk) != len(lists):
            raise ValueError(f"{len(disk)} disk vectors for {len(lists)} records")
        self.disk = disk

    def disk_bytes(self) -> int:
        return self.disk.disk_bytes()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "disk_rows": len(self.disk),
                "disk_appended_rows": self.disk.appended_rows}

    def append(self, vectors, iids):
        lists = self.index.assign(vectors)
        self.disk.append(vectors)  # the only step that can fail: before any state changes
        self._put(lists, iids)
        return lists

    def compact(self) -> None:
        raise RuntimeError("a store with disk vectors compacts only when saved")

    def close(self) -> None:
        self.disk.close()

    def evict_cache(self) -> None:
        self.disk.evict_cache()

    def _decode(self, rows, iids):
        return unit_rows(self.disk.get(rows))

    def save(self, d: Path) -> dict[str, Any]:
        """Write the live disk rows to ``d/disk_vectors.npy`` and switch onto that file: the
        rows then read it (memory-mapped; it stays valid through the rename) and the previous
        rows' file is released (no second copy left behind)."""
        n = self._n
        if len(self.disk) != n:
            raise RuntimeError(f"docstore holds {len(self.disk)} disk vectors for {n} rows; "
                               "refusing to save an inconsistent store")
        self.disk.save(d / DISK_FILE, keep=self._alive[:n])
        old = self.disk
        self.disk = DiskVectors.open(d / DISK_FILE, self.dim, old.directory)
        old.close()
        VectorRows.compact(self)  # the lists and ids of the live rows, as written above
        out = self._write(d)
        out["disk_vectors_file"] = DISK_FILE
        return out


#: the storage modes, in the order a store can pass through them
STORAGE_MODES = tuple(c.mode for c in (RawRows, CodecRows, InIndexRows, DiskRows))


def to_codes(raw: RawRows, codec, spec: str, codes: np.ndarray) -> CodecRows:
    """Compacted raw rows replaced by their refine ``codes``."""
    return CodecRows(raw.dim, codec, spec, codes, raw.ids())


def to_in_index(raw: RawRows, index: FaissIndex, lists: np.ndarray,
                disk: Optional[DiskVectors] = None) -> InIndexRows:
    """Compacted raw rows replaced by their IVF ``lists`` in ``index`` (and ``disk`` rows)."""
    lists = lists.astype(InIndexRows.list_dtype(index.nlist))
    if disk is not None:
        return DiskRows(index, lists, raw.ids(), disk)
    return InIndexRows(index, lists, raw.ids())


def load_rows(d: Path, manifest: dict, index: Optional[FaissIndex],
              disk_dir: Optional[str] = None) -> VectorRows:
    """The rows saved in directory ``d`` (described by ``manifest``); in-index rows need the
    loaded ``index``; rows added to disk rows later go to a temporary file in ``disk_dir``."""
    dim = manifest["dim"]
    row_ids = np.load(d / IDS_FILE, allow_pickle=False).astype(np.int64)
    codec = manifest.get("refine_codec")
    try:
        if codec is not None:
            import faiss

            c = faiss.read_index(str(safe_path(d, codec["file"], "docstore codec")))
            drop_precomputed_table(c)
            return CodecRows(dim, c, codec["spec"],
                             np.load(safe_path(d, codec["codes"], "docstore codes"), allow_pickle=False), row_ids)
        if manifest.get("in_index_codes"):
            lists = np.load(d / LISTS_FILE, allow_pickle=False)
            if index is None:
                raise ValueError("in-index codes without an index")
            if manifest.get("disk_vectors_file"):
                disk = DiskVectors.open(safe_path(d, manifest["disk_vectors_file"], "docstore disk rows"), dim, disk_dir)
                return DiskRows(index, lists, row_ids, disk)
            return InIndexRows(index, lists, row_ids)
        return RawRows(dim, data=np.load(d / VECTORS_FILE, allow_pickle=False), row_ids=row_ids)
    except ValueError as e:
        raise ValueError(f"docstore at {str(d)!r}: {e}") from None


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.zeros((cap,) + a.shape[1:], dtype=a.dtype)
    out[:len(a)] = a
    return out


__all__ = ["STORAGE_MODES", "VectorRows", "RawRows", "CodecRows", "InIndexRows", "DiskRows",
           "to_codes", "to_in_index", "load_rows"]
