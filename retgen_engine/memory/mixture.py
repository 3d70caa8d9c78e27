"""The neighbour distribution: the retrieved passages' n-gram statistics as one distribution
over the whole vocabulary, and its weight in the language model.

For each order n = 1..N with history h (the n - 1 tokens before the position) the passages
give p_n(w | h) = F_n(w) / H_n (weighted counts, :mod:`.ngrams`) and C_n, how many times h
occurs in them. As in the context cache, an order's weight grows with C_n:

    mu_n' = mu_n C_n / (C_n + kappa_n)      (0 where h does not occur)
    lam_mem = sum_n mu_n'                   p_mem(w) = sum_n mu_n' p_n(w | h) / lam_mem

p_mem sums to 1 over the vocabulary (each p_n does), and the LM mixes it in log space:
log p = logaddexp(log(1 - lam_mem) + log p_rest, log(lam_mem) + log p_mem), so every token keeps
p > 0 and the mixture sums to 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..checks import ArgumentError, int_arg, float_arg
from ..config import MemoryConfig, check_fields
from .keys import KEYS

_M = MemoryConfig.model_fields


@dataclass(frozen=True)
class MemoryParams:
    """Per-call memory parameters; defaults and bounds are :class:`MemoryConfig`'s."""

    k: int = _M["k"].default
    refresh: int = _M["refresh"].default
    keys: str = _M["keys"].default
    temperature: float = _M["temperature"].default

    def __post_init__(self):
        int_arg("memory_k", self.k, 1)
        int_arg("memory_refresh", self.refresh, 1)
        float_arg("memory_temperature", self.temperature)
        if self.keys not in KEYS:
            raise ArgumentError(f"memory_keys={self.keys!r}: must be one of {', '.join(KEYS)}")
        checked = check_fields(MemoryConfig, k=self.k, refresh=self.refresh,
                               temperature=self.temperature)
        for name, v in checked.items():
            object.__setattr__(self, name, v)

    @classmethod
    def from_config(cls, cfg: MemoryConfig, k: Optional[int] = None,
                    refresh: Optional[int] = None, keys: Optional[str] = None,
                    temperature: Optional[float] = None) -> "MemoryParams":
        return cls(k=cfg.k if k is None else k, refresh=cfg.refresh if refresh is None else refresh,
                   keys=cfg.keys if keys is None else keys,
                   temperature=cfg.temperature if temperature is None else temperature)


def order_weights(C: np.ndarray, H: np.ndarray, mu, kappa) -> np.ndarray:
    """[N, ...] mu_n' for raw history counts ``C`` and weighted counts ``H``."""
    mu = np.asarray(mu, dtype=np.float64).reshape((-1,) + (1,) * (C.ndim - 1))
    kappa = np.asarray(kappa, dtype=np.float64).reshape(mu.shape)
    ok = (C > 0) & (H > 0)
    return np.where(ok, mu * C / np.maximum(C + kappa, 1e-300), 0.0)


def neighbour_probs(F: np.ndarray, H: np.ndarray, C: np.ndarray, mu, kappa
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(p_mem of the targets or tokens ``F`` describes, lam_mem): ``F`` [N, ...], ``H``/``C``
    [N, n] (stream) or [N] (one step, ``F`` [N, V])."""
    mus = order_weights(C, H, mu, kappa)
    lam = mus.sum(0)
    Hb = H.reshape(H.shape + (1,) * (F.ndim - H.ndim))
    mb = mus.reshape(Hb.shape)
    p = (mb * F / np.maximum(Hb, 1e-300)).sum(0)
    lam_b = np.asarray(lam).reshape(np.shape(lam) + (1,) * (p.ndim - np.ndim(lam)))
    return np.where(lam_b > 0, p / np.maximum(lam_b, 1e-300), 0.0), lam
