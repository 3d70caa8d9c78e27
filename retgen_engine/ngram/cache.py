"""The context cache: retrieval from the text being read or written.

The last ``window`` tokens of the current stream (the prompt and what was generated, or the
evaluation text read so far) are a small datastore of their own: a unigram distribution
(optionally with recent tokens weighted more, exp(-distance / decay)) and bigram and trigram
continuation counts. Mixed into the back-off, it lets a document's own rare words and phrases
come back (Kuhn & De Mori 1990; Grave et al. 2017), and every such token is traced to the
earlier position it repeats. It only ever looks at past tokens.

p_base(w) = (1 - mu_u - mu_b' - mu_t') p_kn(w) + mu_u p_uni(w) + mu_b' p_bi(w | prev)
            + mu_t' p_tri(w | prev2, prev)

mu_b' = mu_b n / (n + kappa) with n the times ``prev`` was followed by a token inside the window
(0 when it never was), mu_t' likewise for the pair (prev2, prev): a history seen once says less
than one seen ten times. mu_u = 0 on an empty window. p_base is a normalized distribution with
p_base(w) >= (1 - mu_u - mu_b - mu_t) p_kn(w) > 0.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
import numpy as np


@dataclass(frozen=True)
class CacheWeights:
    """The cache weights in force at one position (for traces and the back-off's share)."""

    unigram: float = 0.0
    bigram: float = 0.0
    trigram: float = 0.0

    @property
    def total(self) -> float:
        return self.unigram + self.bigram + self.trigram


@dataclass(frozen=True)
class ContextCache:
    window: int = 2000
    unigram: float = 0.1
    bigram: float = 0.1
    trigram: float = 0.0
    #: 0: every token in the window counts the same; else weight exp(-distance / decay)
    decay: float = 0.0
    kappa: float = 0.0

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"cache window={self.window}: must be >= 1")
        w = (self.unigram, self.bigram, self.trigram)
        if min(w) < 0 or sum(w) >= 1:
            raise ValueError(f"cache weights unigram={self.unigram}, bigram={self.bigram}, "
                             f"trigram={self.trigram}: each >= 0 and their sum < 1")
        if not self.decay >= 0:
            raise ValueError(f"cache decay={self.decay}: must be >= 0 (tokens; 0 = no decay)")
        if self.kappa < 0:
            raise ValueError(f"cache kappa={self.kappa}: must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.unigram > 0 or self.bigram > 0 or self.trigram > 0

    def _count_weight(self, mu: float, n: np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        return np.where(n > 0, mu * n / np.maximum(n + self.kappa, 1e-300), 0.0)

    # -- a whole stream, vectorized ----------------------------------------------------------
    def _decayed_unigram(self, seq: np.ndarray, start: int) -> np.ndarray:
        """sum over j in [i - window, i) with seq[j] = seq[i] of exp(-(i - j) / decay), for
        each i >= start (one pass; each position enters and leaves its token's window once)."""
        W, D = self.window, float(self.decay)
        state: dict[int, list] = {}  # token -> [positions in window (deque), sum, at time]
        out = np.zeros(len(seq) - start)
        for i, y in enumerate(seq.tolist()):
            st = state.get(y)
            if st is None:
                st = state[y] = [deque(), 0.0, i]
            q = st[0]
            while q and q[0] < i - W:  # left the window
                st[1] -= math.exp(-(st[2] - q.popleft()) / D)
            if i >= start:
                out[i - start] = st[1] * math.exp(-(i - st[2]) / D)
            st[1] = st[1] * math.exp(-(i - st[2]) / D) + 1.0
            st[2] = i
            q.append(i)
        return np.maximum(out, 0.0)

    def _decay_norm(self, n: np.ndarray) -> np.ndarray:
        """sum_{d=1..n} exp(-d / decay)."""
        r = math.exp(-1.0 / float(self.decay))
        return r * (1 - np.power(r, np.asarray(n, dtype=np.float64))) / (1 - r)

    def stream_parts(self, seq: np.ndarray, vocab_size: int, start: int = 1
                     ) -> tuple[np.ndarray, np.ndarray]:
        """([3, n] p_uni, p_bi, p_tri of seq[i], [3, n] how many tokens, bigram histories and
        trigram histories the window holds for it) for i >= start. They depend on the window
        and the decay only; :meth:`weights` turns the counts into weights."""
        seq = np.asarray(seq, dtype=np.int64)
        N, V, W = len(seq), vocab_size, self.window
        pos = np.arange(start, N)
        y = seq[pos]
        keys = np.sort(seq * N + np.arange(N))  # (token, position), sorted
        lo = np.maximum(pos - W, 0)
        seen = pos - lo
        if not self.decay:
            cnt = np.searchsorted(keys, y * N + pos) - np.searchsorted(keys, y * N + lo)
            p_uni = np.where(seen > 0, cnt / np.maximum(seen, 1), 0.0)
        else:
            p_uni = np.where(seen > 0, self._decayed_unigram(seq, start)
                             / np.where(seen > 0, self._decay_norm(seen), 1.0), 0.0)
        # bigram: pairs (j-1, j) wholly inside the window, j in [i - W + 1, i)
        prev = seq[pos - 1]
        pair = np.sort((seq[:-1] * V + seq[1:]) * N + np.arange(1, N))
        lo_b = np.maximum(pos - W + 1, 1)
        c2 = np.searchsorted(pair, (prev * V + y) * N + pos) - np.searchsorted(pair, (prev * V + y) * N + lo_b)
        n2 = np.searchsorted(keys, prev * N + pos - 1) - np.searchsorted(keys, prev * N + lo_b - 1)
        p_bi = np.where(n2 > 0, c2 / np.maximum(n2, 1), 0.0)
        # trigram: triples (j-2, j-1, j) wholly inside the window, j in [i - W + 2, i)
        p_tri, n3 = np.zeros(len(pos)), np.zeros(len(pos), dtype=np.int64)
        if N >= 3:
            hist = seq[:-1] * V + seq[1:]  # the pair ending at j, for j = 1..N-1
            _, hid = np.unique(hist, return_inverse=True)
            h_of = np.full(N, -1, dtype=np.int64)
            h_of[1:] = hid  # h_of[j]: id of (seq[j-1], seq[j])
            j = np.arange(2, N)
            tri = np.sort((h_of[j - 1] * V + seq[j]) * N + j)  # (history id, token, j)
            hk = np.sort(h_of[j - 1] * N + j)                   # (history id, j)
            ok = pos >= 2
            hq = np.where(ok, h_of[np.maximum(pos - 1, 0)], 0)
            lo_t = np.maximum(pos - W + 2, 2)
            c3 = np.searchsorted(tri, (hq * V + y) * N + pos) - np.searchsorted(tri, (hq * V + y) * N + lo_t)
            n3 = np.where(ok, np.searchsorted(hk, hq * N + pos) - np.searchsorted(hk, hq * N + lo_t), 0)
            n3 = np.maximum(n3, 0)
            p_tri = np.where(n3 > 0, c3 / np.maximum(n3, 1), 0.0)
        return np.stack([p_uni, p_bi, p_tri]), np.stack([seen, n2, n3])

    def weights(self, counts: np.ndarray) -> np.ndarray:
        """[3, n] mu_u, mu_b', mu_t' for :meth:`stream_parts`' counts."""
        seen, n2, n3 = counts
        return np.stack([np.where(seen > 0, self.unigram, 0.0), self._count_weight(self.bigram, n2),
                         self._count_weight(self.trigram, n3)])

    def mix_parts(self, log_kn: np.ndarray, parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """log p_base from :meth:`stream_parts` (computed with the same window and decay)."""
        p, counts = parts
        mu = self.weights(counts)
        return np.log((1 - mu.sum(0)) * np.exp(log_kn) + (mu * p).sum(0))

    def mix_stream(self, log_kn: np.ndarray, seq: np.ndarray, vocab_size: int,
                   start: int = 1) -> np.ndarray:
        """log p_base for each position i >= start."""
        if not self.enabled:
            return log_kn
        return self.mix_parts(log_kn, self.stream_parts(seq, vocab_size, start))

    # -- one step (generation) ---------------------------------------------------------------
    def _parts(self, history: list[int], V: int):
        h = np.asarray(history[-self.window:], dtype=np.int64)
        if not self.decay:
            uni = np.bincount(h, minlength=V) / len(h)
        else:
            w = np.exp(-np.arange(len(h), 0, -1) / float(self.decay))
            uni = np.bincount(h, weights=w, minlength=V) / w.sum()
        bi = h[1:][h[:-1] == h[-1]]  # tokens that followed prev inside the window
        tri = h[2:][(h[:-2] == h[-2]) & (h[1:-1] == h[-1])] if len(h) >= 2 else h[:0]
        mu = CacheWeights(self.unigram, float(self._count_weight(self.bigram, len(bi))),
                          float(self._count_weight(self.trigram, len(tri))) if self.trigram else 0.0)
        return h, uni, bi, tri, mu

    def dense(self, history: list[int], p_kn: np.ndarray) -> tuple[np.ndarray, CacheWeights]:
        """(p_base [V], the weights in force) after ``history``."""
        if not self.enabled or not history:
            return p_kn, CacheWeights()
        V = len(p_kn)
        _, uni, bi, tri, mu = self._parts(history, V)
        p = (1 - mu.total) * p_kn + mu.unigram * uni
        if mu.bigram:
            p = p + mu.bigram * np.bincount(bi, minlength=V) / len(bi)
        if mu.trigram:
            p = p + mu.trigram * np.bincount(tri, minlength=V) / len(tri)
        return p, mu

    def share(self, history: list[int], token: int, mu: CacheWeights) -> tuple[float, int]:
        """(probability mass the cache gives ``token``, last position in ``history`` where it
        occurs, preferring one after the same two tokens, then the same one; -1 if absent)."""
        if not history or not mu.total:
            return 0.0, -1
        h, uni, bi, tri, _ = self._parts(history, max(int(token), max(history)) + 1)
        off = len(history) - len(h)
        p = mu.unigram * uni[token]
        if mu.bigram:
            p += mu.bigram * np.count_nonzero(bi == token) / len(bi)
        if mu.trigram:
            p += mu.trigram * np.count_nonzero(tri == token) / len(tri)
        if p <= 0:
            return 0.0, -1
        hits = np.flatnonzero(h == token)
        after1 = np.flatnonzero((h[1:] == token) & (h[:-1] == h[-1])) + 1
        after2 = (np.flatnonzero((h[2:] == token) & (h[:-2] == h[-2]) & (h[1:-1] == h[-1])) + 2
                  if len(h) >= 2 else after1[:0])
        where = after2 if len(after2) else after1 if len(after1) else hits
        return float(p), (int(where[-1]) + off if len(where) else -1)
