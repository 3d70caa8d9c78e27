"""The learned energy reranker: the weights of :class:`~retgen_engine.energy.EnergyModel`
fitted by gradient descent (Adam) on the negative log-likelihood of the true next token under
the final mixed distribution.

p(y) = (1 - lam) p_kn(y) + lam * sum_j softmax_j(-E_j / T) * c(p_j, y) / c(p_j)
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from .energy import EnergyModel
from .modules import SavableModule

log = logging.getLogger(__name__)

FEATURES = ("sim", "div", "freq", "len", "exact")


class EnergyReranker(nn.Module, SavableModule):
    """Scores s = w . [sim, -div, -log freq, len, exact] (= -E); weights softmax(s / T).

    The mixing weight lam is learned with it (as a logit), since a sharper retrieval
    distribution deserves more weight."""

    def __init__(self, tau: float = 0.05, init_lam: float = 0.2, temperature: float = 1.0):
        super().__init__()
        self.tau = float(tau)
        self.temperature = float(temperature)
        self.w = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64))
        self.lam_logit = nn.Parameter(torch.tensor(float(np.log(init_lam / (1 - init_lam))),
                                                   dtype=torch.float64))

    def get_config(self) -> dict:
        return {"tau": self.tau, "init_lam": 0.2, "temperature": self.temperature}

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

    def nll(self, feats, valid, ratio, log_base) -> torch.Tensor:
        """Mean -log p(y) over queries; ratio = c(p_j, y) / c(p_j) (0 for invalid)."""
        p_ret = (self.weights(feats, valid) * ratio).sum(dim=-1)
        has = valid.any(dim=-1)
        lam = torch.sigmoid(self.lam_logit)
        a = torch.log1p(-lam) + log_base
        b = torch.log(lam) + torch.log(p_ret.clamp_min(1e-300))
        mixed = torch.where(has, torch.logaddexp(a, b), log_base)
        return -mixed.mean()

    def energy_model(self) -> EnergyModel:
        """The fitted weights as the numpy energy model used at inference."""
        w = self.w.detach().numpy()
        return EnergyModel(w_sim=float(w[0]), w_div=float(w[1]), w_freq=float(w[2]),
                           temperature=self.temperature, w_len=float(w[3]), w_exact=float(w[4]))


def fit_reranker(data: dict, tau: float, steps: int = 300, lr: float = 0.05, seed: int = 0,
                 progress: bool = True, val_frac: float = 0.2) -> tuple[EnergyReranker, dict]:
    """Fit on cached training queries (see :mod:`retgen_engine.heldout`)."""
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
    model = EnergyReranker(tau=tau)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = []
    with torch.no_grad():
        init = float(model.nll(feats[val], valid[val], ratio[val], log_base[val]))
    for step in tqdm(range(steps), desc="training reranker", disable=not progress):
        idx = torch.as_tensor(rng.choice(tr, size=min(4096, len(tr)), replace=False))
        loss = model.nll(feats[idx], valid[idx], ratio[idx], log_base[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    with torch.no_grad():
        final = float(model.nll(feats[val], valid[val], ratio[val], log_base[val]))
    report = {"val_nll_before": init, "val_nll_after": final, "train_loss_first": hist[0],
              "train_loss_last": float(np.mean(hist[-20:])), "weights": dict(zip(FEATURES,
              model.w.detach().tolist())), "lam": model.lam, "tau": tau, "steps": steps}
    log.info("reranker: held-out NLL %.4f -> %.4f; %s", init, final, report["weights"])
    return model, report
