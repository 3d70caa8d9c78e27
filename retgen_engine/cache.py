"""The context cache: retrieval from the text being read or written.

The last ``window`` tokens of the current stream (the prompt and what was generated, or the
evaluation text read so far) are a small datastore of their own: a unigram distribution and
bigram continuation counts. Mixed into the back-off, it lets a document's own rare words come
back (Kuhn & De Mori 1990; Grave et al. 2017), and every such token is traced to the earlier
position it repeats. It only ever looks at past tokens.

p_base(w) = (1 - mu_u - mu_b) p_kn(w) + mu_u p_uni(w) + mu_b p_bi(w | prev)

with mu_b = 0 where the previous token does not occur in the window (and mu_u = 0 on an empty
window), so p_base is a normalized distribution with p_base(w) >= (1 - mu_u - mu_b) p_kn(w) > 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContextCache:
    window: int = 2000
    unigram: float = 0.1
    bigram: float = 0.1

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"cache window={self.window}: must be >= 1")
        if self.unigram < 0 or self.bigram < 0 or self.unigram + self.bigram >= 1:
            raise ValueError(f"cache weights unigram={self.unigram}, bigram={self.bigram}: each "
                             ">= 0 and their sum < 1")

    @property
    def enabled(self) -> bool:
        return self.unigram > 0 or self.bigram > 0

    def stream_probs(self, seq: np.ndarray, vocab_size: int, start: int = 1
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For each position i >= start: p_uni(seq[i]), p_bi(seq[i] | seq[i-1]) and the weights
        mu_u, mu_b in force there (vectorized over the stream)."""
        seq = np.asarray(seq, dtype=np.int64)
        N, V, W = len(seq), vocab_size, self.window
        pos = np.arange(start, N)
        y = seq[pos]
        keys = np.sort(seq * N + np.arange(N))  # (token, position), sorted
        lo = np.maximum(pos - W, 0)
        cnt = np.searchsorted(keys, y * N + pos) - np.searchsorted(keys, y * N + lo)
        seen = pos - lo
        p_uni = np.where(seen > 0, cnt / np.maximum(seen, 1), 0.0)
        prev = seq[pos - 1]
        pair = np.sort((seq[:-1] * V + seq[1:]) * N + np.arange(1, N))  # (prev, tok) ending at j
        lo_b = np.maximum(pos - W + 1, 1)  # pairs wholly inside the window
        c2 = np.searchsorted(pair, (prev * V + y) * N + pos) - np.searchsorted(pair, (prev * V + y) * N + lo_b)
        cp = np.searchsorted(keys, prev * N + pos - 1) - np.searchsorted(keys, prev * N + lo_b - 1)
        p_bi = np.where(cp > 0, c2 / np.maximum(cp, 1), 0.0)
        mu_u = np.where(seen > 0, self.unigram, 0.0)
        mu_b = np.where(cp > 0, self.bigram, 0.0)
        return p_uni, p_bi, mu_u, mu_b

    def mix_stream(self, log_kn: np.ndarray, seq: np.ndarray, vocab_size: int,
                   start: int = 1) -> np.ndarray:
        """log p_base for each position i >= start."""
        if not self.enabled:
            return log_kn
        p_uni, p_bi, mu_u, mu_b = self.stream_probs(seq, vocab_size, start)
        return np.log((1 - mu_u - mu_b) * np.exp(log_kn) + mu_u * p_uni + mu_b * p_bi)

    def dense(self, history: list[int], p_kn: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(p_base [V], mu_u, mu_b) after ``history``."""
        if not self.enabled or not history:
            return p_kn, 0.0, 0.0
        V = len(p_kn)
        h = np.asarray(history[-self.window:], dtype=np.int64)
        p_uni = np.bincount(h, minlength=V) / len(h)
        prev = h[-1]
        follow = h[1:][h[:-1] == prev]  # tokens that followed prev inside the window
        mu_u = self.unigram
        mu_b = self.bigram if len(follow) else 0.0
        p = (1 - mu_u - mu_b) * p_kn + mu_u * p_uni
        if mu_b:
            p = p + mu_b * np.bincount(follow, minlength=V) / len(follow)
        return p, mu_u, mu_b

    def share(self, history: list[int], token: int, mu_u: float, mu_b: float) -> tuple[float, int]:
        """(probability mass the cache gives ``token``, last position in ``history`` where it
        occurs, preferring one after the same previous token; -1 if absent)."""
        h = np.asarray(history[-self.window:], dtype=np.int64)
        off = len(history) - len(h)
        if not len(h):
            return 0.0, -1
        hits = np.flatnonzero(h == token)
        p = mu_u * len(hits) / len(h)
        after = np.flatnonzero((h[1:] == token) & (h[:-1] == h[-1])) + 1
        n_prev = int(np.sum(h[:-1] == h[-1]))
        if mu_b and n_prev:
            p += mu_b * len(after) / n_prev
        where = after if len(after) else hits
        return float(p), (int(where[-1]) + off if len(where) else -1)
