"""Would a learned gate on the memory's weight pay? A probe before building one (issue 13, item 4).

The memory's weight at a position is sum_n mu_n C_n / (C_n + kappa_n): it grows with how often
the history occurs in the retrieved passages, and nothing else. A gate would move its log-odds
per position with what else is known there: the back-off's own confidence (longest matched
order, that history's count, its back-off weight), the passages' counts per order, and how
concentrated the passage weights are. This probe fits such a gate (logistic shift, 3 + N + 1
inputs, L-BFGS-B) next to the per-order weights on one half of valid and scores the other half
(both halves by turns), against the per-order weights alone fitted the same way, on top of the
fixed full system without memory (lm_benchmark.py's model and settings, lexical keys: no query
to encode). If the gate does not win on the held-out halves, it is not built.

    python benchmarks/memory_gate_probe.py --corpus ptb   # writes results/memory_gate_probe_ptb.{json,md}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import _memory
from learned_memory import with_tuned_memory
from lm_benchmark import CORPORA, DATA, cache_of, machine, machine_line
from retgen_engine import RetgenEngine
from retgen_engine.lm.evaluation import prepend_context
from retgen_engine.lm.mixture import RetrievalParams, mix_logprobs
from retgen_engine.memory.keys import passage_weights
from retgen_engine.memory.mixture import MemoryParams, neighbour_probs
from retgen_engine.ngram.features import backoff_features
from retgen_engine.text.corpus import read_eval_tokens

HERE = Path(__file__).resolve().parent
log = logging.getLogger("memory-gate-probe")


def features(eng, seq, pos, C, found, inv, k, tau) -> np.ndarray:
    kf = backoff_features(eng.backoff, seq, pos)
    pids, scores = found[0][:, :k], found[1][:, :k]
    wmax = passage_weights(scores, pids, tau).max(1)[inv]
    z = np.concatenate([kf, np.log1p(C).T, wmax[:, None]], axis=1)
    return z


def objective(log_prev, F, H, C, z, order: int, gate: bool):
    """The mean NLL of parameters x: per-order weights (logits), log kappa, and with ``gate``
    the gate's weights over ``z`` and its bias (a shift of logit(lam_mem))."""
    G = z.shape[1]

    def nll(x):
        e = np.exp(np.clip(x[:order], -30, 30))
        w, kappa = 0.95 * e / (1 + e.sum()), np.exp(np.clip(x[order:2 * order], -30, 30))
        p, lam = neighbour_probs(F, H, C, w, kappa)
        if gate:
            s = z @ x[2 * order:2 * order + G] + x[2 * order + G]
            lc = np.clip(lam, 1e-12, 1 - 1e-6)
            lam = np.where(lam > 0, np.minimum(1 / (1 + np.exp(-(np.log(lc) - np.log1p(-lc) + s))),
                                               0.99), 0.0)
        return float(-mix_logprobs(log_prev, p, lam).mean())
    return nll


def fit(nll, order: int, G: int, gate: bool) -> np.ndarray:
    """L-BFGS-B from two starts (kappa 1 and e^2; the gate at 0)."""
    best = None
    for kappa0 in (0.0, 2.0):
        x0 = np.concatenate([np.full(order, -2.5), np.full(order, kappa0),
                             np.zeros(G + 1 if gate else 0)])
        r = minimize(nll, x0, method="L-BFGS-B", options={"maxiter": 500})
        if best is None or r.fun < best.fun:
            best = r
    return best.x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="ptb")
    ap.add_argument("--model-dir", type=Path, help="default: /tmp/retgen-bench-<corpus>")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    mach, t0 = machine(), time.perf_counter()
    pattern, _ = CORPORA[a.corpus]
    bench = json.loads((a.out / f"{a.corpus}.json").read_text())
    tp = bench["tuned_params"]
    chosen = {**bench["memory"]["chosen"], "keys": "lexical"}
    src = a.model_dir or Path(f"/tmp/retgen-bench-{a.corpus}")
    eng = RetgenEngine.load(src).variant(reranker=False, policy=False, cache=cache_of(tp))
    with_tuned_memory(eng, chosen)
    mem = eng.memory
    mp = MemoryParams.from_config(mem.config)
    seq = prepend_context(read_eval_tokens(a.data_dir / pattern.format("valid"), eng.tokenizer), eng.vocab)
    pos = np.arange(1, len(seq))
    params = RetrievalParams(tp["k"], tp["temperature"], tp["lam"], eng.index.default_nprobe)
    log_prev = eng.lm.score_stream(seq, params, progress=True)["logp"]
    rows = []
    for tau in (0.1, 0.2, 0.5):
        mpt = MemoryParams(k=mp.k, refresh=mp.refresh, keys="lexical", temperature=tau)
        uq, inv, queries = mem.stream_queries(seq, pos, mp.refresh)
        found = mem.find(queries, mpt)
        F, H, C = mem.stream_counts(seq, pos, mpt, found)
        z = features(eng, seq, pos, C, found, inv, mp.k, tau)
        half = len(pos) // 2
        parts = [np.arange(half), np.arange(half, len(pos))]
        res = {"temperature": tau}
        for gate in (False, True):
            held = []
            for i in (0, 1):
                tr, te = parts[i], parts[1 - i]
                mu, sd = z[tr].mean(0), z[tr].std(0) + 1e-6
                N = mem.config.order
                x = fit(objective(log_prev[tr], F[:, tr], H[:, tr], C[:, tr], (z[tr] - mu) / sd,
                                  N, gate), N, z.shape[1], gate)
                held.append(objective(log_prev[te], F[:, te], H[:, te], C[:, te],
                                      (z[te] - mu) / sd, N, gate)(x))
            res["gate" if gate else "weights"] = float(np.exp(np.mean(held)))
        res["gate_over_weights"] = res["gate"] / res["weights"]
        rows.append(res)
        log.info("%s", res)
    result = {"corpus": a.corpus, "rows": rows, "no_memory_valid": float(np.exp(-log_prev.mean())),
              "memory": {k: chosen[k] for k in ("keys", "k", "refresh", "order")},
              "seconds": time.perf_counter() - t0, "machine": mach}
    mach["load_average_end"] = os.getloadavg()
    (a.out / f"memory_gate_probe_{a.corpus}.json").write_text(json.dumps(result, indent=1))
    md = [f"# {a.corpus}: would a learned gate on the memory's weight pay?", "",
          f"{machine_line(mach)} Valid split in two halves; each fitted on one half, scored on "
          f"the other, perplexities averaged (log); memory {result['memory']}; valid without "
          f"the memory {result['no_memory_valid']:.2f}.", "",
          "| passage temperature | per-order weights | + gate | gate / weights |", "|---|---|---|---|",
          *[f"| {r['temperature']} | {r['weights']:.2f} | {r['gate']:.2f} | {r['gate_over_weights']:.4f} |"
            for r in rows], ""]
    (a.out / f"memory_gate_probe_{a.corpus}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
