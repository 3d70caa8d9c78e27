"""Mixing two distributions in log space, as kNN-LM's ``combine_knn_and_vocab_probs`` does:
log p = logaddexp(log(1 - lam) + log p_a, log(lam) + log p_b), and a learned shift of lam's
log-odds (the reranker's gate)."""
from __future__ import annotations

import numpy as np


def mix_logprobs(log_kn: np.ndarray, p_ret: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """Log-space interpolation (as kNN-LM's combine_knn_and_vocab_probs)."""
    lam = np.asarray(lam, dtype=np.float64)
    with np.errstate(divide="ignore"):
        a = np.log1p(-lam) + log_kn
        b = np.where(lam > 0, np.log(lam), -np.inf) + np.log(p_ret)
    return np.logaddexp(a, b)


def gated_lam(lam, shift) -> np.ndarray:
    """sigmoid(logit(lam) + shift) where lam > 0, else 0."""
    lam = np.asarray(lam, dtype=np.float64)
    safe = np.clip(lam, 1e-12, 1 - 1e-12)
    out = 1.0 / (1.0 + np.exp(-(np.log(safe) - np.log1p(-safe) + shift)))
    return np.where(lam > 0, out, 0.0)
