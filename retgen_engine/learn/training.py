"""``retgen train``: fit the energy reranker and the retrieval policy on held-out training
queries and store them in the model directory (each as config.json + model.safetensors).

Where the model has a document memory that is on, both are fitted on the likelihood of the
whole mixture with the memory mixed last (``memory=False`` trains them on the mixture without
it, as before the memory existed); the held-out queries may not read memory passages from
their own slice or the text before it (:func:`~.heldout.memory_terms`)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..search.energy import EnergyModel
from .heldout import build_training_data, memory_pair
from ..lm.mixture import mix_logprobs
from ..ngram.features import SKIP_DIM
from .policy import RetrievalPolicy, fit_policy, fit_skip, greedy_logp, reward_table
from .reranker import fit_reranker
from ..persist.modeldir import add_to_model

log = logging.getLogger(__name__)

def p_ret_table(energy: EnergyModel, data: dict, k_choices, tau_choices, gate=None
                ) -> tuple[np.ndarray, np.ndarray]:
    """([n, |k|, |tau|] retrieval probability of the true token for each (k, tau), and the
    gate's logit shift of lam for each (zeros without a gate))."""
    n, kmax = data["valid"].shape
    out = np.zeros((n, len(k_choices), len(tau_choices)))
    shift = np.zeros_like(out)
    col = np.arange(kmax)[None, :]
    kf = data["kf"]
    for a, k in enumerate(k_choices):
        valid = data["valid"] & (col < k)
        for b, tau in enumerate(tau_choices):
            w = energy.weights(data["dist"], valid, tau, freq=np.exp(data["logfreq"]),
                               div=data["div"], length=data["len"], exact=data["exact"])
            out[:, a, b] = (w * data["ratio"]).sum(axis=1)
            if gate is not None:
                shift[:, a, b] = gate.lam_shift(w, data["dist"], valid, data["exact"],
                                                data["len"], kf)
    return out, shift


def with_memory(logp: np.ndarray, data: dict) -> np.ndarray:
    """``logp`` with the data's memory terms mixed last (unchanged without them)."""
    m = memory_pair(data)
    return logp if m is None else mix_logprobs(logp, m[0], m[1])


def best_fixed(data: dict, energy: EnergyModel, k_choices, tau_choices, lam_choices) -> dict:
    """Best single (k, tau, lam) on the training queries (no valid data involved)."""
    table, _ = p_ret_table(energy, data, k_choices, tau_choices)
    has = data["valid"].any(axis=1)
    best = None
    for a, k in enumerate(k_choices):
        for b, tau in enumerate(tau_choices):
            for lam in lam_choices:
                lp = with_memory(mix_logprobs(data["log_base"], table[:, a, b],
                                              np.where(has, lam, 0.0)), data)
                nll = float(-lp.mean())
                if best is None or nll < best["nll"]:
                    best = {"k": k, "temperature": tau, "lam": lam, "nll": nll}
    return best


def train(engine, reranker: bool = True, policy: bool = True, seed: int = 0,
          max_queries: int = 20000, fraction: float = 0.02, reranker_steps: int = 300,
          policy_steps: int = 1500, cost: float = 0.002, skip_budget: float = 0.7,
          progress: bool = True,
          policy_method: str = "exact",
          model_dir: Optional[str | Path] = None, memory: bool = True) -> dict:
    if not (reranker or policy):
        raise ValueError("nothing to train: enable the reranker, the policy or both")
    model_dir = Path(model_dir or engine.model_dir)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    pc = engine.config.policy
    k_choices = pc.k_choices
    data = build_training_data(engine, fraction=fraction, max_queries=max_queries,
                               k=max(k_choices), seed=seed, progress=progress, memory=memory)
    mem = memory_pair(data)
    report: dict = {"queries": int(len(data["log_base"])), "fraction": fraction, "seed": seed,
                    "backoff_nll": float(-data["log_base"].mean()),
                    "memory_in_mixture": mem is not None}
    if mem is not None:
        report["memory_nll"] = float(-with_memory(data["log_base"], data).mean())
        report["memory_excluded_passages"] = int(data["mem_excluded"])
    tau_choices, lam_choices = pc.tau_choices, pc.lam_choices
    sim_only = EnergyModel()
    fixed = best_fixed(data, sim_only, k_choices, tau_choices, lam_choices)
    report["fixed"] = fixed
    entries: dict = {}
    modules: dict = {}
    energy = engine.retriever.energy
    gate = engine.lm.gate
    if reranker:
        model, rep = fit_reranker(data, tau=fixed["temperature"], steps=reranker_steps, seed=seed,
                                  progress=progress)
        modules["reranker"] = model
        energy = model.energy_model()
        gate = model if model.gate else None
        report["reranker"] = rep
    if policy:
        pol = RetrievalPolicy(data["x"].shape[1], pc.policy_hidden_dim, k_choices, tau_choices,
                              lam_choices, skip_dim=SKIP_DIM)
        table, shift = p_ret_table(energy, data, pol.k_choices, pol.tau_choices, gate)
        report["policy"] = fit_policy(data["x"], data["log_base"], table, pol, cost=cost,
                                      steps=policy_steps, seed=seed, progress=progress,
                                      method=policy_method, shift=shift, mem=mem)
        # the skip stage, on what the trained heads' retrieval adds (to the memory, if any)
        _, lp = reward_table(data["log_base"], table, pol, cost, shift, mem)
        gain = greedy_logp(pol, data["x"], lp) - with_memory(data["log_base"], data)
        gain = np.where(data["valid"].any(axis=1), gain, 0.0)  # found nothing: base alone
        report["policy"]["skip"] = fit_skip(pol, data["z"], gain, skip_budget, seed=seed,
                                            progress=progress)
        modules["policy"] = pol
    report["seconds"] = time.perf_counter() - t0
    learned = dict(engine.manifest.get("learned", {}))
    if reranker:
        learned["reranker"] = "reranker"
    if policy:
        learned["policy"] = "policy"
    entries["learned"] = learned
    entries["training"] = report
    add_to_model(model_dir, entries, modules)  # every learned part committed at once
    log.info("trained %s in %.0fs", list(learned), report["seconds"])
    return report
