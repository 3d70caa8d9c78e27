"""The retrieval distribution: embed the context, find similar patterns, spread their
energy weights over their exact continuation counts.

p_ret(w | q) = sum_p weight(q, p) * count(p, w) / count(p)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .encoder import Encoder
from .energy import EnergyModel
from ..ngram.features import candidate_features, right_aligned
from .index import VectorIndex
from ..ngram.patterns import PatternTable
from ..text.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Retrieved:
    """Search results for n queries: distances and pattern ids [n, k], -1 for none."""

    D: np.ndarray
    I: np.ndarray
    Q: Optional[np.ndarray] = None  # [n, W] the queries' last tokens, right-aligned (features)

    @property
    def valid(self) -> np.ndarray:
        return self.I >= 0

    def top(self, k: int) -> "Retrieved":
        return Retrieved(self.D[:, :k], self.I[:, :k], self.Q)

    def limit(self, k: np.ndarray) -> "Retrieved":
        """Keep the first k[i] candidates of row i."""
        cut = np.arange(self.I.shape[1])[None, :] >= np.asarray(k)[:, None]
        return Retrieved(np.where(cut, np.inf, self.D), np.where(cut, -1, self.I), self.Q)

    def rows(self, sel: np.ndarray) -> "Retrieved":
        return Retrieved(self.D[sel], self.I[sel], None if self.Q is None else self.Q[sel])


class PatternRetriever:
    def __init__(self, patterns: PatternTable, index: VectorIndex, encoder: Encoder,
                 tokenizer: Tokenizer, stream: np.ndarray, vocab_size: int,
                 query_length: int, energy: EnergyModel):
        self.patterns = patterns
        self.index = index
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.stream = stream
        self.V = vocab_size
        self.query_length = query_length
        self.energy = energy
        rows = np.repeat(np.arange(len(patterns), dtype=np.int64), np.diff(patterns.cont_offsets))
        self._cont_keys = rows * vocab_size + patterns.cont_tokens.astype(np.int64)
        self.max_length = int(patterns.length.max()) if len(patterns) else 1

    # -- queries -------------------------------------------------------------------------
    def context_text(self, history: Sequence[int]) -> str:
        itos = self.tokenizer.vocab.itos
        toks = [itos[i] for i in list(history)[-self.query_length:]]
        return self.tokenizer.context_text(toks)

    def stream_texts(self, seq: np.ndarray, positions: np.ndarray) -> list[str]:
        """Query texts for predicting seq[i] at each position (context seq[i-q:i])."""
        itos = self.tokenizer.vocab.itos
        q = self.query_length
        seq_l = np.asarray(seq).tolist()
        return [self.tokenizer.context_text([itos[t] for t in seq_l[max(0, i - q):i]])
                for i in np.asarray(positions).tolist()]

    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=batch_size, progress=progress,
                                   desc="encoding queries")

    def search_vectors(self, vecs: np.ndarray, k: int, nprobe: Optional[int] = None,
                       empty: Optional[np.ndarray] = None, Q: Optional[np.ndarray] = None,
                       progress: bool = False) -> Retrieved:
        n = len(vecs)
        D = np.full((n, k), np.inf, dtype=np.float32)
        I = np.full((n, k), -1, dtype=np.int64)
        if not progress and n <= 4096:  # one step of generation: no bar to set up (~0.4 ms)
            D[:], I[:] = self.index.search(vecs, k, nprobe=nprobe)
        else:
            step = min(4096, max(256, -(-n // 50)))  # a bar that moves: about 50 updates
            with tqdm(total=n, desc="searching", unit="query", disable=not progress) as bar:
                for s in range(0, n, step):
                    d, i = self.index.search(vecs[s:s + step], k, nprobe=nprobe)
                    D[s:s + step], I[s:s + step] = d, i
                    bar.update(len(d))
        if empty is not None:
            I[empty] = -1  # an empty context retrieves nothing: the back-off alone answers
        D[I < 0] = np.inf
        return Retrieved(D, I, Q)

    def search_texts(self, texts: Sequence[str], k: int, nprobe: Optional[int] = None,
                     batch_size: int = 256, progress: bool = False,
                     Q: Optional[np.ndarray] = None) -> Retrieved:
        vecs = self.encode(texts, batch_size=batch_size, progress=progress)
        return self.search_vectors(vecs, k, nprobe, np.array([not t for t in texts], bool), Q,
                                   progress)

    def search_stream(self, seq: np.ndarray, k: int, nprobe: Optional[int] = None,
                      start: int = 1, progress: bool = False) -> Retrieved:
        """Retrieve for every prediction position i >= start of ``seq`` (context seq[:i])."""
        pos = np.arange(start, len(seq))
        return self.search_texts(self.stream_texts(seq, pos), k, nprobe=nprobe, progress=progress,
                                 Q=right_aligned(seq, pos, self.max_length))

    # -- distributions -------------------------------------------------------------------
    def features(self, r: Retrieved) -> dict[str, np.ndarray]:
        """Candidate features ``div``, ``length`` and ``exact`` [n, k] (needs ``r.Q``)."""
        if r.Q is None:
            raise ValueError("candidate features need the queries' last tokens (Retrieved.Q)")
        feats = candidate_features(self.patterns, self.stream, r.I, r.Q)
        feats["length"] = feats.pop("len")
        return feats

    def weights(self, r: Retrieved, tau: float | np.ndarray,
                feats: Optional[dict[str, np.ndarray]] = None) -> np.ndarray:
        freq = np.where(r.valid, self.patterns.count[np.maximum(r.I, 0)], 1)
        e = self.energy
        if feats is None and r.Q is not None and e.uses_features:
            feats = self.features(r)
        return e.weights(r.D, r.valid, tau, freq=freq, **(feats or {}))

    def counts_of(self, ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """count(p, w) for pattern ids [n, k] and tokens [n] (0 where absent or id is -1)."""
        q = np.maximum(ids, 0) * self.V + np.asarray(tokens, dtype=np.int64)[:, None]
        pos = np.searchsorted(self._cont_keys, q)
        pos_c = np.minimum(pos, len(self._cont_keys) - 1)
        hit = (self._cont_keys[pos_c] == q) & (ids >= 0)
        return np.where(hit, self.patterns.cont_counts[pos_c], 0)

    def target_probs(self, r: Retrieved, targets: np.ndarray, tau: float | np.ndarray,
                     weights: Optional[np.ndarray] = None) -> np.ndarray:
        """p_ret(target) per query (0 where no retrieved pattern continues with it)."""
        w = self.weights(r, tau) if weights is None else weights
        c = self.counts_of(r.I, targets)
        tot = np.where(r.valid, self.patterns.count[np.maximum(r.I, 0)], 1)
        return (w * c / tot).sum(axis=1)

    def dense(self, r: Retrieved, tau: float, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """The full p_ret [V] of one query (all zeros when nothing was retrieved)."""
        w = (self.weights(r, tau) if weights is None else weights)[0]
        ids = r.I[0]
        keep = (ids >= 0) & (w != 0)
        if not keep.any():
            return np.zeros(self.V)
        pt, ids, w = self.patterns, ids[keep], w[keep]
        lo, hi = pt.cont_offsets[ids], pt.cont_offsets[ids + 1]
        n = hi - lo  # every continuation of every kept pattern, gathered at once
        rows = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
        share = np.repeat(w / pt.count[ids], n)
        return np.bincount(pt.cont_tokens[rows], weights=share * pt.cont_counts[rows],
                           minlength=self.V)[: self.V]

    def contributions(self, r: Retrieved, tau: float, token: int,
                      weights: Optional[np.ndarray] = None) -> list[tuple[int, float]]:
        """(pattern id, share of p_ret(token)) for one query, largest first."""
        w = (self.weights(r, tau) if weights is None else weights)[0]
        c = self.counts_of(r.I[:1], np.array([token]))[0]
        tot = self.patterns.count[np.maximum(r.I[0], 0)]
        share = w * c / tot
        order = np.argsort(-share)
        return [(int(r.I[0, j]), float(share[j])) for j in order if share[j] > 0]
