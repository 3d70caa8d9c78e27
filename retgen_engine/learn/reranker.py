"""The learned energy reranker: the weights of :class:`~retgen_engine.search.energy.EnergyModel`
and a per-query mixing gate, fitted by gradient descent (Adam) on the negative
log-likelihood of the true next token under the final mixed distribution.

p(y) = (1 - lam_q) p_base(y) + lam_q * sum_j softmax_j(-E_j / T) * c(p_j, y) / c(p_j)
logit(lam_q) = logit(lam) + g . z(q)

The gate reads what the search returned (how close the best pattern is, how concentrated
the weights are, how much weight sits on patterns whose context is exactly the query's) and
how sure the back-off is, and shifts the log-odds of the mixing weight lam for that query:
trust retrieval more where it found something good. ``z`` is standardized on the training
queries, so the gate leaves lam unchanged on an average query; lam itself (fixed, from the
caller, or chosen per query by the policy) keeps its meaning. Where the model has a document
memory, the likelihood is that of the whole mixture, the memory mixed last
(:func:`mix_last`), so the gate learns what patterns add on top of it.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from ..search.energy import EnergyModel
from .heldout import memory_pair
from ..persist.modules import SavableModule

log = logging.getLogger(__name__)

FEATURES = ("sim", "div", "freq", "len", "exact")
GATE_FEATURES = ("best_distance", "max_weight", "weight_entropy", "log_candidates",
                 "exact_length", "exact_weight", "backoff_order", "backoff_log_count",
                 "backoff_gamma")


def gate_inputs(w: torch.Tensor, dist: torch.Tensor, valid: torch.Tensor, exact: torch.Tensor,
                length: torch.Tensor, kf: torch.Tensor) -> torch.Tensor:
    """z [n, 9] (see GATE_FEATURES) from the candidates' weights, distances, exact-match and
    length features [n, k] and the back-off features [n, 3]."""
    nv = valid.sum(-1)
    best = torch.where(nv > 0, dist.masked_fill(~valid, float("inf")).min(-1).values,
                       torch.zeros((), dtype=dist.dtype))
    ent = -(w * torch.log(w.clamp_min(1e-30))).sum(-1)
    ex = exact * valid
    return torch.stack([best, w.max(-1).values, ent, torch.log1p(nv.to(dist.dtype)),
                        (ex * length).max(-1).values, (w * ex).sum(-1),
                        kf[:, 0], kf[:, 1], kf[:, 2]], dim=-1)


class EnergyReranker(nn.Module, SavableModule):
    """Scores s = w . [sim, -div, -log freq, len, exact] (= -E); weights softmax(s / T).

    The mixing weight lam is learned with it (as a logit, the prior of the gate), since a
    sharper retrieval distribution deserves more weight; with ``gate`` the log-odds of lam
    are shifted per query by g . z (see the module docstring)."""

    def __init__(self, tau: float = 0.05, init_lam: float = 0.2, temperature: float = 1.0,
                 gate: bool = False):
        super().__init__()
        if not tau > 0 or not temperature > 0 or not 0 < init_lam < 1:
            raise ValueError(f"EnergyReranker(tau={tau!r}, temperature={temperature!r}, "
                             f"init_lam={init_lam!r}): tau and temperature must be > 0, "
                             "init_lam in (0, 1)")
        self.tau = float(tau)
        self.temperature = float(temperature)
        self.init_lam = float(init_lam)
        self.gate = bool(gate)
        self.w = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
        self.lam_logit = nn.Parameter(torch.tensor(float(np.log(init_lam / (1 - init_lam))),
                                                   dtype=torch.float64))
        if self.gate:
            G = len(GATE_FEATURES)
            self.gate_w = nn.Parameter(torch.zeros(G, dtype=torch.float64))
            self.register_buffer("gate_mu", torch.zeros(G, dtype=torch.float64))
            self.register_buffer("gate_sd", torch.ones(G, dtype=torch.float64))

    def get_config(self) -> dict:
        return {"tau": self.tau, "init_lam": self.init_lam, "temperature": self.temperature,
                "gate": self.gate}

    @staticmethod
    def stack(dist, logfreq, div, length, exact, tau) -> torch.Tensor:
        """[n, k, 5] signed features (score = w . features)."""
        return torch.stack([-dist / tau, -div, -logfreq, length, exact], dim=-1)

    def weights(self, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        s = ((feats @ self.w) / self.temperature).masked_fill(~valid, -1e30)
        return torch.softmax(s, dim=-1) * valid  # rows with no valid candidate: all zero

    @property
    def lam(self) -> float:
        return float(torch.sigmoid(self.lam_logit).detach())

    def _gate_z(self, w, feats, valid, kf) -> torch.Tensor:
        dist = -feats[..., 0] * self.tau
        return gate_inputs(w, dist, valid, feats[..., 4], feats[..., 3], kf)

    def shift(self, z: torch.Tensor) -> torch.Tensor:
        """The gate's change of logit(lam) for gate inputs z [n, G] (0 without a gate)."""
        if not self.gate:
            return torch.zeros(z.shape[0], dtype=torch.float64)
        return ((z.double() - self.gate_mu) / self.gate_sd) @ self.gate_w

    def nll(self, feats, valid, ratio, log_base, kf=None, mem=None) -> torch.Tensor:
        """Mean -log p(y) over queries; ratio = c(p_j, y) / c(p_j) (0 for invalid); ``kf``
        [n, 3] back-off features (needed with a gate); ``mem`` (p_mem, lam_mem) [n] each: the
        document memory mixed last, as the model does (:func:`mix_last`)."""
        w = self.weights(feats, valid)
        p_ret = (w * ratio).sum(dim=-1)
        has = valid.any(dim=-1)
        logit = self.lam_logit
        if self.gate:
            logit = logit + self.shift(self._gate_z(w, feats, valid, kf))
        a = -torch.nn.functional.softplus(logit) + log_base  # log(1 - lam) + log p_base
        b = -torch.nn.functional.softplus(-logit) + torch.log(p_ret.clamp_min(1e-300))
        mixed = torch.where(has, torch.logaddexp(a, b), log_base)
        return -mix_last(mixed, mem).mean()

    @torch.no_grad()
    def lam_shift(self, weights: np.ndarray, distances: np.ndarray, valid: np.ndarray,
                  exact: np.ndarray, length: np.ndarray, kf: np.ndarray) -> np.ndarray:
        """The gate's logit shift [n] at inference (numpy in, numpy out; zeros without a gate)."""
        if not self.gate:
            return np.zeros(len(valid))
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        D = np.where(valid, distances, 0.0)
        z = gate_inputs(t(weights), t(D), torch.as_tensor(np.asarray(valid, bool)), t(exact),
                        t(length), t(kf))
        return self.shift(z).numpy()

    def energy_model(self) -> EnergyModel:
        """The fitted weights as the numpy energy model used at inference."""
        w = self.w.detach().numpy()
        return EnergyModel(w_sim=float(w[0]), w_div=float(w[1]), w_freq=float(w[2]),
                           temperature=self.temperature, w_len=float(w[3]), w_exact=float(w[4]))


