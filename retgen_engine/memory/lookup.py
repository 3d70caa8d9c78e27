"""How the memory answers a query: the passages a query finds (lexical, dense or fused keys,
with an exclusion mask for held-out queries), and their n-gram counts at every position of a
stream or at one generation step. Mixed into :class:`~.memory.PassageMemory`, which keeps the
records, the tables and the lock these read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .gate import apply_gate
from .keys import dense_search, fuse, passage_weights
from .mixture import MemoryParams, neighbour_probs
from .ngrams import StepCounts

_CHUNK = 8192  # stream positions per table lookup


@dataclass
class StepMemory:
    """What the memory gave one generation step (for traces)."""

    pids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    H: np.ndarray = field(default_factory=lambda: np.zeros(0))
    C: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lam: float = 0.0
    counts: Optional[StepCounts] = None  # what the step read, per passage (for traces)


class PassageLookup:
    """Finding passages and reading their counts (module docstring); the memory provides
    ``tokenizer``, ``store``, ``config``, ``sync``, ``_encode`` and the state it derives from
    the records (``_table``, ``_lexical``, ``_texts``, ``_found``, ``_lock``, revisions)."""

    def _query_text(self, toks: np.ndarray) -> str:
        itos = self.tokenizer.vocab.itos
        return self.tokenizer.context_text([itos[int(t)] for t in toks])

    def _dense_one(self, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(self.store, "search_ids"):  # the faiss store's ids are the passage ids
            ids, rel = self.store.search_ids(v, k=k)
            return ids, rel.astype(np.float64)
        hits = self.store.search(v, k=k)
        ids = [self.store.int_id(h.id) for h in hits]
        keep = [i for i, x in enumerate(ids) if x is not None]
        return (np.array([ids[i] for i in keep], np.int64),
                np.array([hits[i].score for i in keep]))

    def find(self, queries: Sequence[np.ndarray], params: MemoryParams,
             exclude: Optional[Sequence[set]] = None, progress: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """(pids [n, k], scores [n, k]) of the passages found for each query (token ids), best
        first; -1 / 0 where none. ``exclude``: per query, pids it may not retrieve."""
        self.sync()
        n, k = len(queries), params.k
        texts = [self._query_text(q) for q in queries]
        has = np.array([bool(t.strip()) for t in texts], dtype=bool)
        pids, scores = np.full((n, k), -1, np.int64), np.zeros((n, k))
        if not len(self._table) or not has.any():
            return pids, scores
        kk = k + (max(len(e) for e in exclude) if exclude else 0)
        q = [t for t, h in zip(texts, has) if h]
        with self._lock:
            found = []
            if params.keys in ("lexical", "fused"):
                if self._lex_rev != self._rev:
                    order = sorted(self._texts)
                    self._lexical.rebuild(np.array(order), [self._texts[p] for p in order])
                    self._lex_rev = self._rev
                found.append(self._lexical.search(q, kk))
            if params.keys in ("dense", "fused"):
                vecs = self._encode(q, progress, "encoding memory queries", "query")
                found.append(dense_search(self._dense_one, vecs, kk))
        P, S = found[0] if len(found) == 1 else fuse(found[0], found[1], kk, self.config.rrf_k)
        if exclude:
            for i, e in enumerate(e for e, h in zip(exclude, has) if h):
                if e:
                    bad = np.isin(P[i], list(e))
                    o = np.argsort(bad, kind="stable")
                    P[i], S[i] = np.where(bad, -1, P[i])[o], np.where(bad, 0.0, S[i])[o]
        pids[has], scores[has] = P[:, :k], S[:, :k]
        return pids, scores

    def stream_queries(self, seq: np.ndarray, pos: np.ndarray, refresh: int
                       ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(refresh points, index of each position's point, the query tokens of each point):
        position i queries at (i // refresh) * refresh with the ``query_length`` tokens before."""
        uq, inv = np.unique((np.asarray(pos) // refresh) * refresh, return_inverse=True)
        Lq = self.config.query_length
        return uq, inv, [np.asarray(seq[max(0, b - Lq):b], np.int64) for b in uq]

    # -- the neighbour distribution ----------------------------------------------------
    def stream_counts(self, seq: np.ndarray, pos: np.ndarray, params: MemoryParams,
                      found: Optional[tuple[np.ndarray, np.ndarray]] = None,
                      exclude: Optional[Sequence[set]] = None, progress: bool = False,
                      with_wmax: bool = False) -> tuple[np.ndarray, ...]:
        """[N, n] (F, H, C) of :meth:`NGramTable.target_counts` at positions ``pos`` of ``seq``,
        each position reading the passages its refresh point found (``found``: the
        :meth:`find` result of :meth:`stream_queries`' queries, computed when not given, at
        k >= params.k; ``exclude``: per refresh point, pids it may not retrieve).
        ``with_wmax``: also [n] the largest passage weight each position read (the gate's)."""
        seq = np.asarray(seq, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.int64)
        N = self.config.order
        F, H, C = (np.zeros((N, len(pos))) for _ in range(3))
        wmax = np.zeros(len(pos))
        self.sync()
        if not len(self._table) or not len(pos):
            return (F, H, C, wmax) if with_wmax else (F, H, C)
        _, inv, queries = self.stream_queries(seq, pos, params.refresh)
        pids, scores = found if found is not None else self.find(queries, params, exclude, progress)
        pids, scores = pids[:, :params.k], scores[:, :params.k]
        w = passage_weights(scores, pids, params.temperature)
        for lo in range(0, len(pos), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            F[:, sl], H[:, sl], C[:, sl] = self._table.target_counts(
                seq, pos[sl], pids[inv[sl]], w[inv[sl]], seq[pos[sl]])
        wmax = w.max(1)[inv] if w.shape[1] else wmax
        return (F, H, C, wmax) if with_wmax else (F, H, C)

    def stream_terms(self, seq: np.ndarray, pos: np.ndarray, params: MemoryParams,
                     found: Optional[tuple[np.ndarray, np.ndarray]] = None,
                     exclude: Optional[Sequence[set]] = None, progress: bool = False,
                     context: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(p_mem of each position's own token, lam_mem) at positions ``pos`` of ``seq``
        (``context``: the back-off features [n, 3] a memory with a gate reads, :mod:`.gate`)."""
        F, H, C, wmax = self.stream_counts(seq, pos, params, found, exclude, progress, True)
        p, lam = neighbour_probs(F, H, C, self.config.weights, self.config.kappa)
        return p, apply_gate(self.config, lam, C, wmax, context)

    def step_terms(self, history: Sequence[int], params: MemoryParams, vocab_size: int,
                   context: Optional[np.ndarray] = None) -> tuple[np.ndarray, float, StepMemory]:
        """(p_mem [V], lam_mem, what was read) after ``history``: the stream's terms at one
        position, for every token (``context``: as in :meth:`stream_terms`, [1, 3])."""
        self.sync()
        pos = len(history)
        if not len(self._table) or pos == 0:
            return np.zeros(vocab_size), 0.0, StepMemory()
        S, Lq = params.refresh, self.config.query_length
        b = (pos // S) * S
        q = tuple(int(t) for t in history[max(0, b - Lq):b])
        key = (q, params)
        tail = list(history[-(self.config.order - 1):]) if self.config.order > 1 else []
        seq = np.asarray(tail + [0], dtype=np.int64)  # all the tables read: the last N-1 tokens
        with self._lock:
            hit = self._found.get(key)
            if hit is None:
                pids, scores = self.find([np.array(q, np.int64)], params)
                hit = [pids[0], passage_weights(scores, pids, params.temperature)[0], None]
                self._found[key] = hit
                if len(self._found) > 256:
                    self._found.popitem(last=False)
            pids, w = hit[0], hit[1]
            # the order-1 part is the same at every step until the next refresh: read once
            counts = self._table.step_counts(seq, len(tail), pids, w, vocab_size, unigram=hit[2])
            if hit[2] is None or hit[2].F.shape[1] != vocab_size:
                hit[2] = counts.first_order()  # a copy: the cache keeps [1, V], not [N, V]
        cfg = self.config
        p, lam = neighbour_probs(counts.F, counts.H, counts.C, cfg.weights, cfg.kappa)
        lam = float(apply_gate(cfg, np.reshape(lam, 1), counts.C, [w.max() if len(w) else 0.0],
                               context)[0])
        return p, lam, StepMemory(pids, w, counts.H, counts.C, lam, counts)
