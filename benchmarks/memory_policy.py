"""Could a policy choose when the memory refreshes its query, or how many passages a query
reads, better than the fixed settings? (issue 13, item 4: "when to refresh, how many passages")

One model (lm_benchmark.py's, with the cache, retrieval and memory settings it tuned on valid,
the memory's learned gate included), one pattern-search pass and one memory search per split,
at every ``--step``-th position (a query of the ``query_length`` tokens before it, past tokens
only, top ``max(--ks)`` passages). Every row reads those searches, so rows differ only in which
refresh point each position reads and how many of its passages:

- fixed refresh every 4 / 8 / 16 tokens (lm_benchmark.py chose 8 on valid);
- a novelty rule: refresh at a candidate point when (the share of tokens since the last refresh
  that the last query did not contain) x (tokens since the last refresh) >= theta, and at the
  latest every ``maxgap`` tokens. Its (theta, maxgap) grid is scored on valid; the rule with the
  best valid perplexity among those that query no more often than refresh-8 is reported on test;
- fixed k at refresh 8;
- a learned choice of k per query (ridge regression on valid, one model per k against the
  largest, from what is known at the refresh point: the previous window's gain of each k over
  the memory-free mixture, the largest passage weight at each k, the back-off's features),
  applied on test;
- oracle bounds (the best choice per 8-token window, knowing the window's tokens): not
  achievable, shown to size what any policy could gain.

The memory's weights, kappa and gate are those tuned at refresh 8 and k 256; other settings
read them as they are (a bias towards the tuned setting, stated in the results).

    python benchmarks/memory_policy.py --corpus ptb   # writes results/memory_policy_ptb.{json,md}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from learned_memory import with_tuned_memory
from lm_benchmark import CORPORA, DATA, cache_of, machine, machine_line
from retgen_engine import RetgenEngine
from retgen_engine.lm.evaluation import prepend_context
from retgen_engine.lm.mixture import mix_logprobs
from retgen_engine.memory.gate import apply_gate
from retgen_engine.memory.keys import passage_weights
from retgen_engine.memory.mixture import MemoryParams, neighbour_probs
from retgen_engine.ngram.features import backoff_features
from retgen_engine.text.corpus import read_eval_tokens

HERE = Path(__file__).resolve().parent
THETAS = (2.0, 3.0, 4.0, 6.0)
MAXGAPS = (8, 16, 32)
WINDOW = 8  # the refresh interval lm_benchmark.py chose; windows of the k-policy and oracles
log = logging.getLogger("memory-policy")


class Split:
    """One split's searches and the scoring of a schedule on them."""

    def __init__(self, eng: RetgenEngine, seq: np.ndarray, tp: dict, chosen: dict, step: int,
                 kmax: int):
        self.eng, self.mem, self.seq, self.step = eng, eng.memory, seq, step
        self.pos = np.arange(1, len(seq))
        params = eng.retrieval_params(k=tp["k"], temperature=tp["temperature"], lam=tp["lam"],
                                      policy=False, memory=False)
        t = time.perf_counter()
        self.log_prev = eng.lm.score_stream(seq, params, progress=True)["logp"]
        self.ctx = backoff_features(eng.lm.backoff, eng.lm.base_ids(seq), self.pos)
        self.base_seconds = time.perf_counter() - t
        mp = MemoryParams(k=kmax, refresh=step, keys=chosen["keys"], temperature=chosen["temperature"])
        t = time.perf_counter()
        self.uq, _, queries = self.mem.stream_queries(seq, self.pos, step)
        self.pids, self.scores = self.mem.find(queries, mp, progress=True)
        self.find_seconds = time.perf_counter() - t
        self.tau = float(chosen["temperature"])
        self.cand = np.searchsorted(self.uq, (self.pos // step) * step)

    def schedule(self, mask: np.ndarray) -> np.ndarray:
        """The refresh point (index into uq) each position reads, refreshing where ``mask``."""
        idx = np.where(mask, np.arange(len(self.uq)), -1)
        return np.maximum.accumulate(idx)[self.cand]

    def fixed(self, every: int) -> np.ndarray:
        return (self.uq % every) == 0

    def novelty(self, theta: float, maxgap: int) -> np.ndarray:
        mask, r = np.zeros(len(self.uq), bool), None
        Lq = self.mem.config.query_length
        for i, b in enumerate(self.uq.tolist()):
            if r is None or b - r >= maxgap:
                mask[i], r = True, b
                continue
            old = set(self.seq[max(0, r - Lq):r].tolist())
            new = self.seq[r:b].tolist()
            if sum(t not in old for t in new) >= theta:  # share x tokens = count of new tokens
                mask[i], r = True, b
        return mask

    def logp(self, point: np.ndarray, k: int) -> np.ndarray:
        """Per-position log-prob of the full system with the memory reading ``point``'s top k."""
        cfg, n = self.mem.config, self.mem.config.order
        P = self.pids[:, :k]
        W = passage_weights(self.scores[:, :k], P, self.tau)
        F, H, C = (np.zeros((n, len(self.pos))) for _ in range(3))
        for lo in range(0, len(self.pos), 8192):
            sl = slice(lo, lo + 8192)
            F[:, sl], H[:, sl], C[:, sl] = self.mem.table.target_counts(
                self.seq, self.pos[sl], P[point[sl]], W[point[sl]], self.seq[self.pos[sl]])
        p, lam = neighbour_probs(F, H, C, cfg.weights, cfg.kappa)
        lam = apply_gate(cfg, lam, C, W.max(1)[point], self.ctx)
        return mix_logprobs(self.log_prev, p, lam)

    def row(self, mask: np.ndarray, k: int) -> dict:
        lp = self.logp(self.schedule(mask), k)
        return {"perplexity": float(np.exp(-lp.mean())),
                "queries_per_token": float(mask.sum() / len(self.pos))}

    # -- per-window choice of k ----------------------------------------------------------
    def windows(self, ks: list[int]) -> tuple[np.ndarray, dict]:
        """(features [windows, F] known at each window's refresh point, {k: the window's
        log-likelihood at refresh 8 and k})."""
        point = self.schedule(self.fixed(WINDOW))
        win = self.pos // WINDOW
        nW = int(win.max()) + 1
        cnt = np.maximum(np.bincount(win, minlength=nW), 1)
        first = np.minimum(np.searchsorted(win, np.arange(nW)), len(self.pos) - 1)
        ll, feats = {}, [np.ones(nW)]
        for k in ks:
            lp = self.logp(point, k)
            ll[k] = np.bincount(win, weights=lp, minlength=nW)
            gain = np.bincount(win, weights=lp - self.log_prev, minlength=nW) / cnt
            feats.append(np.concatenate([[0.0], gain[:-1]]))  # the previous window's: past tokens
            W = passage_weights(self.scores[:, :k], self.pids[:, :k], self.tau)
            feats.append(W.max(1)[point[first]])
        feats += [self.ctx[first, i] for i in range(self.ctx.shape[1])]
        return np.stack(feats, 1), ll


def fit_k_policy(X: np.ndarray, ll: dict, ks: list[int], l2: float = 1.0) -> dict:
    """Ridge regression per k of (window log-likelihood at k - at the largest k) on the
    standardized features; returns the standardization and the coefficients."""
    mu, sd = X[:, 1:].mean(0), X[:, 1:].std(0) + 1e-9
    Z = np.concatenate([X[:, :1], (X[:, 1:] - mu) / sd], 1)
    kmax = max(ks)
    coef = {k: np.linalg.solve(Z.T @ Z + l2 * np.eye(Z.shape[1]), Z.T @ (ll[k] - ll[kmax]))
            for k in ks if k != kmax}
    return {"mu": mu, "sd": sd, "coef": coef}


def apply_k_policy(pol: dict, X: np.ndarray, ll: dict, ks: list[int], n_pos: int) -> dict:
    Z = np.concatenate([X[:, :1], (X[:, 1:] - pol["mu"]) / pol["sd"]], 1)
    pred = np.stack([Z @ pol["coef"][k] if k in pol["coef"] else np.zeros(len(Z)) for k in ks])
    choice = pred.argmax(0)
    total = np.stack([ll[k] for k in ks])[choice, np.arange(len(Z))].sum()
    share = np.bincount(choice, minlength=len(ks)) / len(Z)
    return {"perplexity": float(np.exp(-total / n_pos)),
            "k_share": {str(k): float(s) for k, s in zip(ks, share)}}


def oracle(ll: dict, n_pos: int) -> float:
    return float(np.exp(-np.stack(list(ll.values())).max(0).sum() / n_pos))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="ptb")
    ap.add_argument("--model-dir", type=Path, help="default: /tmp/retgen-bench-<corpus>")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--step", type=int, default=4, help="candidate refresh points every this many tokens")
    ap.add_argument("--ks", default="32,64,128,256", help="passages per query to choose among")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    mach = machine()
    ks = sorted(int(k) for k in a.ks.split(","))
    res_path = a.out / f"{a.corpus}.json"
    bench = json.loads(res_path.read_text())
    tp, chosen = bench["tuned_params"], bench["memory"]["chosen"]
    if int(chosen["refresh"]) != WINDOW or WINDOW % a.step:
        raise SystemExit(f"lm_benchmark chose refresh {chosen['refresh']}; this script compares "
                         f"against refresh {WINDOW} with --step dividing it")
    eng = RetgenEngine.load(a.model_dir or Path(f"/tmp/retgen-bench-{a.corpus}"))
    eng = eng.variant(reranker=False, policy=False, cache=cache_of(tp))
    with_tuned_memory(eng, chosen)
    pattern = CORPORA[a.corpus][0]
    splits = {}
    for name in ("valid", "test"):
        toks = read_eval_tokens(a.data_dir / pattern.format(name), eng.tokenizer)
        splits[name] = Split(eng, prepend_context(toks, eng.vocab), tp, chosen, a.step, max(ks))
        log.info("%s: base %.0fs, memory search at %d points %.0fs", name,
                 splits[name].base_seconds, len(splits[name].uq), splits[name].find_seconds)
    kmax = max(ks)
    out = {"machine": mach, "corpus": a.corpus, "step": a.step, "ks": ks, "chosen": chosen,
           "valid": {}, "test": {}}
    for name, s in splits.items():
        for every in (4, 8, 16):
            out[name][f"fixed refresh {every}"] = s.row(s.fixed(every), kmax)
    v = splits["valid"]
    grid = {}
    for theta in THETAS:
        for gap in MAXGAPS:
            grid[theta, gap] = v.row(v.novelty(theta, gap), kmax)
            log.info("novelty theta %.0f maxgap %d: %s", theta, gap, grid[theta, gap])
    out["valid_novelty_grid"] = [{"theta": t, "maxgap": g, **r} for (t, g), r in grid.items()]
    budget = out["valid"]["fixed refresh 8"]["queries_per_token"]
    ok = {key: r for key, r in grid.items() if r["queries_per_token"] <= budget}
    best = min(ok, key=lambda key: ok[key]["perplexity"])
    out["novelty_chosen"] = {"theta": best[0], "maxgap": best[1]}
    for name, s in splits.items():
        out[name]["novelty rule (chosen on valid)"] = s.row(s.novelty(*best), kmax)
    feats = {}
    for name, s in splits.items():
        X, ll = s.windows(ks)
        feats[name] = (X, ll)
        for k in ks:
            out[name][f"fixed k {k}"] = {
                "perplexity": float(np.exp(-ll[k].sum() / len(s.pos))),
                "queries_per_token": out[name][f"fixed refresh {WINDOW}"]["queries_per_token"]}
    pol = fit_k_policy(*feats["valid"], ks)
    for name, s in splits.items():
        out[name]["learned k per query (fit on valid)"] = apply_k_policy(pol, *feats[name], ks, len(s.pos))
        out[name]["oracle k per 8-token window (bound)"] = {"perplexity": oracle(feats[name][1], len(s.pos))}
        lp8 = s.logp(s.schedule(s.fixed(8)), kmax)
        lp4 = s.logp(s.schedule(s.fixed(4)), kmax)
        win = s.pos // WINDOW
        a8, a4 = np.bincount(win, weights=lp8), np.bincount(win, weights=lp4)
        out[name]["oracle: refresh at 4 only in windows where it helps (bound)"] = {
            "perplexity": float(np.exp(-np.maximum(a8, a4).sum() / len(s.pos))),
            "queries_per_token": float((1 + (a4 > a8).mean()) / WINDOW)}
    mach["load_average_end"] = list(os.getloadavg())
    out["seconds"] = {n: {"base": s.base_seconds, "memory_search": s.find_seconds}
                      for n, s in splits.items()}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"memory_policy_{a.corpus}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Memory refresh and passages per query: fixed vs a policy ({a.corpus})", "",
             machine_line(mach), "",
             f"The full system (patterns + cache + memory with its gate, lm_benchmark.py's settings "
             f"tuned on valid: keys {chosen['keys']}, k {chosen['k']}, refresh {chosen['refresh']}); "
             f"memory searched at every {a.step}th position, rows read those searches. The "
             f"memory's weights, kappa and gate were tuned at refresh 8 and k {chosen['k']} and are "
             f"read unchanged by every row. Novelty rule chosen on valid (best perplexity at no "
             f"more queries than refresh 8): theta {best[0]:g}, maxgap {best[1]}.", "",
             "| row | valid perplexity | test perplexity | test queries/token |", "|---|---|---|---|"]
    for key in out["test"]:
        vr, tr = out["valid"][key], out["test"][key]
        q = tr.get("queries_per_token")
        extra = f" (k shares on test {tr['k_share']})" if "k_share" in tr else ""
        lines.append(f"| {key}{extra} | {vr['perplexity']:.2f} | {tr['perplexity']:.2f} | "
                     f"{'' if q is None else f'{q:.4f}'} |")
    (a.out / f"memory_policy_{a.corpus}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
