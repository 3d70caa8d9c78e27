"""Cheap features for the learned parts.

* Candidate features (reranker): for each retrieved pattern, its context length, whether its
  context is exactly the query's last tokens, and ``div``, its redundancy with a better-ranked
  candidate: in the multi-resolution store the same text yields nested patterns ("the game",
  "of the game"), and a nested pair counts the same evidence twice.
* Context features (policy): how confident the back-off is, from its history statistics, and
  how much the context cache knows about the previous token. They need no encoding, so the
  policy's skip stage can decide from them whether to encode and search at all.
"""
from __future__ import annotations

import numpy as np

from .kneser_ney import KneserNeyLM
from .counts import stream_nodes
from .patterns import PatternTable


def right_aligned(seq: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """[n, width] the ``width`` tokens before each position (seq[i-width:i]), -1 padded left."""
    seq = np.asarray(seq, dtype=np.int64)
    j = np.arange(width, 0, -1)  # column c holds seq[i - (width - c)]
    idx = np.asarray(positions, dtype=np.int64)[:, None] - j[None, :]
    return np.where(idx >= 0, seq[np.maximum(idx, 0)], -1)


def candidate_features(patterns: PatternTable, stream: np.ndarray, ids: np.ndarray,
                       query_ctx: np.ndarray, batch: int = 2048) -> dict[str, np.ndarray]:
    """``div``, ``len`` and ``exact`` [n, k] for pattern ids [n, k] (-1 = none) and the
    queries' right-aligned contexts [n, W] (W >= the longest pattern)."""
    n, k = ids.shape
    W = query_ctx.shape[1]
    lmax = int(patterns.length.max()) if len(patterns) else 1
    out = {"div": np.zeros((n, k)), "len": np.zeros((n, k)), "exact": np.zeros((n, k))}
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # [j, i]: i ranks before j
    back = np.arange(W - 1, -1, -1)  # column c is W-1-c tokens before the last one
    for s in range(0, n, batch):
        I = ids[s:s + batch]
        valid = I >= 0
        pid = np.maximum(I, 0)
        L = patterns.length[pid].astype(np.int64)
        first = patterns.first[pid]
        idx = first[..., None] - back[None, None, :]
        tok = np.where(back[None, None, :] < L[..., None], stream[np.maximum(idx, 0)], -1)
        q = query_ctx[s:s + batch][:, None, :]
        exact = np.all((tok == q) | (tok < 0), axis=-1) & valid
        a, b = tok[:, :, None, :], tok[:, None, :, :]
        nested = np.all((a == b) | (a < 0) | (b < 0), axis=-1)
        div = np.any(nested & earlier[None] & valid[:, None, :], axis=-1) & valid
        out["div"][s:s + batch] = div
        out["exact"][s:s + batch] = exact
        out["len"][s:s + batch] = np.where(valid, L / lmax, 0.0)
    return out


def backoff_features(kn: KneserNeyLM, seq: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """[n, 3] for predicting seq[i]: longest matched history order / N, log1p of that
    history's count, and its back-off weight gamma/total (how much mass it leaves to lower
    orders: high means the back-off is unsure)."""
    seq = np.asarray(seq, dtype=np.int64)
    nodes = stream_nodes(kn._keys_by_order[: kn.order - 1] or [np.zeros(0, np.int64)], seq, kn.V)
    pos = np.asarray(positions, dtype=np.int64)
    order = np.zeros(len(pos))
    logtot = np.zeros(len(pos))
    gam = np.ones(len(pos))
    for h in range(1, kn.order):  # history length h, stats of level h
        node = nodes[h - 1][pos - 1] if h - 1 < len(nodes) else np.full(len(pos), -1)
        ok = (node >= 0) & (pos - 1 >= h - 1)
        tot = np.where(ok, kn.total[h - 1][np.maximum(node, 0)], 0.0)
        ok &= tot > 0
        order = np.where(ok, h, order)
        logtot = np.where(ok, np.log1p(tot), logtot)
        gam = np.where(ok, kn.gnum[h - 1][np.maximum(node, 0)] / np.where(ok, tot, 1.0), gam)
    return np.stack([order / max(kn.order - 1, 1), logtot / 10.0, gam], axis=1)


def cache_features(window: int, seq: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """[n, 1] for predicting seq[i]: log1p of how often seq[i-1] occurred in the ``window``
    tokens before it (what the cache's bigram part has to go on), / 5."""
    seq = np.asarray(seq, dtype=np.int64)
    N = len(seq)
    pos = np.asarray(positions, dtype=np.int64)
    keys = np.sort(seq * N + np.arange(N))
    prev = seq[pos - 1]
    lo = np.maximum(pos - window, 0)
    n_prev = np.searchsorted(keys, prev * N + pos - 1) - np.searchsorted(keys, prev * N + lo)
    return (np.log1p(n_prev) / 5.0)[:, None]


def skip_features(kf: np.ndarray, window: int, seq: np.ndarray, positions: np.ndarray
                  ) -> np.ndarray:
    """[n, SKIP_DIM] the policy's pre-encoding features: the back-off's confidence ``kf``
    (:func:`backoff_features` of the same positions) and the cache's knowledge of seq[i-1]."""
    return np.concatenate([kf, cache_features(window, seq, positions)], axis=1)


SKIP_DIM = 4
