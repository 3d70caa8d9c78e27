"""How the fitted mixtures parametrize their weights (build-time tuning's stages and the
memory's gate): a softmax-like map from free logits, its inverse for a start, their bounds, and
the rounding of what the config stores."""
from __future__ import annotations

from typing import Sequence

import numpy as np

WEIGHTS_MAX = 0.95        # the cache's and the memory's weights sum to at most this
LOGIT = (-20.0, 8.0)      # a weight's logit against the rest (see _weights)
LOG_KAPPA = (-7.0, 9.0)   # kappa in [1e-3, 8e3]


def _sig(x: float) -> float:
    """``x`` rounded to 6 significant digits (what the config stores)."""
    return float(f"{float(x):.6g}")


def _weight(x: float) -> float:
    """A rounded mixture weight (one the optimizer drove to its floor is 0)."""
    return 0.0 if x < 1e-6 else _sig(x)


def _weights(a: np.ndarray) -> np.ndarray:
    """Weights w_i = 0.95 e^a_i / (1 + sum_j e^a_j): each >= 0, their sum < 0.95, any one free
    to approach 0 (a stage's exact 0 is scored as a candidate of its own)."""
    e = np.exp(np.asarray(a, dtype=np.float64))
    return WEIGHTS_MAX * e / (1.0 + e.sum())


def _logits(w: Sequence[float]) -> list[float]:
    """The inverse of :func:`_weights` (clipped to the bounds), for a start."""
    r = np.asarray(w, dtype=np.float64) / WEIGHTS_MAX
    rest = max(1.0 - r.sum(), 1e-6)
    return list(np.clip(np.log(np.maximum(r, 1e-12) / rest), *LOGIT))
