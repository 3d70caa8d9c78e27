"""Do the learned parts still help with the document memory in the mixture? (issue 13, item 4)

One model (lm_benchmark.py's, with its cache, fixed retrieval parameters and memory settings as
tuned on valid there), one pattern search and one memory search per split, shared by every row.
The learned reranker (with its lambda gate) and the policy are trained twice on the same
held-out training queries (`retgen train`): once on the mixture without the memory (as before
the memory existed) and once with the memory mixed last, its passages from the queries' own
slice and the 8,192 tokens before it excluded. Every row then gets the memory with its
per-order weights and kappa fitted on valid on top of that row's own distribution (the same
fit lm_benchmark.py uses; with the memory's learned gate fitted with them when lm_benchmark.py
chose one), so each variant meets the memory at its best; test is reported.
The last row is scored by the engine itself (score_stream with the memory) as a check of the
fitted scoring.

    python benchmarks/learned_memory.py --corpus ptb   # writes results/learned_memory_ptb.{json,md}
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

import _memory
from lm_benchmark import CORPORA, DATA, GRID_K, GRID_TAU, cache_of, machine, machine_line
from retgen_engine import RetgenEngine
from retgen_engine.learn.memory_gate import fit_gate, memory_nll
from retgen_engine.learn.training import train
from retgen_engine.lm.evaluation import prepend_context
from retgen_engine.lm.mixture import RetrievalParams, gated_lam, mix_logprobs
from retgen_engine.memory.mixture import MemoryParams
from retgen_engine.ngram.features import backoff_features, right_aligned
from retgen_engine.text.corpus import read_eval_tokens

HERE = Path(__file__).resolve().parent
GRID_LAM = [0.01, 0.02, 0.03, 0.05, 0.1]
log = logging.getLogger("learned-memory")


def with_tuned_memory(eng: RetgenEngine, chosen: dict) -> None:
    """The engine's memory at the order and settings lm_benchmark.py chose on valid."""
    n = int(chosen["order"])
    eng.config.memory = eng.config.memory.model_copy(
        update={"order": n, "weights": [0.05] * n, "kappa": [1.0] * n})
    mem = eng.use_memory(eng.memory.store)
    mem.config = _memory.tuned_config(mem, chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="ptb")
    ap.add_argument("--model-dir", type=Path, help="default: /tmp/retgen-bench-<corpus>")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/retgen-learned-memory"),
                    help="where the two trained copies of the model are written")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--queries", type=int, default=20000, help="held-out training queries")
    ap.add_argument("--no-memory-gate", action="store_true", help="the memory without its "
                    "learned gate (default: as lm_benchmark.py chose on valid)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    mach = machine()
    t_all = time.perf_counter()
    pattern, kenlm = CORPORA[a.corpus]
    files = {s: a.data_dir / pattern.format(s) for s in ("valid", "test")}
    src = a.model_dir or Path(f"/tmp/retgen-bench-{a.corpus}")
    bench = json.loads((a.out / f"{a.corpus}.json").read_text())
    tp, chosen = bench["tuned_params"], bench["memory"]["chosen"]
    use_gate = bool(chosen.get("gate")) and not a.no_memory_gate
    if not use_gate:
        chosen = {**chosen, **{f: [] for f in _memory.GATE_FIELDS}}
    cache = cache_of(tp)

    # -- the two trained copies (the source model is left as it is)
    trained = {}
    for name, memory in (("without", False), ("with", True)):
        d = a.work_dir / f"{a.corpus}-{name}"
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(src, d)
        e = RetgenEngine.load(d).variant(cache=cache)
        if memory:
            with_tuned_memory(e, chosen)
        t = time.perf_counter()
        rep = train(e, seed=0, max_queries=a.queries, memory=memory, progress=True)
        trained[name] = {"report": rep, "seconds": time.perf_counter() - t}
        log.info("trained %s the memory in %.0fs", name, trained[name]["seconds"])

    eng = RetgenEngine.load(src).variant(reranker=False, policy=False, cache=cache)
    with_tuned_memory(eng, chosen)
    mem, ret = eng.memory, eng.retriever
    engines = {"fixed": eng}
    for name in trained:
        e = RetgenEngine.load(a.work_dir / f"{a.corpus}-{name}").variant(cache=cache, memory=False)
        engines[name] = e
    kmax = max(GRID_K + list(eng.config.policy.k_choices))
    mp = MemoryParams.from_config(mem.config)
    splits = {}
    for split in ("valid", "test"):
        seq = prepend_context(read_eval_tokens(files[split], eng.tokenizer), eng.vocab)
        pos = np.arange(1, len(seq))
        texts = ret.stream_texts(seq, pos)
        vecs = ret.encode(texts, progress=True)
        r = ret.search_vectors(vecs, kmax, empty=np.array([not t for t in texts]),
                               Q=right_aligned(seq, pos, ret.max_length), progress=True)
        found, secs = _memory.found_for(mem, seq, pos, mp.keys, mp.k, mp.refresh)
        F, H, C, wmax = mem.stream_counts(seq, pos, mp, found, with_wmax=True)
        ctx = backoff_features(eng.backoff, eng.lm.base_ids(seq), pos)
        splits[split] = {"seq": seq, "pos": pos, "vecs": vecs, "r": r, "found": found,
                         "FHC": (F, H, C), "gate_in": (wmax, ctx), "memory_search_seconds": secs}
        log.info("%s: searches done", split)

    def inner(e: RetgenEngine, params: RetrievalParams, split: str) -> np.ndarray:
        s = splits[split]
        return e.lm.score_stream(s["seq"], params, retrieved=s["r"], query_vectors=s["vecs"])["logp"]

    def best_fixed(e: RetgenEngine) -> dict:
        """The best fixed (k, tau, lam) on valid for ``e``'s energy and gate (no memory)."""
        s = splits["valid"]
        targets = s["seq"][1:]
        kf = backoff_features(e.backoff, s["seq"], s["pos"])
        log_base = e.lm.cache.mix_stream(e.backoff.stream_logprobs(s["seq"]), s["seq"], len(e.vocab))
        best = None
        for k, tau in itertools.product(GRID_K, GRID_TAU):
            rk = s["r"].top(k)
            p, shift = e.lm.retrieval_terms(rk, targets, tau, s["seq"], s["pos"], kf=kf)
            has = rk.valid.any(axis=1)
            for lam in GRID_LAM:
                lp = mix_logprobs(log_base, p, np.where(has, gated_lam(lam, shift), 0.0))
                v = float(np.exp(-lp.mean()))
                if best is None or v < best["valid_perplexity"]:
                    best = {"k": k, "temperature": tau, "lam": lam, "valid_perplexity": v}
        return best

    nprobe = eng.index.default_nprobe
    fixed_params = RetrievalParams(tp["k"], tp["temperature"], tp["lam"], nprobe)
    grids = {n: best_fixed(engines[n]) for n in trained}
    row_defs = [("fixed-parameter model (similarity-only energy, k/tau/lambda of lm_benchmark)",
                 "fixed", fixed_params)]
    for n in trained:
        g = grids[n]
        row_defs += [
            (f"learned reranker + gate, trained {n} the memory; fixed k/tau/lambda best on valid "
             f"({g['k']}/{g['temperature']}/{g['lam']})", n,
             RetrievalParams(g["k"], g["temperature"], g["lam"], nprobe)),
            (f"learned reranker + gate + policy, trained {n} the memory", n,
             RetrievalParams(use_policy=True, nprobe=nprobe))]
    rows = []
    for label, n, params in row_defs:
        lv, lt = inner(engines[n], params, "valid"), inner(engines[n], params, "test")
        w, kappa, _ = _memory.fit(lv, *splits["valid"]["FHC"], mem.config.order)
        cfg = _memory.gate_config(mem, {**chosen, "weights": w, "kappa": kappa, "gate": [],
                                        "gate_center": [], "gate_scale": []})
        if use_gate:
            cfg = fit_gate(lv, *splits["valid"]["FHC"], *splits["valid"]["gate_in"], cfg)
        rows.append({"row": label, "trained": n, "params": str(params),
                     "valid_perplexity": float(np.exp(-lv.mean())),
                     "test_perplexity": float(np.exp(-lt.mean())),
                     "valid_perplexity_memory": float(np.exp(memory_nll(
                         lv, *splits["valid"]["FHC"], *splits["valid"]["gate_in"], cfg))),
                     "test_perplexity_memory": float(np.exp(memory_nll(
                         lt, *splits["test"]["FHC"], *splits["test"]["gate_in"], cfg))),
                     "memory_weights": cfg.weights, "memory_kappa": cfg.kappa,
                     **{f: getattr(cfg, f) for f in _memory.GATE_FIELDS}})
        log.info("%s", rows[-1])
    # the check: the last row scored by the engine itself, the memory with that row's weights
    last = rows[-1]
    e = RetgenEngine.load(a.work_dir / f"{a.corpus}-with").variant(cache=cache)
    with_tuned_memory(e, chosen)
    e.memory.config = e.memory.config.model_copy(update={
        "weights": last["memory_weights"], "kappa": last["memory_kappa"],
        **{f: last[f] for f in _memory.GATE_FIELDS}})
    s = splits["test"]
    out = e.lm.score_stream(s["seq"], RetrievalParams(use_policy=True, nprobe=nprobe, memory=mp),
                            retrieved=s["r"], query_vectors=s["vecs"], memory_found=s["found"])
    engine_check = float(np.exp(-out["logp"].mean()))
    mach["load_average_end"] = os.getloadavg()
    fixed_row = rows[0]
    result = {"corpus": a.corpus, "rows": rows, "engine_scored_last_row_test": engine_check,
              "memory": {**{k: chosen[k] for k in ("keys", "k", "refresh", "temperature", "order")},
                         "learned_gate": use_gate},
              "cache": {k: tp[k] for k in tp if k.startswith("cache_")},
              "training": {n: {"seconds": v["seconds"],
                               **{k: v["report"].get(k) for k in ("queries", "memory_in_mixture",
                                                                  "memory_excluded_passages",
                                                                  "backoff_nll", "memory_nll")},
                               "reranker": v["report"]["reranker"], "policy": {
                                   k: x for k, x in v["report"]["policy"].items() if k != "skip"}}
                           for n, v in trained.items()},
              "kn5_reference": kenlm, "seconds": time.perf_counter() - t_all, "machine": mach}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"learned_memory_{a.corpus}.json").write_text(json.dumps(result, indent=1))
    md = [f"# {a.corpus}: the learned parts with the document memory in the mixture", "",
          f"{machine_line(mach)} Memory: {result['memory']}; every row's memory weights fitted "
          "on valid on top of that row.", "",
          "| row | valid ppl, no memory | test ppl, no memory | valid ppl + memory | test ppl + memory "
          "| test + memory vs fixed |", "|---|---|---|---|---|---|",
          *[f"| {r['row']} | {r['valid_perplexity']:.2f} | {r['test_perplexity']:.2f} | "
            f"{r['valid_perplexity_memory']:.2f} | {r['test_perplexity_memory']:.2f} | "
            f"{r['test_perplexity_memory'] - fixed_row['test_perplexity_memory']:+.2f} |" for r in rows],
          "", f"Check: the last row scored by the engine itself (score_stream with the memory): "
          f"test {engine_check:.2f}.", "",
          "Training (held-out queries of the training corpus; NLL on the last 20% of them):", "",
          "| trained | queries | memory passages excluded | reranker NLL before / after | "
          "policy NLL no retrieval / best fixed / after | seconds |", "|---|---|---|---|---|---|",
          *[f"| {n} the memory | {t['queries']} | {t['memory_excluded_passages'] or 0} | "
            f"{t['reranker']['val_nll_before']:.4f} / {t['reranker']['val_nll_after']:.4f} | "
            f"{t['policy']['val_nll_no_retrieval']:.4f} / {t['policy']['val_nll_best_fixed']:.4f} / "
            f"{t['policy']['val_nll_after']:.4f} | {t['seconds']:.0f} |"
            for n, t in result["training"].items()], ""]
    (a.out / f"learned_memory_{a.corpus}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
