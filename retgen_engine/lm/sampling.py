"""Turning a next-token log-distribution into a choice: temperature, top-k, top-p and a
repetition penalty, with a seeded numpy generator (same seed, same choices)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    allow_unk: bool = False

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
            raise ValueError(f"temperature={self.temperature!r}: must be >= 0 (0 = greedy)")
        if not (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0):
            raise ValueError(f"top_k={self.top_k!r}: must be an int >= 0 (0 = no limit)")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p={self.top_p!r}: must be in (0, 1]")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty!r}: must be > 0")


def sample(logp: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           seen: Optional[Iterable[int]] = None, unk_id: int = 0) -> int:
    """Pick a token id from log-probabilities ``logp`` [V]."""
    x = np.array(logp, dtype=np.float64)
    if not params.allow_unk:
        x[unk_id] = -np.inf
    if params.repetition_penalty != 1.0 and seen is not None:
        idx = np.fromiter(set(seen), dtype=np.int64)
        if idx.size:
            x[idx] = x[idx] * params.repetition_penalty  # log-probs are <= 0: > 1 penalizes
    if params.temperature == 0:
        return int(np.argmax(x))
    x = x / params.temperature
    if params.top_k and params.top_k < len(x):
        kth = np.partition(x, -params.top_k)[-params.top_k]
        x[x < kth] = -np.inf
    x -= np.max(x)
    p = np.exp(x)
    p /= p.sum()
    if params.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, params.top_p)) + 1  # smallest set with mass >= top_p
        keep = order[:cut]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))
