"""The learned retrieval policy: an MLP from the query (its embedding plus cheap back-off
features) to the retrieval parameters k, tau and lambda (lambda = 0 skips retrieval),
trained with REINFORCE.

pi(q) = W3 ReLU(W2 ReLU(W1 q + b1) + b2) + b3, three categorical heads over fixed choices.
reward = log p(y | q, k, tau, lam) - cost * [lam > 0] * (1 + k / k_max)

The gain of retrieval over the base distribution is a few hundredths of a nat, far below the
spread of log p(y) across queries, so the advantage is taken against two baselines: the
query's own no-retrieval reward log p_base(y) (it does not depend on the action, so the
gradient stays unbiased) and a running mean of what remains. A small entropy bonus keeps the
heads from collapsing before the signal is found.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .modules import SavableModule

log = logging.getLogger(__name__)


class RetrievalPolicy(nn.Module, SavableModule):
    def __init__(self, input_dim: int, hidden_dim: int = 64,
                 k_choices: Sequence[int] = (8, 16, 32, 64),
                 tau_choices: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2),
                 lam_choices: Sequence[float] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)):
        super().__init__()
        if min(k_choices) < 1 or min(tau_choices) <= 0 or not all(0 <= x < 1 for x in lam_choices):
            raise ValueError("policy choices: k >= 1, tau > 0, lambda in [0, 1)")
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.k_choices = [int(x) for x in k_choices]
        self.tau_choices = [float(x) for x in tau_choices]
        self.lam_choices = [float(x) for x in lam_choices]
        self.net = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, len(self.k_choices) + len(self.tau_choices)
                                           + len(self.lam_choices)))

    def get_config(self) -> dict:
        return {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim,
                "k_choices": self.k_choices, "tau_choices": self.tau_choices,
                "lam_choices": self.lam_choices}

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        a, b = len(self.k_choices), len(self.k_choices) + len(self.tau_choices)
        return (torch.log_softmax(out[:, :a], -1), torch.log_softmax(out[:, a:b], -1),
                torch.log_softmax(out[:, b:], -1))

    @torch.no_grad()
    def act(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy choices (k, tau, lam) per row of x [n, input_dim]."""
        lk, lt, ll = self.heads(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        k = np.asarray(self.k_choices)[lk.argmax(-1).numpy()]
        tau = np.asarray(self.tau_choices)[lt.argmax(-1).numpy()]
        lam = np.asarray(self.lam_choices)[ll.argmax(-1).numpy()]
        return k, tau, lam


def fit_policy(x: np.ndarray, log_base: np.ndarray, p_ret: np.ndarray, policy: RetrievalPolicy,
               cost: float = 0.002, steps: int = 1500, lr: float = 3e-3, batch: int = 1024,
               seed: int = 0, progress: bool = True, val_frac: float = 0.2,
               entropy: float = 0.01) -> dict:
    """REINFORCE on cached queries. ``p_ret`` [n, |k|, |tau|] is the retrieval probability of
    the true token for each (k, tau) choice (computed once with the energy model in use)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    perm = rng.permutation(n)
    n_val = int(n * val_frac)
    val, tr = perm[:n_val], perm[n_val:]
    X = torch.as_tensor(np.asarray(x, dtype=np.float32))
    LBASE = torch.as_tensor(np.asarray(log_base, dtype=np.float64))
    PR = torch.as_tensor(np.asarray(p_ret, dtype=np.float64))
    ks = torch.as_tensor(policy.k_choices, dtype=torch.float64)
    lams = torch.as_tensor(policy.lam_choices, dtype=torch.float64)
    kmax = float(max(policy.k_choices))

    def reward(idx, ik, it, il):
        lam = lams[il]
        pr = PR[idx, ik, it]
        lp = torch.logaddexp(torch.log1p(-lam) + LBASE[idx],
                             torch.where(lam > 0, torch.log(lam.clamp_min(1e-300)) +
                                         torch.log(pr.clamp_min(1e-300)), torch.full_like(pr, -torch.inf)))
        lp = torch.where((lam > 0) & (pr <= 0), torch.log1p(-lam) + LBASE[idx], lp)
        return lp - cost * (lam > 0).double() * (1 + ks[ik] / kmax), lp

    def greedy_eval(idx):
        with torch.no_grad():
            lk, lt, ll = policy.heads(X[idx])
            r, lp = reward(idx, lk.argmax(-1), lt.argmax(-1), ll.argmax(-1))
            return float(-lp.mean()), float((lams[ll.argmax(-1)] > 0).double().mean())

    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    baseline = None
    before = greedy_eval(torch.as_tensor(val))
    losses = []
    policy.train()
    for _ in tqdm(range(steps), desc="training policy", disable=not progress):
        idx = torch.as_tensor(rng.choice(tr, size=min(batch, len(tr)), replace=False))
        lk, lt, ll = policy.heads(X[idx])
        ik = torch.multinomial(lk.exp(), 1).squeeze(1)
        it = torch.multinomial(lt.exp(), 1).squeeze(1)
        il = torch.multinomial(ll.exp(), 1).squeeze(1)
        r, _ = reward(idx, ik, it, il)
        adv = r - LBASE[idx]  # against the query's own no-retrieval reward
        m = float(adv.mean())
        baseline = m if baseline is None else 0.95 * baseline + 0.05 * m
        logp = lk.gather(1, ik[:, None]) + lt.gather(1, it[:, None]) + ll.gather(1, il[:, None])
        ent = -sum((h.exp() * h).sum(-1).mean() for h in (lk, lt, ll))
        loss = -((adv - baseline).float()[:, None] * logp).mean() - entropy * ent
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(-float(r.mean()))
    policy.eval()
    after = greedy_eval(torch.as_tensor(val))
    rep = {"val_nll_before": before[0], "val_nll_after": after[0],
           "val_retrieval_rate_after": after[1], "train_neg_reward_first": losses[0],
           "train_neg_reward_last": float(np.mean(losses[-50:])), "steps": steps, "cost": cost}
    log.info("policy: held-out NLL %.4f -> %.4f, retrieves on %.1f%% of queries", before[0],
             after[0], 100 * after[1])
    return rep
