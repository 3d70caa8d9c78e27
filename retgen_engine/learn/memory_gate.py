"""Fitting the memory's learned gate (:mod:`retgen_engine.memory.gate`) with its weights.

The gate's weights, the memory's per-order weights and its kappa are fitted together by
maximum likelihood on held-out text (L-BFGS-B, gradients by torch autograd in float64), from
the per-order fit without a gate: the held-out positions' memory counts (F, H, C), the largest
passage weight each read, and the back-off features of the same positions, on top of the
distribution the memory is mixed into. The features are standardized on the fitted positions
(their mean and standard deviation, floored, are saved with the weights) and the gate's
weights carry a small L2 penalty, so that a feature nearly constant where the gate is fitted
cannot swing it on new text. The result is scored with the
engine's own functions (``neighbour_probs``, ``apply_gate``, ``mix_logprobs``) after rounding,
and is returned only if it beats the config it started from; whether the gate helps on text
it was not fitted on is for the benchmarks to show (``benchmarks/lm_benchmark.py``).
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import minimize

from ..config import MemoryConfig
from ..lm.logmix import mix_logprobs
from ..memory.gate import GATE_MAX, SHIFT_MAX, apply_gate, gate_inputs
from ..memory.mixture import neighbour_probs
from .weights import LOG_KAPPA, LOGIT, WEIGHTS_MAX, _logits, _sig, _weight, _weights

log = logging.getLogger(__name__)

GATE_BOUND = 8.0          # |weight| of a standardized feature, |bias|
SCALE_MIN = 0.1           # a feature's scale at least (one nearly constant where fitted)
L2 = 1e-3                 # penalty on the gate's weights (not its bias), per unit of mean NLL


def memory_nll(log_prev: np.ndarray, F, H, C, wmax, context, cfg: MemoryConfig) -> float:
    """The mean NLL of ``log_prev`` with the memory of ``cfg`` mixed last, as the model computes."""
    p, lam = neighbour_probs(F, H, C, cfg.weights, cfg.kappa)
    lam = apply_gate(cfg, lam, C, wmax, context)
    return float(-mix_logprobs(log_prev, p, lam).mean())


def standardize(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) of raw features ``z``: mean and standard deviation, at least
    :data:`SCALE_MIN` (a feature nearly constant on the fitted positions must not move the
    gate far where it varies)."""
    return z.mean(0), np.maximum(z.std(0), SCALE_MIN)


def fit_gate(log_prev: np.ndarray, F: np.ndarray, H: np.ndarray, C: np.ndarray,
             wmax: np.ndarray, context: np.ndarray, start: MemoryConfig,
             maxiter: int = 300) -> MemoryConfig:
    """``start`` (per-order weights and kappa, fitted without a gate at its temperature) with a
    gate fitted jointly with them on these positions; ``start`` itself if that does not lower
    the NLL."""
    import torch

    N = start.order
    z = gate_inputs(context, C, wmax)
    center, scale = standardize(z)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    Ft, Ht, Ct, q = t(F), t(H), t(C), t(np.exp(log_prev))
    zs = t((z - center) / scale)
    ok = (Ct > 0) & (Ht > 0)
    pn = torch.where(ok, Ft / torch.where(ok, Ht, torch.ones_like(Ht)), torch.zeros_like(Ft))
    G = z.shape[1]

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        e = torch.exp(xt[:N])
        w = WEIGHTS_MAX * e / (1 + e.sum())
        kappa = torch.exp(xt[N:2 * N])
        mus = torch.where(ok, w[:, None] * Ct / (Ct + kappa[:, None]), torch.zeros_like(Ct))
        lam = mus.sum(0)
        has = lam > 0
        safe = torch.where(has, lam, torch.ones_like(lam))
        p = (mus * pn).sum(0) / safe
        logit = torch.log(safe.clamp(1e-12, 1 - 1e-12)) - torch.log1p(-safe.clamp(1e-12, 1 - 1e-12))
        shift = (zs @ xt[2 * N:2 * N + G] + xt[-1]).clamp(-SHIFT_MAX, SHIFT_MAX)
        lg = torch.sigmoid(logit + shift).clamp(max=GATE_MAX)
        lg = torch.where(has, lg, torch.zeros_like(lg))
        f = -torch.log((1 - lg) * q + lg * p).mean() + L2 * (xt[2 * N:2 * N + G] ** 2).sum()
        f.backward()
        return float(f.detach()), xt.grad.numpy().copy()

    a0 = _logits(start.weights)
    k0 = np.clip(np.log(np.maximum(start.kappa, 1e-3)), *LOG_KAPPA)
    x0 = np.concatenate([a0, k0, np.zeros(G + 1)])
    bounds = [LOGIT] * N + [LOG_KAPPA] * N + [(-GATE_BOUND, GATE_BOUND)] * (G + 1)
    r = minimize(nll, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": maxiter})
    cfg = MemoryConfig.model_validate({
        **start.model_dump(), "weights": [_weight(v) for v in _weights(r.x[:N])],
        "kappa": [_sig(v) for v in np.exp(r.x[N:2 * N])],
        "gate": [_sig(v) for v in r.x[2 * N:]], "gate_center": [_sig(v) for v in center],
        "gate_scale": [_sig(v) for v in scale]})
    before = memory_nll(log_prev, F, H, C, wmax, context, start)
    after = memory_nll(log_prev, F, H, C, wmax, context, cfg)
    log.info("memory gate fitted on %d positions (%d iterations): perplexity %.3f -> %.3f",
             len(log_prev), r.nit, math.exp(before), math.exp(after))
    return cfg if after < before else start
