"""The stages of build-time tuning (:mod:`.tuning`), each fitted on the held-out slice by
maximum log-likelihood on top of the stage before it: the context cache, pattern retrieval,
the document memory. :class:`SliceData` is what they all read; each stage computes the
expensive parts once (window statistics, the pattern search, the memory's lookups) and then
fits the weights that only mix them, with L-BFGS-B from several starts. Every value is scored
with the engine's own mixing functions (``ContextCache.mix_parts``, ``mix_logprobs``,
``neighbour_probs``, the retriever's energy weights), so what is fitted is what the model
computes.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from tqdm.auto import tqdm

from ..config import MemoryConfig
from ..lm.mixture import mix_logprobs
from ..memory.gate import apply_gate
from ..memory.mixture import MemoryParams, neighbour_probs
from ..ngram.cache import ContextCache
from ..ngram.features import candidate_features, right_aligned
from .heldout import MEMORY_GUARD, HeldOutSlice
from .memory_gate import fit_gate
from .weights import LOG_KAPPA, LOGIT, _logits, _sig, _weight, _weights

DECAYS = (0.0, 50.0, 200.0, 1000.0)
K_GRID = (4, 8, 16, 32, 64, 128)
TAU_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MEMORY_TAUS = (0.1, 0.2, 0.5)
LAM_MAX = 0.95
LOG_TAU = (math.log(1e-3), math.log(10.0))


@contextlib.contextmanager
def one_thread():
    """BLAS on one thread while optimizing: the tiny vectors of L-BFGS-B are ten times slower
    when every call wakes the thread pools torch and faiss started."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn (sentence-transformers needs it)
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _lbfgs(f, starts: Sequence[Sequence[float]], bounds) -> tuple[np.ndarray, float]:
    """The best L-BFGS-B result over several starts (each clipped into the bounds)."""
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    best = None
    for x0 in starts:
        r = minimize(f, np.clip(np.asarray(x0, float), lo, hi), method="L-BFGS-B",
                     bounds=bounds, options={"maxiter": 200, "eps": 1e-7})
        if best is None or r.fun < best[1]:
            best = (np.asarray(r.x), float(r.fun))
    return best


@dataclass
class SliceData:
    """The held-out slice and what every stage reads: ``seq`` = stream[base:end] (the slice and
    the past its first positions see), ``pos`` the scored positions in ``seq``, ``log_kn`` the
    held-out back-off's log-probabilities of their tokens."""

    held: HeldOutSlice
    base: int
    seq: np.ndarray
    pos: np.ndarray
    log_kn: np.ndarray

    @property
    def stream_pos(self) -> np.ndarray:
        return self.pos + self.base

    @property
    def targets(self) -> np.ndarray:
        return self.seq[self.pos]


def prepare(lm: Any, start: int, end: int, context: int) -> SliceData:
    """The held-out slice [start, end) of the LM's training stream (``context``: past tokens
    kept before it for the cache and the queries)."""
    ret, kn = lm.retriever, lm.backoff
    stream = np.asarray(ret.stream, dtype=np.int64)
    lmax = ret.max_length
    held = HeldOutSlice.make(stream, kn.V, kn.order, lmax, start, end)
    base = max(0, start - context)
    seq = stream[base:end]
    pos = np.arange(start + held.margin(kn.order, lmax), end) - base
    log_kn = held.backoff.stream_logprobs(seq, start=1)[pos - 1]
    if lm.V > kn.V:  # <unk>'s back-off share, for <unk> and each word the memory added
        log_kn = log_kn - np.where(seq[pos] == 0, np.log(lm.V - kn.V + 1), 0.0)
    return SliceData(held, base, seq, pos, log_kn)


# -- stage 1: the context cache ------------------------------------------------------------
class CacheStage:
    """The cache's window statistics of the slice's targets, per unigram decay."""

    def __init__(self, d: SliceData, window: int, decays: Sequence[float], V: int,
                 progress: bool = False):
        self.d, self.window = d, window
        self.parts = {}
        for decay in tqdm(sorted(set(decays)), desc="tuning: cache", unit="decay",
                          disable=not progress):
            p, counts = ContextCache(window, decay=decay).parts(d.seq, d.pos, d.targets[:, None], V)
            self.parts[float(decay)] = (p[:, :, 0], counts)

    def logp(self, cache: ContextCache) -> np.ndarray:
        """log p_base of the slice's targets: the held-out back-off mixed with ``cache``."""
        return cache.mix_parts(self.d.log_kn, self.parts[float(cache.decay)])

    def fit(self, start: ContextCache) -> ContextCache:
        """The cache of the best held-out likelihood (``start`` is one of the candidates)."""
        best = (start, float(-self.logp(start).mean()))
        bounds = [LOGIT] * 3 + [LOG_KAPPA]
        starts = [_logits((start.unigram, start.bigram, start.trigram))
                  + [math.log(max(start.kappa, 1e-3))], _logits((0.05, 0.05, 0.05)) + [0.0]]
        for decay, parts in self.parts.items():
            def make(x, decay=decay):
                return ContextCache(self.window, *_weights(x[:3]), decay, math.exp(x[3]))
            x, fun = _lbfgs(lambda x: float(-self.logp(make(x)).mean()), starts, bounds)
            if fun < best[1]:
                best = (make(x), fun)
        c = best[0]
        return ContextCache(c.window, _weight(c.unigram), _weight(c.bigram), _weight(c.trigram),
                            _sig(c.decay), _sig(c.kappa))


