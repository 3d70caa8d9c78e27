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
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
from pydantic import ValidationError

from ..checks import float_arg, int_arg
from ..config import CacheConfig, check_fields


@dataclass(frozen=True)
class CacheWeights:
    """The cache weights in force at one position (for traces and the back-off's share)."""

    unigram: float = 0.0
    bigram: float = 0.0
    trigram: float = 0.0

    @property
    def total(self) -> float:
        return self.unigram + self.bigram + self.trigram


def _default(name: str):
    return CacheConfig.model_fields[name].default


@dataclass(frozen=True)
class ContextCache:
    """The cache of one configuration; defaults and bounds are :class:`CacheConfig`'s."""

    window: int = _default("window")
    unigram: float = _default("unigram")
    bigram: float = _default("bigram")
    trigram: float = _default("trigram")
    #: 0: every token in the window counts the same; else weight exp(-distance / decay)
    decay: float = _default("decay")
    kappa: float = _default("kappa")

    def __post_init__(self):
        object.__setattr__(self, "window", int_arg("cache window", self.window, 1))
        for name in ("unigram", "bigram", "trigram", "decay", "kappa"):  # finite numbers
            float_arg(f"cache {name}", getattr(self, name))
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in check_fields(CacheConfig, **values).items():
            object.__setattr__(self, k, v)
        try:
            CacheConfig(**values)
        except ValidationError as e:  # the weights' sum
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None

    @classmethod
    def from_config(cls, cfg: CacheConfig) -> "ContextCache":
        return cls(**cfg.model_dump())

    @property
    def enabled(self) -> bool:
        return self.unigram > 0 or self.bigram > 0 or self.trigram > 0

    def _count_weight(self, mu: float, n: np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        return np.where(n > 0, mu * n / np.maximum(n + self.kappa, 1e-300), 0.0)

    # -- one core: the window statistics of candidate tokens at a set of positions -------------
    def _decayed(self, keys: np.ndarray, N: int, a: np.ndarray, b: np.ndarray,
                 pos: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
        """sum of exp(-(i - j) / decay) over the occurrences j = keys[a:b] % N of each cell
        (position i = pos of its row); cells [n, m]."""
        cnt = (b - a).ravel()
        out = np.zeros(cnt.size)
        i_cell = np.broadcast_to(pos[:, None], a.shape).ravel()
        a = a.ravel()
        ends = np.cumsum(cnt)
        lo = 0
        while lo < cnt.size:  # cells in chunks of about ``chunk`` occurrences
            hi = int(np.searchsorted(ends, ends[lo] - cnt[lo] + chunk, side="right"))
            hi = max(hi, lo + 1)
            c = cnt[lo:hi]
            cell = np.repeat(np.arange(lo, hi), c)
            first = np.repeat(a[lo:hi] - (np.cumsum(c) - c), c)
            j = keys[first + np.arange(len(cell))] % N
            out[lo:hi] = np.bincount(cell - lo, weights=np.exp(-(i_cell[cell] - j) / self.decay),
                                     minlength=hi - lo)
            lo = hi
        return out.reshape(b.shape)

    def _decay_norm(self, n: np.ndarray) -> np.ndarray:
        """sum_{d=1..n} exp(-d / decay)."""
        r = math.exp(-1.0 / float(self.decay))
        return r * (1 - np.power(r, np.asarray(n, dtype=np.float64))) / (1 - r)

    def parts(self, seq: np.ndarray, pos: np.ndarray, cand: np.ndarray, vocab_size: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """([3, n, m] p_uni, p_bi, p_tri of the candidate tokens ``cand`` [n, m] at positions
        ``pos`` [n] of ``seq``, [3, n] how many tokens, bigram histories and trigram histories
        the window before each position holds). Only seq[i - window:i] is read for position i.
        They depend on the window and the decay only; :meth:`weights` turns counts into weights.
        The stream scorer asks for each position's own token, one step for every token seen."""
        seq = np.asarray(seq, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.int64)
        N, V, W = len(seq), vocab_size, self.window
        y = np.asarray(cand, dtype=np.int64)
        P = pos[:, None]
        keys = np.sort(seq * N + np.arange(N))  # (token, position), sorted
        lo = np.maximum(pos - W, 0)
        seen = pos - lo
        a = np.searchsorted(keys, y * N + lo[:, None])
        b = np.searchsorted(keys, y * N + P)
        if not self.decay:
            p_uni = np.where(seen[:, None] > 0, (b - a) / np.maximum(seen, 1)[:, None], 0.0)
        else:
            norm = np.where(seen > 0, self._decay_norm(seen), 1.0)[:, None]
            p_uni = np.where(seen[:, None] > 0, self._decayed(keys, N, a, b, pos) / norm, 0.0)
        # bigram: pairs (j-1, j) wholly inside the window, j in [i - W + 1, i)
        prev = seq[np.maximum(pos - 1, 0)][:, None]
        pair = np.sort((seq[:-1] * V + seq[1:]) * N + np.arange(1, N))
        lo_b = np.maximum(pos - W + 1, 1)[:, None]
        q2 = (prev * V + y) * N
        c2 = np.searchsorted(pair, q2 + P) - np.searchsorted(pair, q2 + lo_b)
        n2 = (np.searchsorted(keys, prev * N + P - 1) - np.searchsorted(keys, prev * N + lo_b - 1))[:, 0]
        p_bi = np.where(n2[:, None] > 0, c2 / np.maximum(n2, 1)[:, None], 0.0)
        # trigram: triples (j-2, j-1, j) wholly inside the window, j in [i - W + 2, i)
        p_tri, n3 = np.zeros(y.shape), np.zeros(len(pos), dtype=np.int64)
        if N >= 3:
            hist = seq[:-1] * V + seq[1:]  # the pair ending at j, for j = 1..N-1
            _, hid = np.unique(hist, return_inverse=True)
            h_of = np.full(N, -1, dtype=np.int64)
            h_of[1:] = hid  # h_of[j]: id of (seq[j-1], seq[j])
            j = np.arange(2, N)
            tri = np.sort((h_of[j - 1] * V + seq[j]) * N + j)  # (history id, token, j)
            hk = np.sort(h_of[j - 1] * N + j)                   # (history id, j)
            ok = pos >= 2
            hq = np.where(ok, h_of[np.maximum(pos - 1, 0)], 0)[:, None]
            lo_t = np.maximum(pos - W + 2, 2)[:, None]
            q3 = (hq * V + y) * N
            c3 = np.searchsorted(tri, q3 + P) - np.searchsorted(tri, q3 + lo_t)
            n3 = np.where(ok, (np.searchsorted(hk, hq * N + P) - np.searchsorted(hk, hq * N + lo_t))[:, 0], 0)
            n3 = np.maximum(n3, 0)
            p_tri = np.where(n3[:, None] > 0, c3 / np.maximum(n3, 1)[:, None], 0.0)
        return np.stack([p_uni, p_bi, p_tri]), np.stack([seen, n2, n3])

    def weights(self, counts: np.ndarray) -> np.ndarray:
        """[3, n] mu_u, mu_b', mu_t' for the counts of :meth:`parts`."""
        seen, n2, n3 = counts
        return np.stack([np.where(seen > 0, self.unigram, 0.0), self._count_weight(self.bigram, n2),
                         self._count_weight(self.trigram, n3)])

    # -- a whole stream ------------------------------------------------------------------------
    def stream_parts(self, seq: np.ndarray, vocab_size: int, start: int = 1
                     ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`parts` of each position's own token, i >= start: ([3, n], [3, n])."""
        seq = np.asarray(seq, dtype=np.int64)
        pos = np.arange(start, len(seq))
        p, counts = self.parts(seq, pos, seq[pos][:, None], vocab_size)
        return p[:, :, 0], counts

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

    # -- one step (generation): the same core at one position --------------------------------
    def _step(self, history: list[int], V: int, cand: Optional[np.ndarray] = None):
        """(window tokens, candidates, [3, m] parts, weights in force) after ``history``;
        the candidates default to the distinct tokens of the window (the others get 0).
        :meth:`parts` at the one position after the window, counted directly over it (one
        pass of bincounts instead of the stream's sorted keys; the same sums, tested)."""
        h = np.asarray(history[-self.window:], dtype=np.int64)
        cand = np.unique(h) if cand is None else np.asarray(cand, dtype=np.int64)
        i = len(h)
        hi = int(max(h.max(), cand.max())) + 1 if i else 1
        p = np.zeros((3, len(cand)))
        if self.decay:
            w = np.exp(-(i - np.arange(i)) / self.decay)
            p[0] = np.bincount(h, weights=w, minlength=hi)[cand] / self._decay_norm(i)
        elif i:
            p[0] = np.bincount(h, minlength=hi)[cand] / i
        n2 = n3 = 0
        if i >= 2:  # prev = h[-1] at positions t in [0, i - 1), followed by h[t + 1]
            eq = h[:-1] == h[-1]
            n2 = int(eq.sum())
            if n2:
                p[1] = np.bincount(h[1:][eq], minlength=hi)[cand] / n2
        if i >= 3:  # the pair (h[-2], h[-1]) at t in [0, i - 2), followed by h[t + 2]
            hit = (h[:-2] == h[-2]) & (h[1:-1] == h[-1])
            n3 = int(hit.sum())
            if n3:
                p[2] = np.bincount(h[2:][hit], minlength=hi)[cand] / n3
        counts = np.array([[i], [n2], [n3]])
        mu = CacheWeights(*(float(x) for x in self.weights(counts)[:, 0]))
        return h, cand, p, mu

    def dense(self, history: list[int], p_kn: np.ndarray) -> tuple[np.ndarray, CacheWeights]:
        """(p_base [V], the weights in force) after ``history``."""
        if not self.enabled or not history:
            return p_kn, CacheWeights()
        _, cand, p, mu = self._step(history, len(p_kn))
        out = (1 - mu.total) * p_kn
        out[cand] += np.array([mu.unigram, mu.bigram, mu.trigram]) @ p
        return out, mu

    def share(self, history: list[int], token: int, mu: CacheWeights,
              mass: Optional[float] = None) -> tuple[float, int]:
        """(probability mass the cache gives ``token``, last position in ``history`` where it
        occurs, preferring one after the same two tokens, then the same one; -1 if absent).
        ``mass``: that probability when the caller has it (a generation step's
        ``StepInfo.cache_mass``), so only the position is looked for."""
        if not history or not mu.total:
            return 0.0, -1
        if mass is None:
            h, _, p, _ = self._step(history, max(int(token), max(history)) + 1, np.array([token]))
            p = float(np.array([mu.unigram, mu.bigram, mu.trigram]) @ p[:, 0])
        else:
            h, p = np.asarray(history[-self.window:], dtype=np.int64), float(mass)
        off = len(history) - len(h)
        if p <= 0:
            return 0.0, -1
        hits = np.flatnonzero(h == token)
        after1 = np.flatnonzero((h[1:] == token) & (h[:-1] == h[-1])) + 1
        after2 = (np.flatnonzero((h[2:] == token) & (h[:-2] == h[-2]) & (h[1:-1] == h[-1])) + 2
                  if len(h) >= 2 else after1[:0])
        where = after2 if len(after2) else after1 if len(after1) else hits
        return float(p), (int(where[-1]) + off if len(where) else -1)
