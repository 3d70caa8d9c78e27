"""Turning a next-token log-distribution into a choice: temperature, top-k, top-p and a
repetition penalty, with a seeded numpy generator (same seed, same choices)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Optional

import numpy as np

from ..checks import float_arg, int_arg
from ..config import GenerationConfig, check_fields

_D = GenerationConfig.model_fields


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling settings; defaults and bounds are :class:`GenerationConfig`'s."""

    temperature: float = _D["temperature"].default  # 0 = greedy
    top_k: int = _D["top_k"].default                # 0 = no limit
    top_p: float = _D["top_p"].default
    repetition_penalty: float = _D["repetition_penalty"].default
    allow_unk: bool = _D["allow_unk"].default

    def __post_init__(self):
        float_arg("temperature", self.temperature, 0.0)  # finite; 0 = greedy
        int_arg("top_k", self.top_k, 0)                  # 0 = no limit
        float_arg("top_p", self.top_p)
        float_arg("repetition_penalty", self.repetition_penalty)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in check_fields(GenerationConfig, **values).items():
            object.__setattr__(self, k, v)

    @classmethod
    def from_config(cls, cfg: GenerationConfig, **overrides) -> "SamplingParams":
        """The config's settings, with the ``overrides`` that are not None."""
        base = {f.name: getattr(cfg, f.name) for f in fields(cls)}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


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