# -- stage 2: pattern retrieval -------------------------------------------------------------
class PatternStage:
    """The held-out pattern search (:meth:`HeldOutSlice.candidates`: slice-only patterns
    masked, counts without the slice) with the unmasked candidates moved to the front of each
    row, best first: a row's top k are the k best patterns of an index without the slice."""

    def __init__(self, d: SliceData, ret: Any, kmax: int, progress: bool = False):
        c = d.held.candidates(ret, d.stream_pos, kmax + kmax // 4, progress)
        order = np.argsort(~c["valid"], axis=1, kind="stable")[:, :kmax]
        self.c = {k: np.take_along_axis(c[k], order, axis=1)
                  for k in ("dist", "ids", "valid", "ratio", "count")}
        self.masked_share = c["masked_share"]
        self.energy = ret.energy
        self.kmax = kmax
        self.features = {}
        if ret.energy.uses_features:
            f = candidate_features(ret.patterns, d.held.stream, self.c["ids"],
                                   right_aligned(d.held.stream, d.stream_pos, ret.max_length))
            self.features = {"div": f["div"], "length": f["len"], "exact": f["exact"]}

    def probs(self, k: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """(p_ret of each target, whether anything was retrieved) at (k, tau)."""
        c, k = self.c, min(int(k), self.kmax)
        valid = c["valid"][:, :k]
        w = self.energy.weights(c["dist"][:, :k], valid, tau, freq=c["count"][:, :k],
                                **{n: v[:, :k] for n, v in self.features.items()})
        return (w * c["ratio"][:, :k]).sum(axis=1), valid.any(axis=1)

    @staticmethod
    def mix(log_base, p, has, lam) -> np.ndarray:
        return mix_logprobs(log_base, p, np.where(has, lam, 0.0))

    def logp(self, log_base: np.ndarray, k: int, tau: float, lam: float) -> np.ndarray:
        return log_base if lam == 0 else self.mix(log_base, *self.probs(k, tau), lam)

    def fit(self, log_base: np.ndarray, start: tuple[int, float, float], progress: bool = False
            ) -> tuple[int, float, float]:
        """(k, tau, lam) of the best held-out likelihood on top of ``log_base`` (``start`` and
        lam = 0 are candidates)."""
        def nll(p, has, lam):
            return float(-self.mix(log_base, p, has, lam).mean())

        best = min([(start, float(-self.logp(log_base, *start).mean())),
                    ((start[0], start[1], 0.0), float(-log_base.mean()))], key=lambda b: b[1])
        ks = sorted({k for k in K_GRID if k <= self.kmax} | {min(start[0], self.kmax)})
        grid = [(k, t) for k in ks for t in sorted(set(TAU_GRID) | {start[1]})]
        for k, tau in tqdm(grid, desc="tuning: patterns", unit="(k,tau)", disable=not progress):
            p, has = self.probs(k, tau)
            r = minimize_scalar(lambda lam: nll(p, has, lam), bounds=(0.0, LAM_MAX),
                                method="bounded", options={"xatol": 1e-5})
            if r.fun < best[1]:
                best = ((k, tau, float(r.x)), float(r.fun))
        (k, tau, lam), _ = best
        if lam > 0:  # refine tau and lam together at the best k
            x, fun = _lbfgs(lambda x: nll(*self.probs(k, math.exp(x[0])), x[1]),
                            [(math.log(tau), lam)], [LOG_TAU, (0.0, LAM_MAX)])
            if fun < best[1]:
                best = ((k, math.exp(x[0]), float(x[1])), fun)
        k, tau, lam = best[0]
        return int(k), _sig(tau), _weight(lam)


# -- stage 3: the document memory -----------------------------------------------------------
def memory_found(d: SliceData, memory: Any, doc_offsets, doc_names, progress: bool = False
                 ) -> tuple[tuple[np.ndarray, np.ndarray], set]:
    """(the memory's search for the slice's refresh points, at the config's keys and k, with
    the passages that overlap the slice or the :data:`MEMORY_GUARD` tokens before it (at least
    its context) excluded; those ids)."""
    before = max(d.held.start - d.base, MEMORY_GUARD)
    ex = d.held.memory_exclusions(memory, doc_offsets, doc_names, before=before)
    mp = MemoryParams.from_config(memory.config)
    uq, _, queries = memory.stream_queries(d.seq, d.pos, mp.refresh)
    return memory.find(queries, mp, exclude=[ex] * len(uq), progress=progress), ex


class MemoryStage:
    """The memory's n-gram statistics of the slice's targets (F, H, C of
    :meth:`PassageMemory.stream_counts`) for each passage temperature, from the passages
    :func:`memory_found` found: each passage's counts are read once and weighted per
    temperature (the lookups are the cost, the weights only mix them)."""

    def __init__(self, d: SliceData, memory: Any, found, temperatures: Sequence[float],
                 progress: bool = False, chunk: int = 2048, context: Optional[np.ndarray] = None):
        from ..memory.keys import passage_weights

        self.context = context  # the positions' back-off features (the gate's), or None

        self.order = N = memory.config.order
        mp = MemoryParams.from_config(memory.config)
        _, inv, _ = memory.stream_queries(d.seq, d.pos, mp.refresh)
        pids, scores = found[0][:, :mp.k], found[1][:, :mp.k]
        taus = sorted(float(t) for t in set(temperatures))
        w = {t: passage_weights(scores, pids, t) for t in taus}
        n = len(d.pos)
        self.counts = {t: (np.zeros((N, n)), np.zeros((N, n)), np.zeros((N, n))) for t in taus}
        self.wmax = {t: (w[t].max(1) if w[t].shape[1] else np.zeros(len(w[t])))[inv] for t in taus}
        for lo in tqdm(range(0, n, chunk), desc="tuning: memory", unit="chunk",
                       disable=not progress):
            sl = slice(lo, lo + chunk)
            q = inv[sl]
            f, h, c = memory.table.target_counts(d.seq, d.pos[sl], pids[q], np.ones(pids[q].shape),
                                                 d.targets[sl], per_passage=True)
            for t in taus:
                F, H, C = self.counts[t]
                F[:, sl], H[:, sl], C[:, sl] = (f * w[t][q]).sum(-1), (h * w[t][q]).sum(-1), c.sum(-1)

    def logp(self, log_prev: np.ndarray, cfg: MemoryConfig) -> np.ndarray:
        tau = float(cfg.temperature)
        F, H, C = self.counts[tau]
        p, lam = neighbour_probs(F, H, C, cfg.weights, cfg.kappa)
        return mix_logprobs(log_prev, p, apply_gate(cfg, lam, C, self.wmax[tau], self.context))

    def fit(self, log_prev: np.ndarray, start: MemoryConfig, gate: bool = True) -> MemoryConfig:
        """The memory config of the best held-out likelihood on top of ``log_prev`` (``start``
        and the memory off, every weight 0, are candidates); with ``gate`` (and the positions'
        back-off features), the learned gate fitted with the weights of the best one
        (:func:`.memory_gate.fit_gate`); without, the result has no gate (nor has ``start``
        as a candidate)."""
        N = self.order
        if not gate:
            start = start.model_copy(update={"gate": [], "gate_center": [], "gate_scale": []})

        def make(tau, w, kappa) -> MemoryConfig:
            return MemoryConfig.model_validate({**start.model_dump(), "temperature": _sig(tau),
                                                "weights": [_weight(v) for v in w],
                                                "kappa": [_sig(v) for v in kappa],
                                                "gate": [], "gate_center": [], "gate_scale": []})

        def nll(tau, w, kappa) -> float:
            p, lam = neighbour_probs(*self.counts[tau], w, kappa)
            return float(-mix_logprobs(log_prev, p, lam).mean())

        best = min([(start, float(-self.logp(log_prev, start).mean())),
                    (make(start.temperature, [0.0] * N, start.kappa), float(-log_prev.mean()))],
                   key=lambda b: b[1])
        bounds = [LOGIT] * N + [LOG_KAPPA] * N
        starts = [_logits(start.weights) + [math.log(max(k, 1e-3)) for k in start.kappa],
                  _logits([0.02] * N) + [0.0] * N]
        for tau in self.counts:
            x, fun = _lbfgs(lambda x, tau=tau: nll(tau, _weights(x[:N]), np.exp(x[N:])), starts,
                            bounds)
            if fun < best[1]:
                best = (make(tau, _weights(x[:N]), np.exp(x[N:])), fun)
        cfg = best[0]
        if gate and self.context is not None and sum(cfg.weights) > 0:
            tau = float(cfg.temperature)
            cfg = fit_gate(log_prev, *self.counts[tau], self.wmax[tau], self.context,
                           cfg.model_copy(update={"gate": [], "gate_center": [], "gate_scale": []}))
            if float(-self.logp(log_prev, cfg).mean()) > best[1]:
                cfg = best[0]
        return cfg


