"""Exact n-gram counting over a token-id stream, as a numpy prefix trie.

Level k holds the distinct k-grams of the stream. A k-gram is identified by its row in
``keys``, the sorted array of ``parent * V + last_token`` where ``parent`` is the row of its
first k-1 tokens in level k-1 (level 1 rows are the token ids themselves). Children of one
parent are therefore contiguous, and a lookup is one ``searchsorted``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from tqdm.auto import tqdm


@dataclass
class NGramLevel:
    order: int
    keys: np.ndarray               # int64 [n] sorted (level 1: arange(V))
    counts: np.ndarray             # int64 [n] raw occurrence counts
    first: np.ndarray              # int64 [n] stream position where the first occurrence ends
    suffix: Optional[np.ndarray]   # int64 [n] row in level k-1 of the last k-1 tokens (k >= 2)

    def __len__(self) -> int:
        return len(self.keys)


def build_levels(ids: np.ndarray, vocab_size: int, max_order: int,
                 progress: bool = False) -> list[NGramLevel]:
    """Count all n-grams of ``ids`` up to ``max_order``; returns levels 1..max_order."""
    ids64 = np.asarray(ids, dtype=np.int64)
    T, V = len(ids64), vocab_size
    counts1 = np.bincount(ids64, minlength=V).astype(np.int64)
    first1 = np.full(V, -1, dtype=np.int64)
    first1[ids64[::-1]] = np.arange(T - 1, -1, -1, dtype=np.int64)  # last write wins: first pos
    levels = [NGramLevel(1, np.arange(V, dtype=np.int64), counts1, first1, None)]
    prev = ids64  # row of the (k-1)-gram ending at each position (valid from k-2 on)
    for k in tqdm(range(2, max_order + 1), desc="counting n-grams", disable=not progress):
        if T < k:
            levels.append(NGramLevel(k, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                     np.zeros(0, np.int64), np.zeros(0, np.int64)))
            prev = np.zeros(0, np.int64)
            continue
        key = prev[:-1] * V + ids64[k - 1:]  # parent: the (k-1)-gram ending one step earlier
        keys, first_idx, inv, counts = np.unique(key, return_index=True, return_inverse=True,
                                                 return_counts=True)
        suffix_src = prev[1:]  # the (k-1)-gram ending at the same position
        levels.append(NGramLevel(k, keys, counts.astype(np.int64),
                                 first_idx.astype(np.int64) + (k - 1),
                                 suffix_src[first_idx].astype(np.int64)))
        prev = inv.astype(np.int64)
    return levels


def lookup(keys: np.ndarray, parent: np.ndarray, token: np.ndarray, vocab_size: int) -> np.ndarray:
    """Rows of (parent, token) in a level's ``keys``; -1 where absent or parent is -1."""
    parent = np.asarray(parent, dtype=np.int64)
    q = parent * vocab_size + np.asarray(token, dtype=np.int64)
    if len(keys) == 0:
        return np.full(q.shape, -1, dtype=np.int64)
    pos = np.searchsorted(keys, q)
    pos_c = np.minimum(pos, len(keys) - 1)
    found = (keys[pos_c] == q) & (parent >= 0) & (pos < len(keys))
    return np.where(found, pos_c, -1)


def children(keys: np.ndarray, parent: int, vocab_size: int) -> tuple[int, int]:
    """Row range [lo, hi) of the children of ``parent`` in the next level."""
    lo, hi = np.searchsorted(keys, [parent * vocab_size, (parent + 1) * vocab_size])
    return int(lo), int(hi)


def stream_nodes(keys_by_order: list[np.ndarray], seq: np.ndarray, vocab_size: int) -> list[np.ndarray]:
    """For each order k, the row of the k-gram of ``seq`` ending at each position (-1 if unseen).

    ``keys_by_order[k-1]`` is level k's keys (index 0, level 1, is unused).
    """
    seq = np.asarray(seq, dtype=np.int64)
    nodes = [seq.copy()]
    for k in range(2, len(keys_by_order) + 1):
        cur = np.full(len(seq), -1, dtype=np.int64)
        if len(seq) >= k:
            cur[1:] = lookup(keys_by_order[k - 1], nodes[-1][:-1], seq[1:], vocab_size)
        nodes.append(cur)
    return nodes


def history_nodes(keys_by_order: list[np.ndarray], history: list[int], vocab_size: int) -> list[int]:
    """Rows of the suffixes of ``history``: result[j] is the row of its last j+1 tokens (or -1)."""
    out: list[int] = []
    for j in range(1, min(len(history), len(keys_by_order)) + 1):
        toks = history[-j:]
        node = int(toks[0])
        for k, t in enumerate(toks[1:], start=2):
            node = int(lookup(keys_by_order[k - 1], np.array([node]), np.array([t]), vocab_size)[0])
            if node < 0:
                break
        out.append(node)
        if node < 0:
            break
    return out
