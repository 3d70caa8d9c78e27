"""The learned retrieval policy: an MLP from the query (its embedding plus cheap back-off
features) to the retrieval parameters k, tau and lambda (lambda = 0 skips retrieval),
trained by policy gradient (exact expectation over the discrete actions, or REINFORCE).

pi(q) = W3 ReLU(W2 ReLU(W1 q + b1) + b2) + b3, three categorical heads over fixed choices.
reward = log p(y | q, k, tau, lam) - cost * [lam > 0] * (1 + k / k_max)

Before any of that, an optional *skip stage* (``skip_dim > 0``) decides from cheap features
alone (back-off confidence and cache statistics, :func:`~retgen_engine.ngram.features.skip_features`)
whether to encode the query and search at all: encoding is most of a retrieval's time, so a
decision that needs the embedding cannot save it. It is a small MLP that predicts the gain of
retrieving (what the heads' retrieval adds to log p(y) over the base distribution) and
retrieves on the ``budget`` share of queries where that prediction is highest (see
:func:`fit_skip`), as adaptive-retrieval kNN-LMs do.

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
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..config import PolicyConfig
from ..lm.mixture import gated_lam, mix_logprobs
from ..persist.modules import SavableModule

log = logging.getLogger(__name__)


_GRID = PolicyConfig()  # the default choices: the config's grids


class RetrievalPolicy(nn.Module, SavableModule):
    def __init__(self, input_dim: int, hidden_dim: int = _GRID.policy_hidden_dim,
                 k_choices: Sequence[int] = tuple(_GRID.k_choices),
                 tau_choices: Sequence[float] = tuple(_GRID.tau_choices),
                 lam_choices: Sequence[float] = tuple(_GRID.lam_choices),
                 skip_dim: int = 0, skip_hidden: int = 32):
        super().__init__()
        if min(k_choices) < 1 or min(tau_choices) <= 0 or not all(0 <= x < 1 for x in lam_choices):
            raise ValueError("policy choices: k >= 1, tau > 0, lambda in [0, 1)")
        if skip_dim < 0 or skip_hidden < 1:
            raise ValueError(f"skip_dim={skip_dim}, skip_hidden={skip_hidden}: skip_dim >= 0 "
                             "(0 = no skip stage), skip_hidden >= 1")
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.skip_dim, self.skip_hidden = int(skip_dim), int(skip_hidden)
        self.k_choices = [int(x) for x in k_choices]
        self.tau_choices = [float(x) for x in tau_choices]
        self.lam_choices = [float(x) for x in lam_choices]
        self.net = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, len(self.k_choices) + len(self.tau_choices)
                                           + len(self.lam_choices)))
        if self.skip_dim:
            self.skip = nn.Sequential(nn.Linear(skip_dim, skip_hidden), nn.ReLU(),
                                      nn.Linear(skip_hidden, 1))
            self.register_buffer("skip_mu", torch.zeros(skip_dim))
            self.register_buffer("skip_sd", torch.ones(skip_dim))
            # quantiles 0, 0.01, ..., 1 of the predicted gain on the training queries: the
            # threshold for any budget, so a caller can pick one per call
            self.register_buffer("skip_quantiles", torch.zeros(101))
            self.register_buffer("skip_budget", torch.ones(()))  # the trained default
            # 0 until fit_skip has trained the stage: every query retrieves
            self.register_buffer("skip_trained", torch.zeros(()))

    def get_config(self) -> dict:
        return {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim,
                "k_choices": self.k_choices, "tau_choices": self.tau_choices,
                "lam_choices": self.lam_choices, "skip_dim": self.skip_dim,
                "skip_hidden": self.skip_hidden}

    @property
    def skip_ready(self) -> bool:
        """A trained skip stage (any budget can then be asked for per call)."""
        return bool(self.skip_dim) and bool(self.skip_trained)

    @property
    def has_skip(self) -> bool:
        """A trained skip stage whose default budget skips some queries."""
        return self.skip_ready and float(self.skip_budget) < 1

    def skip_threshold(self, budget: Optional[float] = None) -> float:
        """Predicted gain above which a query retrieves, for ``budget`` (the share of the
        training queries that retrieve; None: the trained default)."""
        b = float(self.skip_budget) if budget is None else float(budget)
        if not 0 < b <= 1:
            raise ValueError(f"budget={budget}: the share of queries that retrieve must be in (0, 1]")
        if b >= 1:
            return -np.inf
        return float(np.interp(1 - b, np.linspace(0, 1, 101), self.skip_quantiles.numpy()))

    def skip_value(self, z: torch.Tensor) -> torch.Tensor:
        """[n] predicted gain of retrieving (nats) for cheap features z [n, skip_dim]."""
        return self.skip((z - self.skip_mu) / self.skip_sd).squeeze(-1)

    @torch.no_grad()
    def retrieve_mask(self, z: np.ndarray, budget: Optional[float] = None) -> np.ndarray:
        """[n] bool: which queries the skip stage sends to retrieval, for ``budget`` (None:
        the trained default; all queries without a trained stage or with budget 1)."""
        z = np.asarray(z, dtype=np.float32)
        thr = self.skip_threshold(budget) if self.skip_ready else -np.inf
        if thr == -np.inf:
            return np.ones(len(z), dtype=bool)
        if z.ndim != 2 or z.shape[1] != self.skip_dim:
            raise ValueError(f"skip features of shape {z.shape}; expected [n, {self.skip_dim}]")
        return self.skip_value(torch.as_tensor(z)).numpy() > thr

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
                 cost: float, shift: np.ndarray | None = None, mem=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(reward, log p) [n, |k|, |tau|, |lam|] of every action for every query.

    log p = logaddexp(log(1 - lam) + log p_base, log(lam) + log p_ret), with lam moved by the
    reranker's gate (``shift`` [n, |k|, |tau|], its logit shift) where it has one, and the
    document memory mixed last where ``mem`` = (p_mem, lam_mem) [n] is given (as the model
    does); the reward subtracts ``cost * [lam > 0] * (1 + k / k_max)`` for the retrieval work."""
    lb = np.asarray(log_base, dtype=np.float64)[:, None, None, None]
    pr = np.asarray(p_ret, dtype=np.float64)[:, :, :, None]
    lam = np.asarray(policy.lam_choices, dtype=np.float64)[None, None, None, :]
    if shift is not None:
        lam = gated_lam(lam, np.asarray(shift, dtype=np.float64)[:, :, :, None])
    lp = mix_logprobs(lb, pr, lam)
    if mem is not None:
        lp = mix_logprobs(lp, np.asarray(mem[0], np.float64)[:, None, None, None],
                          np.asarray(mem[1], np.float64)[:, None, None, None])
    ks = np.asarray(policy.k_choices, dtype=np.float64)[None, :, None, None]
    r = lp - cost * (lam > 0) * (1 + ks / ks.max())
    return r, lp


