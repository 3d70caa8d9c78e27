"""The learned retrieval policy: an MLP from the query (its embedding plus cheap back-off
features) to the retrieval parameters k, tau and lambda (lambda = 0 skips retrieval),
trained by policy gradient (exact expectation over the discrete actions, or REINFORCE).

pi(q) = W3 ReLU(W2 ReLU(W1 q + b1) + b2) + b3, three categorical heads over fixed choices.
reward = log p(y | q, k, tau, lam) - cost * [lam > 0] * (1 + k / k_max)

The gain of retrieval over the base distribution is a few hundredths of a nat, far below the
spread of log p(y) across queries, so the advantage is taken against two baselines: the
query's own no-retrieval reward log p_base(y) (it does not depend on the action, so the
gradient stays unbiased) and a running mean of what remains (an optional entropy bonus,
off by default, keeps sampled heads from collapsing).

Training starts from the best single action on the training queries (the fixed-parameter
model) and keeps a learned deviation only if it earns more reward on the validation part,
which is the *last* queries of the held-out slice in corpus order: text the training part
never saw, as valid and test are. (A random split lets per-query choices that fit the
neighbouring text pass validation and then lose on unseen text.)
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .lm import gated_lam, mix_logprobs
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


def reward_table(log_base: np.ndarray, p_ret: np.ndarray, policy: RetrievalPolicy,
                 cost: float, shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(reward, log p) [n, |k|, |tau|, |lam|] of every action for every query.

    log p = logaddexp(log(1 - lam) + log p_base, log(lam) + log p_ret), with lam moved by the
    reranker's gate (``shift`` [n, |k|, |tau|], its logit shift) where it has one; the reward
    subtracts ``cost * [lam > 0] * (1 + k / k_max)`` for the retrieval work."""
    lb = np.asarray(log_base, dtype=np.float64)[:, None, None, None]
    pr = np.asarray(p_ret, dtype=np.float64)[:, :, :, None]
    lam = np.asarray(policy.lam_choices, dtype=np.float64)[None, None, None, :]
    if shift is not None:
        lam = gated_lam(lam, np.asarray(shift, dtype=np.float64)[:, :, :, None])
    lp = mix_logprobs(lb, pr, lam)
    ks = np.asarray(policy.k_choices, dtype=np.float64)[None, :, None, None]
    r = lp - cost * (lam > 0) * (1 + ks / ks.max())
    return r, lp


