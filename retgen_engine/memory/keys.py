"""How the memory finds passages: lexical keys (BM25 by ``bm25s``), dense keys (MiniLM vectors
in the document store) and their reciprocal-rank fusion.

Each finder returns ``(pids [n, k], scores [n, k])``, best first, -1 / 0 where fewer passages
match; scores are "higher is better" and normalized per query by :func:`passage_weights`.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

KEYS = ("lexical", "dense", "fused")


def quiet_bm25s() -> None:
    """bm25s sets its logger to DEBUG on import, so every index build reached the console
    ("Building index from token IDs"); keep it at WARNING unless the user changed it."""
    lg = logging.getLogger("bm25s")
    if lg.level == logging.DEBUG:
        lg.setLevel(logging.WARNING)


class LexicalKeys:
    """BM25 over the passages' texts (``bm25s``: its tokenizer with English stop words, Lucene
    BM25). The index is derived state: rebuilt from the texts when the passages change (about
    a second per 16,000 passages), never saved."""

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self._bm25 = None
        self._tok = None
        self._pids = np.zeros(0, np.int64)

    def rebuild(self, pids: np.ndarray, texts: Sequence[str]) -> None:
        import bm25s

        quiet_bm25s()

        self._pids = np.asarray(pids, dtype=np.int64)
        if not len(self._pids):
            self._bm25 = None
            return
        self._tok = bm25s.tokenization.Tokenizer(stopwords="en")
        corpus = self._tok.tokenize(list(texts), show_progress=False)
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        self._bm25.index(corpus, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        pids, scores = np.full((n, k), -1, np.int64), np.zeros((n, k))
        if self._bm25 is None or n == 0:
            return pids, scores
        kk = min(k, len(self._pids))
        q = self._tok.tokenize(list(queries), update_vocab=False, show_progress=False)
        docs, sc = self._bm25.retrieve(q, k=kk, show_progress=False, n_threads=0)
        ok = sc > 0  # bm25s pads with score 0 when fewer documents share a term
        pids[:, :kk] = np.where(ok, self._pids[docs], -1)
        scores[:, :kk] = np.where(ok, sc, 0.0)
        return pids, scores


def dense_search(search_one: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                 vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``search_one(vector, k) -> (pids, relevance)`` for each query vector."""
    n = len(vectors)
    pids, scores = np.full((n, k), -1, np.int64), np.zeros((n, k))
    for i, v in enumerate(vectors):
        p, s = search_one(v, k)
        pids[i, :len(p)], scores[i, :len(p)] = p, s
    return pids, scores


def fuse(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int,
         rrf_k: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion: score(p) = sum over the lists holding p of 1 / (rrf_k + rank)."""
    n = len(a[0])
    pids, scores = np.full((n, k), -1, np.int64), np.zeros((n, k))
    for i in range(n):
        acc: dict[int, float] = {}
        for P, _ in (a, b):
            for r, p in enumerate(P[i].tolist()):
                if p >= 0:
                    acc[p] = acc.get(p, 0.0) + 1.0 / (rrf_k + r + 1)
        best = sorted(acc.items(), key=lambda kv: -kv[1])[:k]
        if best:
            pids[i, :len(best)] = [p for p, _ in best]
            scores[i, :len(best)] = [s for _, s in best]
    return pids, scores


def passage_weights(scores: np.ndarray, pids: np.ndarray, temperature: float) -> np.ndarray:
    """softmax((score / best score - 1) / temperature) over each query's passages (0 where none)."""
    ok = pids >= 0
    top = np.maximum(scores[:, :1], 1e-12)
    z = np.where(ok, (scores / top - 1.0) / temperature, -np.inf)
    z = z - np.where(ok.any(1), z.max(1), 0.0)[:, None]
    w = np.where(ok, np.exp(z), 0.0)
    return w / np.maximum(w.sum(1, keepdims=True), 1e-300)