def mix_last(logp: torch.Tensor, mem=None) -> torch.Tensor:
    """log((1 - lam_mem) p + lam_mem p_mem) for ``mem`` = (p_mem, lam_mem), tensors [n]
    (``logp`` unchanged without one): the memory's place in the model's mixture."""
    if mem is None:
        return logp
    p_mem, lam = mem
    a = torch.log1p(-lam) + logp
    b = torch.where(lam > 0, torch.log(lam.clamp_min(1e-300)) + torch.log(p_mem.clamp_min(1e-300)),
                    torch.full_like(logp, -math.inf))
    return torch.logaddexp(a, b)


def memory_of(data: dict):
    """The training data's memory terms as tensors (None when it was built without them)."""
    m = memory_pair(data)
    return None if m is None else tuple(torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in m)


def fit_reranker(data: dict, tau: float, steps: int = 300, lr: float = 0.05, seed: int = 0,
                 progress: bool = True, val_frac: float = 0.2, gate: bool = True,
                 init_lam: float = 0.02) -> tuple[EnergyReranker, dict]:
    """Fit on cached training queries (see :mod:`retgen_engine.learn.heldout`)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    n = len(data["log_base"])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(n * val_frac)
    val, tr = perm[:n_val], perm[n_val:]
    t = {k: torch.as_tensor(np.asarray(v)) for k, v in data.items()
         if k in ("dist", "logfreq", "div", "len", "exact", "valid", "ratio", "log_base")}
    feats = EnergyReranker.stack(t["dist"].double(), t["logfreq"].double(), t["div"].double(),
                                 t["len"].double(), t["exact"].double(), tau)
    valid, ratio, log_base = t["valid"].bool(), t["ratio"].double(), t["log_base"].double()
    kf = torch.as_tensor(np.asarray(data["kf"]), dtype=torch.float64)
    model = EnergyReranker(tau=tau, init_lam=init_lam, gate=gate)
    if gate:  # standardize the gate inputs on the training part (similarity-only weights)
        with torch.no_grad():
            z = model._gate_z(model.weights(feats[tr], valid[tr]), feats[tr], valid[tr], kf[tr])
            model.gate_mu.copy_(z.mean(0))
            model.gate_sd.copy_(z.std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = []

    mem = memory_of(data)

    def loss_on(idx):
        m = None if mem is None else (mem[0][idx], mem[1][idx])
        return model.nll(feats[idx], valid[idx], ratio[idx], log_base[idx], kf[idx], m)

    with torch.no_grad():
        init = float(loss_on(val))
    for step in tqdm(range(steps), desc="training reranker", disable=not progress):
        idx = torch.as_tensor(rng.choice(tr, size=min(4096, len(tr)), replace=False))
        loss = loss_on(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        final = float(loss_on(val))
    report = {"val_nll_before": init, "val_nll_after": final, "train_loss_first": hist[0],
              "train_loss_last": float(np.mean(hist[-20:])), "weights": dict(zip(FEATURES,
              model.w.detach().tolist())), "lam": model.lam, "tau": tau, "steps": steps,
              "gate": dict(zip(GATE_FEATURES, model.gate_w.detach().tolist())) if gate else None,
              "memory_in_mixture": mem is not None}
    log.info("reranker: held-out NLL %.4f -> %.4f; %s", init, final, report["weights"])
    return model, report
