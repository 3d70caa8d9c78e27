"""Interpolated modified Kneser-Ney (Chen & Goodman 1999), the exact-match back-off model.

p_k(w | h) = [max(c_k(hw) - D_k(c_k(hw)), 0) + gamma_k(h) * p_{k-1}(w | h')] / c_k(h.)
with c_k raw counts at the highest order and continuation counts N1+(. hw) below it,
three discounts per order from counts-of-counts, and the unigram level interpolated with
the uniform distribution, so every vocabulary entry (``<unk>`` included) has p > 0 and each
distribution sums to 1.
"""
from __future__ import annotations

import logging

import numpy as np

from .counts import NGramLevel, children, history_nodes, lookup, stream_nodes

log = logging.getLogger(__name__)

_DEFAULT_D = np.array([0.5, 1.0, 1.5])


def _discounts(counts: np.ndarray) -> np.ndarray:
    n = [int(np.count_nonzero(counts == i)) for i in (1, 2, 3, 4)]
    if min(n) == 0:
        return _DEFAULT_D.copy()
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    if not np.all((d > 0) & (d <= np.array([1.0, 2.0, 3.0]))):
        return _DEFAULT_D.copy()
    return d


def _apply_discount(c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """D(c) for counts c: 0 for c == 0, d[0], d[1], d[2] for 1, 2, >= 3."""
    table = np.concatenate([[0.0], d])
    return table[np.minimum(c, 3)]


class KneserNeyLM:
    """Arrays per order k = 1..N: ``keys[k]``, ``counts[k]`` (count used by KN), ``first[k]``
    (where an n-gram first occurs, for traces) and, for histories, ``total[k]``/``gnum[k]``
    (sum of children's counts and the back-off numerator D1*N1 + D2*N2 + D3*N3+)."""

    def __init__(self, order: int, vocab_size: int, arrays: dict[str, np.ndarray]):
        self.order = order
        self.V = vocab_size
        self.arrays = arrays
        self.keys = [arrays[f"kn_keys_{k}"] if k > 1 else None for k in range(1, order + 1)]
        self.counts = [arrays[f"kn_counts_{k}"] for k in range(1, order + 1)]
        self.first = [arrays[f"kn_first_{k}"] for k in range(1, order + 1)]
        self.total = [arrays[f"kn_total_{k}"] for k in range(1, order)]
        self.gnum = [arrays[f"kn_gnum_{k}"] for k in range(1, order)]
        self.discounts = arrays["kn_discounts"]  # [order, 3]
        self.p1 = arrays["kn_p1"]
        self._keys_by_order = [np.zeros(0, np.int64)] + self.keys[1:]

    @classmethod
    def from_saved(cls, arrays: dict[str, np.ndarray], entry: dict, vocab_size: int
                   ) -> "KneserNeyLM":
        """The back-off of a model directory: its ``kn_*`` arrays and manifest entry."""
        return cls(entry["order"], vocab_size, {k: v for k, v in arrays.items() if k.startswith("kn_")})

    def describe(self) -> dict:
        """The manifest entry :meth:`from_saved` reads."""
        return {"kind": "interpolated-modified-kneser-ney", "order": self.order}

    # -- building ----------------------------------------------------------------------
    @classmethod
    def from_levels(cls, levels: list[NGramLevel], order: int, vocab_size: int) -> "KneserNeyLM":
        if len(levels) < order:
            raise ValueError(f"need {order} n-gram levels, got {len(levels)}")
        V = vocab_size
        used: list[np.ndarray] = []
        for k in range(1, order + 1):
            if k == order:
                used.append(levels[k - 1].counts)
            else:  # continuation count: distinct left extensions
                used.append(np.bincount(levels[k].suffix, minlength=len(levels[k - 1])).astype(np.int64))
        arrays: dict[str, np.ndarray] = {}
        disc = np.zeros((order, 3))
        for k in range(1, order + 1):
            disc[k - 1] = _discounts(used[k - 1])
            arrays[f"kn_counts_{k}"] = used[k - 1].astype(np.int32)
            arrays[f"kn_first_{k}"] = levels[k - 1].first
            if k > 1:
                arrays[f"kn_keys_{k}"] = levels[k - 1].keys
        for k in range(2, order + 1):  # history stats of level k-1 from its children at level k
            parent = levels[k - 1].keys // V
            c = used[k - 1]
            nh = len(levels[k - 2])
            arrays[f"kn_total_{k - 1}"] = np.bincount(parent, weights=c, minlength=nh)
            d = disc[k - 1]
            gnum = (d[0] * np.bincount(parent, weights=(c == 1), minlength=nh)
                    + d[1] * np.bincount(parent, weights=(c == 2), minlength=nh)
                    + d[2] * np.bincount(parent, weights=(c >= 3), minlength=nh))
            arrays[f"kn_gnum_{k - 1}"] = gnum
        c1 = used[0].astype(np.float64)
        tot1 = c1.sum()
        if tot1 <= 0:
            p1 = np.full(V, 1.0 / V)
        else:
            d = disc[0]
            g1 = d[0] * np.sum(c1 == 1) + d[1] * np.sum(c1 == 2) + d[2] * np.sum(c1 >= 3)
            p1 = (np.maximum(c1 - _apply_discount(used[0], d), 0) + g1 / V) / tot1
        arrays["kn_p1"] = p1
        arrays["kn_discounts"] = disc
        log.info("Kneser-Ney order %d: %s n-grams; discounts %s", order,
                 [len(lv) for lv in levels[:order]], np.round(disc, 3).tolist())
        return cls(order, V, arrays)

    # -- scoring: one recursion for a whole stream and for one step --------------------
    def _interpolate(self, p: np.ndarray, hist: list[np.ndarray], counts_at) -> np.ndarray:
        """The interpolated recursion, from the unigram level up, for n positions at once.

        ``p`` [n, m]: the unigram probabilities of m candidate tokens per position;
        ``hist[k-2]`` [n]: the row of the (k-1)-token history of each position (-1: unseen);
        ``counts_at(k, rows)`` [len(rows), m]: the order-k counts of history + candidate."""
        for k in range(2, self.order + 1):
            h = hist[k - 2]
            ok = h >= 0
            total = np.zeros(len(h))
            total[ok] = self.total[k - 2][h[ok]]
            ok &= total > 0
            if not ok.any():
                break
            rows = np.flatnonzero(ok)
            c = counts_at(k, rows)
            g = self.gnum[k - 2][h[rows]][:, None]
            num = np.maximum(c - _apply_discount(c, self.discounts[k - 1]), 0) + g * p[rows]
            p[rows] = num / total[rows][:, None]
        return p

    def stream_logprobs(self, seq: np.ndarray, start: int = 1) -> np.ndarray:
        """log p(seq[i] | seq[:i]) for i >= start (natural log), vectorized over the stream."""
        seq = np.asarray(seq, dtype=np.int64)
        nodes = stream_nodes(self._keys_by_order, seq, self.V)
        hist = []
        for k in range(2, self.order + 1):
            h = np.full(len(seq), -1, dtype=np.int64)
            h[1:] = nodes[k - 2][:-1]              # (k-1)-gram ending just before i
            hist.append(h)

        def counts_at(k: int, rows: np.ndarray) -> np.ndarray:
            tgt = nodes[k - 1][rows]               # k-gram ending at i
            return np.where(tgt >= 0, self.counts[k - 1][np.maximum(tgt, 0)], 0)[:, None]

        p = self._interpolate(self.p1[seq].astype(np.float64)[:, None], hist, counts_at)
        return np.log(p[start:, 0])

    def distribution(self, history: list[int]) -> np.ndarray:
        """The full next-token distribution (float64 [V], sums to 1) after ``history``: the
        same recursion at one position, every token a candidate."""
        hn = history_nodes(self._keys_by_order[: self.order - 1] or [np.zeros(0)],
                           list(history[-(self.order - 1):]) if self.order > 1 else [], self.V)
        hist = [np.array([hn[k - 2] if len(hn) >= k - 1 else -1], dtype=np.int64)
                for k in range(2, self.order + 1)]

        def counts_at(k: int, rows: np.ndarray) -> np.ndarray:
            h = int(hist[k - 2][0])
            lo, hi = children(self.keys[k - 1], h, self.V)
            c = np.zeros((1, self.V), dtype=np.int64)
            c[0, self.keys[k - 1][lo:hi] - h * self.V] = self.counts[k - 1][lo:hi]
            return c

        return self._interpolate(self.p1.astype(np.float64)[None, :].copy(), hist, counts_at)[0]

    def longest_match(self, history: list[int], token: int) -> tuple[int, int]:
        """(order, stream position where it first ends) of the longest seen n-gram
        ``history[-(k-1):] + [token]``; (0, -1) if the token was never seen."""
        best = (0, -1)
        if self.first[0][token] >= 0 and self.counts[0][token] >= 0:
            best = (1, int(self.first[0][token]))
        hn = history_nodes(self._keys_by_order[: self.order - 1] or [np.zeros(0)],
                           list(history[-(self.order - 1):]) if self.order > 1 else [], self.V)
        for k in range(2, self.order + 1):
            if len(hn) < k - 1 or hn[k - 2] < 0:
                break
            row = lookup(self.keys[k - 1], np.array([hn[k - 2]]), np.array([token]), self.V)[0]
            if row < 0:
                break
            best = (k, int(self.first[k - 1][row]))
        return best