def fit_policy(x: np.ndarray, log_base: np.ndarray, p_ret: np.ndarray, policy: RetrievalPolicy,
               cost: float = 0.002, steps: int = 1500, lr: float = 3e-3, batch: int = 1024,
               seed: int = 0, progress: bool = True, val_frac: float = 0.2,
               entropy: float = 0.0, method: str = "exact", eval_every: int = 50,
               weight_decay: float = 1e-4, shift: np.ndarray | None = None,
               val_split: str = "block", start_fixed: bool = True) -> dict:
    """Policy gradient on cached queries. ``p_ret`` [n, |k|, |tau|] is the retrieval
    probability of the true token for each (k, tau) choice (computed once with the energy
    model in use; ``shift`` the gate's logit shift of lam for each), so the reward of every
    action is known.

    ``method="reinforce"`` samples one action per query and follows the score-function
    estimate (advantage against the query's own no-retrieval reward and a running mean);
    ``method="exact"`` (default) ascends the same objective, E_pi[reward], with the
    expectation summed over all |k|·|tau|·|lam| actions -- the gradient REINFORCE estimates,
    without its variance (the gain of retrieval is a few hundredths of a nat, far below the
    sampling noise). Both keep the weights with the best greedy reward on the validation part
    (``val_frac`` of the queries, never trained on: the last ones with ``val_split="block"``,
    a random share with ``"random"``). ``start_fixed`` starts from the best fixed action.
    """
    from tqdm.auto import tqdm

    if method not in ("exact", "reinforce"):
        raise ValueError(f"method={method!r}; allowed: 'exact', 'reinforce'")
    if val_split not in ("block", "random"):
        raise ValueError(f"val_split={val_split!r}; allowed: 'block', 'random'")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    n_val = max(1, int(n * val_frac))
    if val_split == "block":  # the last queries (in corpus order): text the training part never saw
        val, tr = np.arange(n - n_val, n), rng.permutation(n - n_val)
    else:
        perm = rng.permutation(n)
        val, tr = perm[:n_val], perm[n_val:]
    X = torch.as_tensor(np.asarray(x, dtype=np.float32))
    LBASE = torch.as_tensor(np.asarray(log_base, dtype=np.float64))
    r_np, lp_np = reward_table(log_base, p_ret, policy, cost, shift)
    R, LP = torch.as_tensor(r_np), torch.as_tensor(lp_np)
    nk, nt, nl = R.shape[1:]
    lams = torch.as_tensor(policy.lam_choices, dtype=torch.float64)
    # the best single action on the training part: what a fixed-parameter model would pick
    a_fix = int(torch.argmax(R[torch.as_tensor(tr)].mean(0)))
    ik_f, it_f, il_f = np.unravel_index(a_fix, (nk, nt, nl))

    def greedy(idx):
        with torch.no_grad():
            lk, lt, ll = policy.heads(X[idx])
            a, b, c = lk.argmax(-1), lt.argmax(-1), ll.argmax(-1)
            return (float(R[idx, a, b, c].mean()), float(-LP[idx, a, b, c].mean()),
                    float((lams[c] > 0).double().mean()))

    vi = torch.as_tensor(val)
    if start_fixed:  # start from the best fixed action: greedy choices equal it until trained
        with torch.no_grad():
            last = policy.net[-1]
            last.weight.mul_(0.01)
            last.bias.zero_()
            last.bias[int(ik_f)] = 2.0
            last.bias[nk + int(it_f)] = 2.0
            last.bias[nk + nt + int(il_f)] = 2.0
    before = greedy(vi)
    best = (before[0], {k: v.clone() for k, v in policy.state_dict().items()}, 0)
    opt = torch.optim.Adam(policy.parameters(), lr=lr, weight_decay=weight_decay)
    baseline = None
    ti = torch.as_tensor(tr)

    def expected_reward(idx):  # E_pi[reward] over the whole set, exact (no sampling noise)
        with torch.no_grad():
            lk, lt, ll = policy.heads(X[idx])
            joint = (lk[:, :, None, None] + lt[:, None, :, None] + ll[:, None, None, :]).double()
            return float((joint.exp() * R[idx]).sum((1, 2, 3)).mean())

    train_first = expected_reward(ti)
    policy.train()
    for step in tqdm(range(1, steps + 1), desc="training policy", disable=not progress):
        idx = torch.as_tensor(rng.choice(tr, size=min(batch, len(tr)), replace=False))
        lk, lt, ll = policy.heads(X[idx])
        ent = -sum((h.exp() * h).sum(-1).mean() for h in (lk, lt, ll))
        adv_all = R[idx] - LBASE[idx][:, None, None, None]  # against no retrieval
        if method == "exact":
            joint = (lk[:, :, None, None] + lt[:, None, :, None] + ll[:, None, None, :]).double()
            expected = (joint.exp() * adv_all).sum((1, 2, 3))
            loss = -expected.mean().float() - entropy * ent
        else:
            ik = torch.multinomial(lk.exp(), 1).squeeze(1)
            it = torch.multinomial(lt.exp(), 1).squeeze(1)
            il = torch.multinomial(ll.exp(), 1).squeeze(1)
            adv = adv_all[torch.arange(len(idx)), ik, it, il]
            m = float(adv.mean())
            baseline = m if baseline is None else 0.95 * baseline + 0.05 * m
            logp = lk.gather(1, ik[:, None]) + lt.gather(1, it[:, None]) + ll.gather(1, il[:, None])
            loss = -((adv - baseline).float()[:, None] * logp).mean() - entropy * ent
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            policy.eval()
            g = greedy(vi)
            policy.train()
            if g[0] > best[0]:
                best = (g[0], {k: v.clone() for k, v in policy.state_dict().items()}, step)
    policy.eval()
    train_last = expected_reward(ti)
    policy.load_state_dict(best[1])
    after = greedy(vi)
    rep = {"method": method, "val_nll_before": before[1], "val_nll_after": after[1],
           "val_reward_before": before[0], "val_reward_after": after[0],
           "val_nll_no_retrieval": float(-LBASE[vi].mean()),
           "val_nll_best_fixed": float(-LP[vi, ik_f, it_f, il_f].mean()),
           "best_fixed": {"k": policy.k_choices[ik_f], "temperature": policy.tau_choices[it_f],
                          "lam": policy.lam_choices[il_f]},
           "val_retrieval_rate_after": after[2], "best_step": best[2],
           "train_neg_reward_first": -train_first, "train_neg_reward_last": -train_last,
           "steps": steps, "cost": cost}
    log.info("policy (%s): held-out NLL %.4f -> %.4f (best fixed %.4f, no retrieval %.4f), "
             "retrieves on %.1f%% of queries", method, before[1], after[1],
             rep["val_nll_best_fixed"], rep["val_nll_no_retrieval"], 100 * after[2])
    return rep
