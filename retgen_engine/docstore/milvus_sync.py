"""How a reader follows a Milvus collection's records (the document memory does, as on the faiss
store): :meth:`~ChangeTracking.items`, :meth:`~ChangeTracking.int_id`,
:attr:`~ChangeTracking.revision` and :meth:`~ChangeTracking.changes`, mixed into
:class:`~.milvus.MilvusStore`.

- Int ids. Milvus keys records by our string ids; the int ids are this client's: a record
  version (pk, seq) gets the next int when this client writes it or first sees it in an
  :meth:`items` scan (in ``seq`` order, so a fresh scan of the same data numbers it the same
  way). An upsert gives a new int, as in the faiss store. They are not stored in Milvus and
  another client numbers the same records its own way.
- Revision. Every write through this client bumps it at once. Writes by another client (another
  process, or another ``MilvusStore`` on the same collection) are found by a server-side check:
  ``count(*)`` against the records this client knows, and whether any record has a ``seq``
  above the newest one it knows; run when :attr:`revision` is read and ``revision_check_s``
  seconds (default 5; 0: every read; None: never) have passed, or at once by
  :meth:`check_external`. The check cannot see a replacement of an existing id by a client
  whose clock runs behind this one's when the count stays the same; a reader that must be
  exact rescans (:meth:`items`; ``PassageMemory.sync(force=True)``).
- Changes. :meth:`changes` gives the records this client wrote and the int ids it removed since
  a revision, from a bounded log of its own writes (the last 64 writes, 200,000 rows), so a
  reader need not rescan the collection after each add; None when it cannot say (an outside
  write was seen, the log was trimmed, or no scan has been made since this client attached).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Optional

from .milvus_collection import attach
from .milvus_expr import META, PK
from .records import Record

log = logging.getLogger(__name__)

REVISION_CHECK_S = 5.0  # seconds between server-side checks for other clients' writes
LOG_WRITES, LOG_ROWS = 64, 200_000  # the change log of this client's own writes
BATCH = 1000            # rows per page of a check


class ChangeTracking:
    """Int ids, revision and change log of a :class:`~.milvus.MilvusStore` (module docstring);
    the store provides ``_lock``, ``_client``, ``collection``, ``_ready``, ``__len__`` and
    ``_scan_rows``."""

    def _init_tracking(self) -> None:
        self._revision = 0
        self._view: dict[str, tuple[int, int]] = {}  # pk -> (seq, int id) as this client knows
        self._view_complete = True  # the view is every record (false until a scan after attach)
        self._next_iid = 0
        self._max_seq = 0            # the newest seq this client wrote or saw
        self._fp_count: Optional[int] = None  # count(*) at the last check (view incomplete)
        self._log: deque = deque()   # (revision, added [(int id, Record)], removed [int id])
        self._log_rows = 0
        self._log_base: Optional[int] = 0  # changes(since) can answer for since >= this
        self._checked_at = time.monotonic()

    def int_id(self, id: str) -> Optional[int]:
        """This client's int id of record ``id`` (module docstring), None when it does not know
        the record (never written or scanned by this client, or deleted)."""
        got = self._view.get(id)
        return None if got is None else got[1]

    @property
    def revision(self) -> int:
        """A counter that changes with every write through this client and, checked every
        ``revision_check_s`` seconds, with writes by other clients (module docstring)."""
        with self._lock:
            every = self.revision_check_s
            if every is not None and time.monotonic() - self._checked_at >= every:
                self.check_external()
            return self._revision

    def check_external(self) -> bool:
        """Ask Milvus now whether another client changed the collection since this client last
        looked (created or dropped it, or its count or newest ``seq`` differ from what this
        client knows); when it did, bump :attr:`revision` and return True."""
        with self._lock:
            self._checked_at = time.monotonic()
            exists = self._client.has_collection(self.collection)
            if not self._ready:
                if not exists:
                    return False
                attach(self)  # made by another client
                changed = True
            elif not exists:  # dropped by another client
                self._ready, self._index_report = False, None
                changed = True
            else:
                n = len(self)
                newer = self._client.query(self.collection, filter=f"seq > {self._max_seq}",
                                           output_fields=["seq"], limit=BATCH)
                expected = len(self._view) if self._view_complete else self._fp_count
                changed = bool(newer) or (expected is not None and n != expected)
                self._fp_count = n
                if newer:
                    self._max_seq = max(self._max_seq, max(int(r["seq"]) for r in newer))
                    self._last_seq = max(self._last_seq, self._max_seq)  # write above it
            if changed:
                self._outside_write()
            return changed

    def _outside_write(self, why: str = "was changed by another client") -> None:
        """Records changed in a way this client did not see: a new revision; the view and the
        change log are unknown until the next scan."""
        self._revision += 1
        self._view_complete, self._log_base = False, None
        self._log.clear()
        self._log_rows = 0
        log.info("docstore(milvus): collection %r %s (revision %d)", self.collection, why,
                 self._revision)

    def _logged(self, added: list, removed: list) -> None:
        """One write of this client: a new revision and its entry in the change log."""
        self._revision += 1
        if not self._view_complete:
            self._fp_count = None  # the next check takes the count afresh
        self._log.append((self._revision, added, removed))
        self._log_rows += len(added) + len(removed)
        while self._log and (len(self._log) > LOG_WRITES or self._log_rows > LOG_ROWS):
            rev, a, r = self._log.popleft()
            self._log_rows -= len(a) + len(r)
            if self._log_base is not None:
                self._log_base = rev

    def changes(self, since: int) -> Optional[tuple[int, list[tuple[int, Record]], list[int]]]:
        """``(revision, added, removed)``: the records written (int id, record) and the int ids
        removed since revision ``since``, net (an int id both added and removed in the window
        is in neither); None when this client cannot say (module docstring): read
        :meth:`items` then."""
        with self._lock:
            rev = self.revision
            if self._log_base is None or not isinstance(since, int) or not \
                    self._log_base <= since <= rev:
                return None
            added: list[tuple[int, Record]] = []
            removed: list[int] = []
            for r, a, d in self._log:
                if r > since:
                    added += a
                    removed += d
            gone = set(removed)
            return rev, [(i, rec) for i, rec in added if i not in gone], removed

    def items(self) -> list[tuple[int, Record]]:
        """(int id, record) of every record, in insertion order: a paged scan of the collection
        (``query_iterator``, 1000 rows a page). Records this client has not seen get the next
        int ids, in ``seq`` order; the scan makes this client's view of the collection exact
        again (its count and newest ``seq`` are what :meth:`check_external` compares)."""
        with self._lock:
            self._checked_at = time.monotonic()
            rows = self._scan_rows("", [PK, "seq", "text", META]) if self._ready else []
            for attempt in range(2):  # rows written by another client during the scan
                n = len(self) if self._ready else 0
                if n == len(rows):
                    break
                log.warning("docstore(milvus): a scan of %r read %d records, count(*) says %d "
                            "(another client writing?)%s", self.collection, len(rows), n,
                            "; scanning again" if attempt == 0 else "")
                if attempt == 0:
                    rows = self._scan_rows("", [PK, "seq", "text", META])
            view: dict[str, tuple[int, int]] = {}
            out = []
            for r in rows:
                pk, seq = r[PK], int(r["seq"])
                old = self._view.get(pk)
                if old is not None and old[0] == seq:
                    iid = old[1]
                else:
                    iid, self._next_iid = self._next_iid, self._next_iid + 1
                view[pk] = (seq, iid)
                out.append((iid, Record(pk, r.get("text", ""), dict(r.get(META) or {}))))
            self._view, self._view_complete = view, True
            self._max_seq = max([self._max_seq] + [s for s, _ in view.values()])
            self._last_seq = max(self._last_seq, self._max_seq)  # our next write is newer
            self._fp_count = n
            self._log.clear()
            self._log_rows, self._log_base = 0, self._revision
            return out
