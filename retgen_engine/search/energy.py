"""The energy model that turns retrieved candidates into weights.

E(q, p) = -w_sim * sim(q, p) + w_div * div(p, P) + w_freq * log freq(p)
          - w_len * len(p) - w_exact * exact(q, p)
weights = softmax(-E / T) over the valid candidates of each query.

``sim`` is the negative index distance divided by the retrieval temperature tau (so the
default weights reduce to softmax(-distance / tau)); ``div`` is an MMR-style redundancy term,
the largest cosine similarity of a candidate to any better-ranked candidate (needs the
candidates' vectors, skipped when w_div is 0); ``freq`` is a pattern's exact count (for
documents: any positive per-document prior, 1 by default). Two extra features serve the
language model: ``len``, a pattern's context length over the longest length, and ``exact``,
1 when the pattern's context is exactly the query's last tokens. ``div`` may also be given
precomputed (the language model's redundancy is a nested context from the multi-resolution
store, see :mod:`retgen_engine.ngram.features`). The learned reranker sets these weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import EnergyConfig


def redundancy(vectors: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """div [n, k]: max cosine similarity of candidate j to candidates 0..j-1 (0 for j = 0)."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("nkd,njd->nkj", v, v)
    k = sims.shape[-1]
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)[None] & valid[:, None, :]
    sims = np.where(earlier, sims, -np.inf)
    div = sims.max(axis=-1)
    return np.where(np.isfinite(div), div, 0.0)


@dataclass
class EnergyModel:
    w_sim: float = 1.0
    w_div: float = 0.0
    w_freq: float = 0.0
    temperature: float = 1.0
    w_len: float = 0.0
    w_exact: float = 0.0

    FEATURES = ("sim", "div", "freq", "len", "exact")

    @property
    def uses_features(self) -> bool:
        """Whether the weights read the candidate features (div, len, exact)."""
        return bool(self.w_div or self.w_len or self.w_exact)

    @classmethod
    def from_config(cls, cfg: EnergyConfig) -> "EnergyModel":
        return cls(cfg.w_sim, cfg.w_div, cfg.w_freq, cfg.energy_temperature)

    def energies(self, distances: np.ndarray, valid: np.ndarray, tau: float | np.ndarray,
                 freq: Optional[np.ndarray] = None, vectors: Optional[np.ndarray] = None,
                 div: Optional[np.ndarray] = None, length: Optional[np.ndarray] = None,
                 exact: Optional[np.ndarray] = None) -> np.ndarray:
        tau = np.asarray(tau, dtype=np.float64)
        if np.any(tau <= 0):
            raise ValueError(f"retrieval temperature must be > 0, got {tau.min()}")
        sim = -np.asarray(distances, dtype=np.float64) / (tau[..., None] if tau.ndim else tau)
        e = -self.w_sim * sim
        if self.w_freq and freq is not None:
            e = e + self.w_freq * np.log(np.maximum(freq, 1))
        if self.w_div and div is not None:
            e = e + self.w_div * div
        elif self.w_div and vectors is not None:
            e = e + self.w_div * redundancy(vectors, valid)
        if self.w_len and length is not None:
            e = e - self.w_len * length
        if self.w_exact and exact is not None:
            e = e - self.w_exact * exact
        return np.where(valid, e, np.inf)

    def weights(self, distances: np.ndarray, valid: np.ndarray, tau: float | np.ndarray,
                freq: Optional[np.ndarray] = None, vectors: Optional[np.ndarray] = None,
                **features: Optional[np.ndarray]) -> np.ndarray:
        """Normalized weights [n, k] (rows with no valid candidate are all zero)."""
        e = self.energies(distances, valid, tau, freq, vectors, **features) / self.temperature
        m = np.min(np.where(valid, e, np.inf), axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        w = np.where(valid, np.exp(-(e - m)), 0.0)
        s = w.sum(axis=-1, keepdims=True)
        return w / np.where(s > 0, s, 1.0)
