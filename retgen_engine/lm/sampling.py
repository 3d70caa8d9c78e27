"""Turning a next-token log-distribution into a choice: a repetition penalty, temperature,
top-k, top-p (nucleus), typical and min-p truncation, with a seeded numpy generator (same seed,
same choices).

The steps apply in that order, each on what the previous one left:

- ``repetition_penalty`` r multiplies the log-probability of every token already in the text
  (prompt and output) by r (log-probs are <= 0, so r > 1 makes them less likely);
- ``temperature`` T divides the log-probabilities (0: greedy, the argmax of the penalized
  distribution; the truncations below then do not matter);
- ``top_k`` keeps the k likeliest tokens (0: all);
- ``top_p`` keeps the smallest set of likeliest tokens whose mass reaches p (1: all;
  Holtzman et al. 2020);
- ``typical_p`` keeps the smallest set of tokens whose surprisal -log p is closest to the
  distribution's entropy and whose mass reaches the value (1: all; Meister et al. 2023);
- ``min_p`` keeps the tokens whose probability is at least min_p times the likeliest one's
  (0: all; Nguyen et al. 2024).

Every truncation keeps at least the likeliest token."""
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
    top_p: float = _D["top_p"].default              # 1 = no limit
    repetition_penalty: float = _D["repetition_penalty"].default
    allow_unk: bool = _D["allow_unk"].default
    min_p: float = _D["min_p"].default              # 0 = no limit
    typical_p: float = _D["typical_p"].default      # 1 = no limit

    def __post_init__(self):
        float_arg("temperature", self.temperature, 0.0)  # finite; 0 = greedy
        int_arg("top_k", self.top_k, 0)                  # 0 = no limit
        float_arg("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        float_arg("repetition_penalty", self.repetition_penalty, 0.0, lo_open=True)
        float_arg("min_p", self.min_p, 0.0, 1.0)
        float_arg("typical_p", self.typical_p, 0.0, 1.0, lo_open=True)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in check_fields(GenerationConfig, **values).items():
            object.__setattr__(self, k, v)

    @classmethod
    def from_config(cls, cfg: GenerationConfig, **overrides) -> "SamplingParams":
        """The config's settings, with the ``overrides`` that are not None."""
        base = {f.name: getattr(cfg, f.name) for f in fields(cls)}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


#: candidates sorted first by :func:`_smallest_set` (the whole vocabulary only when they do
#: not reach the mass), instead of sorting the whole vocabulary at every generated token.
CANDIDATES = 1024


def _smallest_set(p: np.ndarray, key: np.ndarray, mass: float) -> np.ndarray:
    """The first tokens in the order of ``key`` (ascending, ties by token id) whose probability
    ``p`` reaches ``mass`` of the total (at least one). Exact: the ``CANDIDATES`` smallest keys
    are sorted first, and the answer is taken from them only when every token outside them has
    a larger key than the last token kept; otherwise the whole vocabulary is sorted."""
    total = p.sum()
    if len(key) > 2 * CANDIDATES:
        part = np.argpartition(key, CANDIDATES)
        cand = np.sort(part[:CANDIDATES])
        bound = key[part[CANDIDATES]]  # the smallest key outside the candidates
        order = cand[np.argsort(key[cand], kind="stable")]
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, mass * total)) + 1
        if cut <= len(order) and key[order[cut - 1]] < bound:
            return order[:cut]
    order = np.argsort(key, kind="stable")
    cum = np.cumsum(p[order])
    cut = int(np.searchsorted(cum, mass * total)) + 1
    return order[:min(cut, len(order))]


def _keep(p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    q = np.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


def distribution(logp: np.ndarray, params: SamplingParams,
                 seen: Optional[Iterable[int]] = None, unk_id: int = 0) -> np.ndarray:
    """The distribution [V] that :func:`sample` draws from (one-hot for greedy)."""
    x = np.array(logp, dtype=np.float64)
    if not params.allow_unk:
        x[unk_id] = -np.inf
    if params.repetition_penalty != 1.0 and seen is not None:
        idx = np.fromiter(set(seen), dtype=np.int64)
        if idx.size:
            x[idx] = x[idx] * params.repetition_penalty  # log-probs are <= 0: > 1 penalizes
    if params.greedy:
        p = np.zeros(len(x))
        p[int(np.argmax(x))] = 1.0
        return p
    x = x / params.temperature
    if params.top_k and params.top_k < len(x):
        kth = np.partition(x, -params.top_k)[-params.top_k]
        x[x < kth] = -np.inf
    x -= np.max(x)
    p = np.exp(x)
    p /= p.sum()
    if params.top_p < 1.0:
        p = _keep(p, _smallest_set(p, -p, params.top_p))
    if params.typical_p < 1.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            logq = np.log(p)
            ent = -np.sum(np.where(p > 0, p * logq, 0.0))
            dev = np.where(p > 0, np.abs(-logq - ent), np.inf)
        p = _keep(p, _smallest_set(p, dev, params.typical_p))
    if params.min_p > 0.0:
        p = np.where(p >= params.min_p * p.max(), p, 0.0)
        p /= p.sum()
    return p


def sample(logp: np.ndarray, params: SamplingParams, rng: np.random.Generator,
           seen: Optional[Iterable[int]] = None, unk_id: int = 0) -> int:
    """Pick a token id from log-probabilities ``logp`` [V]."""
    p = distribution(logp, params, seen, unk_id)
    if params.greedy:  # no draw: the generator's state is left as it was
        return int(np.argmax(p))
    return int(rng.choice(len(p), p=p))