def fit_policy(x: np.ndarray, log_base: np.ndarray, p_ret: np.ndarray, policy: RetrievalPolicy,
               cost: float = 0.002, steps: int = 1500, lr: float = 3e-3, batch: int = 1024,
               seed: int = 0, progress: bool = True, val_frac: float = 0.2,
               entropy: float = 0.0, method: str = "exact", eval_every: int = 50,
               weight_decay: float = 1e-4, shift: np.ndarray | None = None,
               val_split: str = "block", start_fixed: bool = True, mem=None) -> dict:
    """Policy gradient on cached queries. ``p_ret`` [n, |k|, |tau|] is the retrieval
    probability of the true token for each (k, tau) choice (computed once with the energy
    model in use; ``shift`` the gate's logit shift of lam for each), so the reward of every
    action is known.

    ``method="reinforce"`` samples one action per query and follows the score-function
    estimate (advantage against the query's own no-retrieval reward and a running mean);
    ``method="exact"`` (default) ascends the same objective, E_pi[reward], with the
    expectation summed over all |k|·|tau|·|lam| actions -- the gradient REINFORCE estimates,
    without its variance (the gain of retrieval is a few hundredths of a nat, far below the
    sampling noise). ``mem`` = (p_mem, lam_mem): the document memory mixed last, in the
    rewards and in the no-retrieval reference (see :func:`reward_table`). Both keep the weights with the best greedy reward on the validation part
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
    lb = np.asarray(log_base, dtype=np.float64)
    if mem is not None:  # no retrieval: the base with the memory mixed last
        lb = mix_logprobs(lb, np.asarray(mem[0], np.float64), np.asarray(mem[1], np.float64))
    LBASE = torch.as_tensor(lb)
    r_np, lp_np = reward_table(log_base, p_ret, policy, cost, shift, mem)
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
           "steps": steps, "cost": cost, "memory_in_mixture": mem is not None}
    log.info("policy (%s): held-out NLL %.4f -> %.4f (best fixed %.4f, no retrieval %.4f), "
             "retrieves on %.1f%% of queries", method, before[1], after[1],
             rep["val_nll_best_fixed"], rep["val_nll_no_retrieval"], 100 * after[2])
    return rep


@torch.no_grad()
def greedy_logp(policy: RetrievalPolicy, x: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """[n] log p(y) under the heads' greedy (k, tau, lam), from ``lp`` [n, |k|, |tau|, |lam|]
    (:func:`reward_table`'s second output)."""
    lk, lt, ll = policy.heads(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    n = np.arange(len(lp))
    return np.asarray(lp)[n, lk.argmax(-1).numpy(), lt.argmax(-1).numpy(), ll.argmax(-1).numpy()]


def fit_skip(policy: RetrievalPolicy, z: np.ndarray, gain: np.ndarray, budget: float = 0.7,
             steps: int = 600, lr: float = 1e-2, seed: int = 0, val_frac: float = 0.2,
             eval_every: int = 25, weight_decay: float = 1e-4, progress: bool = True) -> dict:
    """Train the skip stage to retrieve on a ``budget`` share of queries, those where
    retrieval is expected to add the most.

    ``gain`` [n] is log p(y) with the heads' retrieval minus log p_base(y) for each query. The
    stage regresses it on the cheap features (Adam on squared error; the weights with the
    lowest error on the validation part, the last ``val_frac`` of the queries in corpus order,
    are kept), and retrieves where the predicted gain is above its (1 - budget) quantile on
    the training part. The gain of one query is noise around a few hundredths of a nat and
    its scale differs between the held-out slice and new text, so a budget (a share of
    queries, which is what buys speed) transfers where a cost in nats would not. The stage
    stores the quantiles of its prediction, so a caller can choose another budget per call;
    ``budget`` is the default (1: it is trained, but every query retrieves by default)."""
    from tqdm.auto import tqdm

    if not policy.skip_dim:
        raise ValueError("this policy has no skip stage (skip_dim=0)")
    if not 0 < budget <= 1:
        raise ValueError(f"budget={budget}: the share of queries that retrieve must be in (0, 1]")
    z = np.asarray(z, dtype=np.float32)
    gain = np.asarray(gain, dtype=np.float64)
    if z.shape != (len(gain), policy.skip_dim):
        raise ValueError(f"skip features of shape {z.shape} for {len(gain)} gains; expected "
                         f"[{len(gain)}, {policy.skip_dim}]")
    torch.manual_seed(seed)
    n = len(z)
    n_val = max(1, int(n * val_frac))
    tr, val = np.arange(n - n_val), np.arange(n - n_val, n)
    with torch.no_grad():
        policy.skip_mu.copy_(torch.as_tensor(z[tr].mean(0)))
        policy.skip_sd.copy_(torch.as_tensor(z[tr].std(0) + 1e-3))
        # start as the constant predictor (the mean gain)
        policy.skip[-1].weight.mul_(0.01)
        policy.skip[-1].bias.fill_(float(gain[tr].mean()))
    Z, G = torch.as_tensor(z), torch.as_tensor(gain, dtype=torch.float32)
    ti, vi = torch.as_tensor(tr), torch.as_tensor(val)
    with torch.no_grad():
        best = (float(((policy.skip_value(Z[vi]) - G[vi]) ** 2).mean()),
                {k: t.clone() for k, t in policy.skip.state_dict().items()}, 0)
    opt = torch.optim.Adam(policy.skip.parameters(), lr=lr, weight_decay=weight_decay)
    for step in tqdm(range(1, steps + 1), desc="training skip stage", disable=not progress):
        loss = ((policy.skip_value(Z[ti]) - G[ti]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                v = float(((policy.skip_value(Z[vi]) - G[vi]) ** 2).mean())
            if v < best[0]:
                best = (v, {k: t.clone() for k, t in policy.skip.state_dict().items()}, step)
    policy.skip.load_state_dict(best[1])
    with torch.no_grad():
        pred = policy.skip_value(Z).numpy()
        policy.skip_quantiles.copy_(torch.as_tensor(np.quantile(pred[tr], np.linspace(0, 1, 101))))
        policy.skip_budget.fill_(budget)
        policy.skip_trained.fill_(1.0)
    go = policy.retrieve_mask(z[val])
    total = float(gain[val].sum())
    rep = {"budget": budget, "enabled": policy.has_skip, "best_step": best[2],
           "val_mse": best[0], "val_mse_constant": float(gain[val].var()),
           "val_retrieval_rate": float(go.mean()),
           "val_gain_always": float(gain[val].mean()),
           "val_gain_after": float(np.where(go, gain[val], 0.0).mean()),
           "val_gain_kept_share": float(gain[val][go].sum() / total) if total else 1.0,
           "steps": steps}
    if policy.has_skip:
        if rep["val_gain_kept_share"] <= rep["val_retrieval_rate"]:
            log.warning("skip stage: on the held-out block it keeps %.1f%% of retrieval's gain "
                        "with %.1f%% of the retrievals, no better than skipping at random",
                        100 * rep["val_gain_kept_share"], 100 * rep["val_retrieval_rate"])
        log.info("skip stage: retrieves on %.1f%% of held-out queries and keeps %.1f%% of "
                 "what retrieval adds (%.4f of %.4f nats)", 100 * rep["val_retrieval_rate"],
                 100 * rep["val_gain_kept_share"], rep["val_gain_after"], rep["val_gain_always"])
    return rep
