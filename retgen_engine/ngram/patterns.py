"""Multi-resolution patterns: (context of L tokens) -> exact counts of the tokens that followed.

For each configured length L, every distinct L-token context of the corpus that was followed
by something (and seen at least ``min_count`` times) is one pattern, stored once, with the
exact continuation counts and where it first occurs (for traces). Pattern ids are rows of
these arrays and the int64 ids of the vector index.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .counts import NGramLevel

log = logging.getLogger(__name__)


@dataclass
class PatternTable:
    length: np.ndarray        # int16 [P] context length in tokens
    first: np.ndarray         # int64 [P] stream position of the context's last token (1st time)
    count: np.ndarray         # int64 [P] how often the context was followed by a token
    cont_offsets: np.ndarray  # int64 [P+1]
    cont_tokens: np.ndarray   # int32 [C] continuation token ids, sorted within a pattern
    cont_counts: np.ndarray   # int32 [C] their exact counts

    def __len__(self) -> int:
        return len(self.length)

    def describe(self) -> dict:
        """The manifest entry: how many patterns, of which context lengths."""
        return {"count": len(self), "lengths": sorted(set(int(x) for x in np.unique(self.length)))}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"pat_length": self.length, "pat_first": self.first, "pat_count": self.count,
                "pat_cont_offsets": self.cont_offsets, "pat_cont_tokens": self.cont_tokens,
                "pat_cont_counts": self.cont_counts}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "PatternTable":
        return cls(a["pat_length"], a["pat_first"], a["pat_count"], a["pat_cont_offsets"],
                   a["pat_cont_tokens"], a["pat_cont_counts"])

    def continuations(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.cont_offsets[p], self.cont_offsets[p + 1]
        return self.cont_tokens[lo:hi], self.cont_counts[lo:hi]

    def context_ids(self, p: int, stream: np.ndarray) -> np.ndarray:
        end = int(self.first[p])
        return stream[end - int(self.length[p]) + 1: end + 1]

    def iter_contexts(self, stream: np.ndarray, chunk: int = 65536) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Yield (start row, [context token ids, ...]) in chunks, for encoding."""
        for s in range(0, len(self), chunk):
            e = min(len(self), s + chunk)
            yield s, [stream[f - L + 1: f + 1] for f, L in zip(self.first[s:e].tolist(),
                                                                 self.length[s:e].tolist())]


def extract_patterns(levels: list[NGramLevel], vocab_size: int, lengths: list[int],
                     min_counts: list[int]) -> PatternTable:
    """Patterns from the n-gram levels (which must reach ``max(lengths) + 1``)."""
    V = vocab_size
    parts = []
    for L, m in sorted(zip(lengths, min_counts)):
        if len(levels) < L + 1:
            raise ValueError(f"pattern length {L} needs n-gram levels up to {L + 1}")
        nxt = levels[L]  # (L+1)-grams = (context, next token) pairs
        if len(nxt) == 0:
            continue
        parent = nxt.keys // V
        tok = (nxt.keys % V).astype(np.int32)
        total = np.bincount(parent, weights=nxt.counts, minlength=len(levels[L - 1])).astype(np.int64)
        keep_ctx = total >= m
        keep = keep_ctx[parent]
        ctx = np.flatnonzero(keep_ctx)
        per = np.bincount(parent[keep], minlength=len(levels[L - 1]))[ctx]
        parts.append((L, ctx, levels[L - 1].first[ctx], total[ctx], per, tok[keep],
                      nxt.counts[keep].astype(np.int32)))
        log.info("patterns of length %d: %d contexts (min_count %d), %d continuations",
                 L, len(ctx), m, int(keep.sum()))
    if not parts:
        raise ValueError("the corpus is too short to extract any pattern of lengths "
                         f"{lengths}")
    length = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int16) for p in parts])
    first = np.concatenate([p[2] for p in parts]).astype(np.int64)
    count = np.concatenate([p[3] for p in parts])
    per = np.concatenate([p[4] for p in parts])
    offsets = np.zeros(len(per) + 1, dtype=np.int64)
    np.cumsum(per, out=offsets[1:])
    return PatternTable(length, first, count, offsets,
                        np.concatenate([p[5] for p in parts]), np.concatenate([p[6] for p in parts]))
