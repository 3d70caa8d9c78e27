"""The memory's learned gate: its weight lam_mem moved per position by what else is known there.

Without a gate the memory's weight (:func:`.mixture.neighbour_probs`) grows with how often the
history occurs in the passages found, and nothing else. The gate shifts its log-odds by a
linear function of standardized features of the position:

    z = (the back-off's confidence: longest matched order, log1p of that history's count and its
         back-off weight, 3 values the language model supplies as ``context``;
         log1p(C_n) for each order n >= 2, the history's counts in the passages;
         the largest passage weight, how concentrated the search's answer is)
    s = clip(g . (z - center) / scale + b, -SHIFT_MAX, SHIFT_MAX)
    lam_mem' = min(sigmoid(logit(lam_mem) + s), GATE_MAX)

and is 0 where lam_mem is 0 (the history is nowhere in the passages). ``GATE_MAX`` < 1 keeps
every token's probability > 0, and p_mem is left as it is, so the mixture still sums to 1.

Order 1's count C_1 (all the tokens of the passages found, the same at every position of a
query) is left out: it measures how much was retrieved, which differs between the text a gate
is fitted on (its own passages excluded) and new text, and a gate fitted on it moved lam_mem to
its maximum on new text (tests/test_tuning.py's corpus). The shift is bounded for the same
reason.
Its weights are fitted with the per-order weights at build time and by ``tune_memory``
(:mod:`retgen_engine.learn.memory_gate`); a config with ``gate == []`` has none.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

#: how many features the language model supplies (``ngram.features.backoff_features``)
CONTEXT_DIM = 3
GATE_MAX = 0.99
SHIFT_MAX = 6.0


def gate_dim(order: int) -> int:
    """The number of features the gate of an order-``order`` memory reads."""
    return CONTEXT_DIM + int(order)


def gate_inputs(context: np.ndarray, C: np.ndarray, wmax: np.ndarray) -> np.ndarray:
    """[n, gate_dim] raw features: ``context`` [n, 3], the history counts ``C`` [N, n] of the
    orders >= 2 and the largest passage weight ``wmax`` [n]."""
    context = np.asarray(context, dtype=np.float64).reshape(-1, CONTEXT_DIM)
    C = np.asarray(C, dtype=np.float64).reshape(np.shape(C)[0], -1)
    return np.concatenate([context, np.log1p(C[1:]).T,
                           np.asarray(wmax, np.float64).reshape(-1, 1)], axis=1)


def gate_shift(z: np.ndarray, gate, center, scale) -> np.ndarray:
    """[n] the logit shift clip(g . (z - center) / scale + b, +-SHIFT_MAX) of raw features ``z``."""
    g = np.asarray(gate, dtype=np.float64)
    zs = (np.asarray(z, np.float64) - np.asarray(center, np.float64)) / np.asarray(scale, np.float64)
    return np.clip(zs @ g[:-1] + g[-1], -SHIFT_MAX, SHIFT_MAX)


def gated(lam: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """min(sigmoid(logit(lam) + shift), GATE_MAX) where lam > 0, else 0."""
    lam = np.asarray(lam, dtype=np.float64)
    safe = np.clip(lam, 1e-12, 1 - 1e-12)
    with np.errstate(over="ignore"):
        out = 1.0 / (1.0 + np.exp(-(np.log(safe) - np.log1p(-safe) + shift)))
    return np.where(lam > 0, np.minimum(out, GATE_MAX), 0.0)


def apply_gate(cfg, lam: np.ndarray, C: np.ndarray, wmax: np.ndarray,
               context: Optional[np.ndarray]) -> np.ndarray:
    """lam_mem after the gate of config ``cfg`` (unchanged when it has none)."""
    if not cfg.gate:
        return lam
    if context is None:
        raise ValueError("this memory has a learned gate, which reads the language model's "
                         "back-off features: pass context= (ngram.features.backoff_features "
                         "of the same positions)")
    z = gate_inputs(context, C, wmax)
    return gated(lam, gate_shift(z, cfg.gate, cfg.gate_center, cfg.gate_scale))
