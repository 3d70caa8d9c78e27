"""Per-call retrieval parameters and what a step or a stream lookup was made of."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..checks import float_arg, int_arg, optional
from ..config import IndexConfig, RetrievalConfig, check_fields
from ..memory.mixture import MemoryParams
from ..ngram.cache import CacheWeights
from ..search.retrieval import Retrieved

_R = RetrievalConfig.model_fields


@dataclass(frozen=True)
class RetrievalParams:
    """Per-call retrieval parameters (what the policy chooses); defaults and bounds are
    :class:`RetrievalConfig`'s (``nprobe``: :class:`IndexConfig`'s)."""

    k: int = _R["k"].default
    temperature: float = _R["temperature"].default
    lam: float = _R["lam"].default
    nprobe: Optional[int] = None
    #: let the learned policy choose k, temperature and lam per query
    use_policy: bool = False
    #: with the policy's skip stage: the share of queries that retrieve (None: its default)
    budget: Optional[float] = None
    #: the document memory's parameters (None: the memory is not read)
    memory: Optional[MemoryParams] = None

    def __post_init__(self):
        int_arg("k", self.k, 1)  # the number of retrieved patterns
        float_arg("temperature", self.temperature)
        float_arg("lam", self.lam)
        optional(int_arg, "nprobe", self.nprobe, 1)
        optional(float_arg, "budget", self.budget)
        checked = check_fields(RetrievalConfig, k=self.k, temperature=self.temperature,
                               lam=self.lam, budget=self.budget)
        if self.nprobe is not None:
            checked.update(check_fields(IndexConfig, nprobe=self.nprobe))
        for name, v in checked.items():
            object.__setattr__(self, name, v)


@dataclass
class StepInfo:
    """What one next-token distribution was made of (for traces)."""

    history: list[int]
    retrieved: Retrieved
    weights: np.ndarray
    lam: float
    params: RetrievalParams
    p_kn: np.ndarray = field(repr=False)
    p_ret: np.ndarray = field(repr=False)
    cache_mu: CacheWeights = CacheWeights()  # context-cache weights inside the base distribution
    lam_mem: float = 0.0                     # the memory's weight in the final mixture
    memory: Any = None                       # what the memory read (memory.StepMemory)
    p_base: Optional[np.ndarray] = field(default=None, repr=False)  # back-off + cache [V]


@dataclass
class Lookup:
    """What retrieval contributed at n positions: the per-position choices (k, tau, lam as
    given to the mixture before the gate), the positions that searched (``sel``), their
    results ``r`` with energy weights ``w``, and the effective lam (gate applied; 0 where
    nothing was retrieved)."""

    k: np.ndarray
    tau: np.ndarray
    lam: np.ndarray
    sel: np.ndarray
    r: Retrieved
    w: np.ndarray
    lam_eff: np.ndarray
    found: np.ndarray  # [n] the search found a valid pattern
