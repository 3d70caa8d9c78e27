"""N-gram statistics of passages, looked up for the passages a query retrieved.

For every passage and every order n = 1..N the table holds one entry per token position t of
the passage (t >= n - 1): the key ``pid << 40 | h(x[t-n+1:t])``, the hash of the n - 1 tokens
before t within passage ``pid`` (an empty history for n = 1), and the token ``x[t]``. Entries are
sorted by (key, token), so for a history h and a passage j one binary search gives

    c_j(h)    = how many times h is followed by a token in passage j   (the key's range)
    c_j(h, w) = how many times h is followed by w                      (a search inside it)

and the distinct continuations of h are the range's tokens. A retrieved set of passages with
weights w_j (summing to 1) gives, per order,

    p_n(w | h) = sum_j w_j c_j(h, w) / sum_j w_j c_j(h)

normalized over the whole vocabulary wherever some passage holds h. The stream scorer asks for
one target per position (:meth:`NGramTable.target_counts`), a generation step for the whole
distribution (:meth:`NGramTable.dense_counts`); both read the same ranges, so they agree exactly.

Histories are compared by a 40-bit hash of their tokens inside one passage (128 positions per
passage: a false match has probability about 1e-10 per lookup); both paths use the same keys.
Tables are kept in segments (one per :meth:`add`) and merged when there are too many.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

PID_SHIFT = 40
TOKEN_BITS = 24
MAX_PID = (1 << (63 - PID_SHIFT)) - 1
MAX_TOKEN = (1 << TOKEN_BITS) - 1
MAX_SEGMENTS = 8

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_R = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
               0x27D4EB2F165667C5, 0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB,
               0x8EBC6AF09C88C6E3, 0x589965CC75374CC3], dtype=np.uint64)
MAX_ORDER = len(_R)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64, wrapping)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def history_hashes(x: np.ndarray, order: int) -> list[np.ndarray]:
    """[m] for m = 0..order-1: 40-bit hashes of the m tokens before each end position e
    (x[e-m:e]), as int64 arrays of len(x) + 1 (entries with e < m are meaningless)."""
    x = np.asarray(x, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = np.full(len(x) + 1, 0x2545F4914F6CDD1D, dtype=np.uint64)
        out = [(h >> np.uint64(64 - PID_SHIFT)).astype(np.int64)]
        xu = (x + 1).astype(np.uint64)
        for m in range(1, order):
            nh = h.copy()
            # positions e >= m only (none when the passage is shorter than m - 1 tokens)
            nh[m:] = _mix(h[m:] + xu[: max(len(x) + 1 - m, 0)] * _R[m - 1])
            h = nh
            out.append((h >> np.uint64(64 - PID_SHIFT)).astype(np.int64))
    return out


@dataclass
class _Segment:
    keys: list[np.ndarray]   # per order: sorted pid << 40 | hash
    comp: list[np.ndarray]   # per order: group rank << 24 | token, in the same order (sorted)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for arrs in (self.keys, self.comp) for a in arrs)


def _build_segment(passages: list[tuple[int, np.ndarray]], order: int) -> _Segment:
    keys, comp = [], []
    per_order_keys: list[list[np.ndarray]] = [[] for _ in range(order)]
    per_order_tok: list[list[np.ndarray]] = [[] for _ in range(order)]
    for pid, x in passages:
        x = np.asarray(x, dtype=np.int64)
        hs = history_hashes(x, order)
        for m in range(order):  # order n = m + 1: targets t >= m, history ends at t
            if len(x) <= m:
                continue
            t = np.arange(m, len(x))
            per_order_keys[m].append((np.int64(pid) << PID_SHIFT) | hs[m][t])
            per_order_tok[m].append(x[t])
    for m in range(order):
        k = np.concatenate(per_order_keys[m]) if per_order_keys[m] else np.zeros(0, np.int64)
        y = np.concatenate(per_order_tok[m]) if per_order_tok[m] else np.zeros(0, np.int64)
        o = np.lexsort((y, k))
        k, y = k[o], y[o]
        g = np.cumsum(np.concatenate([[0], (k[1:] != k[:-1]).astype(np.int64)])) if len(k) else k
        keys.append(k)
        comp.append((g << TOKEN_BITS) | y)
    return _Segment(keys, comp)


class NGramTable:
    """The n-gram tables of a set of passages (orders 1..``order``), in segments."""

    def __init__(self, order: int = 5):
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order={order}: must be in [1, {MAX_ORDER}]")
        self.order = order
        self._segments: list[_Segment] = []
        self._passages: dict[int, np.ndarray] = {}  # pid -> tokens (the source of the tables)

    def __len__(self) -> int:
        return len(self._passages)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._segments) + sum(x.nbytes for x in self._passages.values())

    def tokens(self, pid: int) -> np.ndarray:
        return self._passages[pid]

    def pids(self) -> list[int]:
        return list(self._passages)

    @property
    def total_tokens(self) -> int:
        return sum(len(x) for x in self._passages.values())

    def add(self, passages: list[tuple[int, np.ndarray]]) -> None:
        """Add passages ``(pid, token ids)``; pids must be new."""
        passages = [(int(p), np.asarray(x, dtype=np.int64)) for p, x in passages]
        for p, x in passages:
            if not 0 <= p <= MAX_PID:
                raise ValueError(f"passage id {p} outside [0, {MAX_PID}]")
            if p in self._passages:
                raise ValueError(f"passage id {p} is already in the table")
            if len(x) and (x.min() < 0 or x.max() > MAX_TOKEN):
                raise ValueError(f"passage {p}: token ids must be in [0, {MAX_TOKEN}]")
        if not passages:
            return
        for p, x in passages:
            self._passages[p] = x
        self._segments.append(_build_segment(passages, self.order))
        if len(self._segments) > MAX_SEGMENTS:
            self.compact()

    def remove(self, pids) -> None:
        """Forget passages (their entries go at the next :meth:`compact`; a passage that is
        not retrieved contributes nothing meanwhile)."""
        for p in pids:
            self._passages.pop(int(p), None)

    def compact(self) -> None:
        """One segment over the live passages."""
        self._segments = [_build_segment(sorted(self._passages.items()), self.order)]

    # -- lookups -----------------------------------------------------------------------
    def _ranges(self, seg: _Segment, m: int, q: np.ndarray, live: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(first entry, count) of each key ``q`` in ``seg``'s order-``m`` table, searched only
        where ``live`` (0 elsewhere). An m-token history followed by a token in a passage
        implies its last m - 1 tokens are too, so a passage without the shorter history is
        not searched for the longer one (most of a query's passages, from order 3 on)."""
        a, h = np.zeros(q.shape, np.int64), np.zeros(q.shape, np.int64)
        if live.any():
            keys, qv = seg.keys[m], q[live]
            lo = np.searchsorted(keys, qv, "left")
            a[live], h[live] = lo, np.searchsorted(keys, qv, "right") - lo
        return a, h

    def _queries(self, seq: np.ndarray, pos: np.ndarray, pids: np.ndarray
                 ) -> tuple[list[np.ndarray], np.ndarray]:
        """Per order: the keys [n, K] of each position's history in each retrieved passage
        (-1 where the history is not available), and the mask of valid passages [n, K]."""
        hs = history_hashes(seq, self.order)
        ok = pids >= 0
        out = []
        for m in range(self.order):
            q = (np.maximum(pids, 0).astype(np.int64) << PID_SHIFT) | hs[m][pos][:, None]
            out.append(np.where(ok & (pos >= m)[:, None], q, -1))
        return out, ok

    def target_counts(self, seq: np.ndarray, pos: np.ndarray, pids: np.ndarray,
                      weights: np.ndarray, targets: np.ndarray, per_passage: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For positions ``pos`` of ``seq`` (history seq[pos-n+1:pos]) with retrieved passages
        ``pids`` [n, K] (-1: none) weighted ``weights`` [n, K]: per order [N, n] the weighted
        count of the history followed by ``targets``, the weighted count of the history, and
        the raw count of the history over the passages (``per_passage``: [N, n, K], each
        passage's weighted counts apart)."""
        seq = np.asarray(seq, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.int64)
        n = len(pos)
        shape = (self.order, n, pids.shape[1]) if per_passage else (self.order, n)
        F, H, C = (np.zeros(shape) for _ in range(3))
        if not self._segments or n == 0:
            return F, H, C
        qs, ok = self._queries(seq, pos, pids)
        w = np.where(ok, weights, 0.0)
        t = np.asarray(targets, dtype=np.int64)[:, None]
        seen = np.ones(pids.shape, bool)  # the passage holds the shorter history
        for m in range(self.order):
            q = qs[m]
            live, found = (q >= 0) & seen, np.zeros(q.shape, bool)
            for seg in self._segments:
                a, h = self._ranges(seg, m, q, live)
                hit = h > 0
                found |= hit
                f = np.zeros(q.shape, dtype=np.int64)
                if hit.any():
                    g = seg.comp[m][a[hit]] >> TOKEN_BITS
                    c = (g << TOKEN_BITS) | np.broadcast_to(t, q.shape)[hit]
                    f[hit] = (np.searchsorted(seg.comp[m], c, "right")
                              - np.searchsorted(seg.comp[m], c, "left"))
                if per_passage:
                    F[m] += w * f
                    H[m] += w * h
                    C[m] += h
                else:
                    F[m] += (w * f).sum(1)
                    H[m] += (w * h).sum(1)
                    C[m] += h.sum(1)
            seen = found
        return F, H, C

    def dense_counts(self, seq: np.ndarray, pos: int, pids: np.ndarray, weights: np.ndarray,
                     vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The same at one position for every token: ([N, V] weighted counts of each
        continuation, [N] weighted history counts, [N] raw history counts)."""
        s = self.step_counts(seq, pos, pids, weights, vocab_size)
        return s.F, s.H, s.C

    def step_counts(self, seq: np.ndarray, pos: int, pids: np.ndarray, weights: np.ndarray,
                    vocab_size: int, unigram: Optional["StepCounts"] = None) -> "StepCounts":
        """:meth:`dense_counts` with what it read kept: per order, the continuation tokens of
        the history in the passages and the passage (index into ``pids``) of each, from which a
        trace reads every passage's count of the sampled token. ``unigram``: the order-1 part
        for these passages and weights (it does not depend on the history), reused."""
        seq = np.asarray(seq, dtype=np.int64)
        pids = np.asarray(pids).reshape(1, -1)
        weights = np.asarray(weights, dtype=np.float64).reshape(1, -1)
        N, K = self.order, pids.shape[1]
        out = StepCounts(np.zeros((N, vocab_size)), np.zeros(N), np.zeros(N),
                         [np.zeros(0, np.int64)] * N, [np.zeros(0, np.int64)] * N)
        if not self._segments:
            return out
        qs, ok = self._queries(seq, np.array([pos]), pids)
        w = np.where(ok, weights, 0.0)[0]
        seen = np.ones(len(w), bool)  # as in target_counts
        for m in range(N):
            if m == 0 and unigram is not None and unigram.F.shape[1] == vocab_size:
                out.F[0], out.H[0], out.C[0] = unigram.F[0], unigram.H[0], unigram.C[0]
                out.toks[0], out.slots[0] = unigram.toks[0], unigram.slots[0]
                seen = np.zeros(K, bool)
                seen[unigram.slots[0]] = True
                continue
            q = qs[m][0]
            live, found = (q >= 0) & seen, np.zeros(K, bool)
            toks, slots = [], []
            for seg in self._segments:
                a, h = self._ranges(seg, m, q, live)
                sel = np.flatnonzero(h > 0)
                found[sel] = True
                if not len(sel):
                    continue
                cnt = h[sel]
                idx = np.repeat(a[sel] - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())
                tk, sl = seg.comp[m][idx] & MAX_TOKEN, np.repeat(sel, cnt)
                out.F[m] += np.bincount(tk, weights=w[sl], minlength=vocab_size)[:vocab_size]
                out.H[m] += float((w * h).sum())
                out.C[m] += float(h.sum())
                toks.append(tk)
                slots.append(sl)
            if toks:
                out.toks[m] = toks[0] if len(toks) == 1 else np.concatenate(toks)
                out.slots[m] = slots[0] if len(slots) == 1 else np.concatenate(slots)
            seen = found
        return out


@dataclass
class StepCounts:
    """What one generation step read from the tables (:meth:`NGramTable.step_counts`)."""

    F: np.ndarray             # [N, V] weighted counts of each continuation
    H: np.ndarray             # [N] weighted history counts
    C: np.ndarray             # [N] raw history counts
    toks: list[np.ndarray]    # per order: the continuation tokens read
    slots: list[np.ndarray]   # per order: the passage (index into pids) of each

    def first_order(self) -> "StepCounts":
        """The order-1 part alone (copied), what :meth:`NGramTable.step_counts` reuses."""
        return StepCounts(self.F[:1].copy(), self.H[:1].copy(), self.C[:1].copy(),
                          self.toks[:1], self.slots[:1])

    def passage_counts(self, token: int, weights: np.ndarray) -> np.ndarray:
        """[N, K] each passage's weighted count of ``token`` after the history (the
        per-passage F of :meth:`NGramTable.target_counts`)."""
        K = len(weights)
        return np.stack([np.bincount(s[t == token], minlength=K)[:K] * weights
                         for t, s in zip(self.toks, self.slots)])
