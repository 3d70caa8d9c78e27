"""Generation speed against the policy's retrieval budget, with the fixed-parameter model and
the back-off measured in the same run. The settings are interleaved round by round (so a
change in machine load hits all of them alike) and each is reported as the median over rounds.

    python benchmarks/skip_speed.py --corpus wikitext2 --model-dir /tmp/retgen-ablation-wt2
    python benchmarks/skip_speed.py --corpus ptb --model-dir /tmp/retgen-bench-ptb

Needs a model trained by ``retgen train`` (or ablation.py) and the tuned settings of
lm_benchmark.py and ablation.py in results/. Writes results/skip_speed_<corpus>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

from retgen_engine import RetgenEngine
from retgen_engine.search.energy import EnergyModel

from lm_benchmark import CORPORA, PROMPTS, cache_of, machine

HERE = Path(__file__).resolve().parent
BUDGETS = (1.0, 0.7, 0.5, 0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--gen-tokens", type=int, default=60)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("skip_speed")
    mach = machine()
    tuned = json.loads((a.out / f"{a.corpus}.json").read_text())["tuned_params"]
    abl = json.loads((a.out / f"ablation_{a.corpus}.json").read_text())
    eng = RetgenEngine.load(a.model_dir)
    if eng.policy is None or not getattr(eng.policy, "skip_dim", 0):
        raise SystemExit(f"{a.model_dir} has no trained policy with a skip stage (run `retgen train`)")
    c = cache_of(tuned)
    eng.set_cache(c.window, c.unigram, c.bigram, c.trigram, c.decay, c.kappa)
    # the learned reranker with its lambda gate (the model as trained), and the same model
    # ranking by similarity alone without the gate
    learned, sim_only = eng, eng.variant(energy=EnergyModel(), gate=False)
    fs, fl = abl["best_fixed_similarity_only"], abl["best_fixed_learned_rerank"]
    settings = {
        "back-off + cache, no retrieval": (sim_only, dict(policy=False, lam=0.0)),
        "fixed-parameter model (similarity-only)": (
            sim_only, dict(policy=False, k=fs["k"], temperature=fs["temperature"], lam=fs["lam"])),
        "learned rerank + gate, fixed k/tau/lambda": (
            learned, dict(policy=False, k=fl["k"], temperature=fl["temperature"], lam=fl["lam"])),
        **{f"full system, budget {b}": (learned, dict(budget=b)) for b in BUDGETS},
    }
    counts = {name: [0, 0] for name in settings}  # encoded contexts, generated tokens
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for r in range(a.rounds):
        for name, (e, kw) in settings.items():
            real = e.retriever.encode
            enc = [0]

            def counting(texts, **k):
                enc[0] += len(texts)
                return real(texts, **k)

            e.retriever.encode = counting  # instrumentation: count the encoded contexts
            t, n = time.perf_counter(), 0
            for i, p in enumerate(PROMPTS):
                n += e.generate(p, max_new_tokens=a.gen_tokens, seed=i, top_p=0.9, **kw).completion_tokens
            rates[name].append(n / (time.perf_counter() - t))
            e.retriever.encode = real
            counts[name][0] += enc[0]
            counts[name][1] += n
        log.info("round %d/%d done", r + 1, a.rounds)
    mach["load_average_end"] = list(os.getloadavg())
    fixed = statistics.median(rates["fixed-parameter model (similarity-only)"])
    rows = [{"setting": name, "median_tokens_per_second": statistics.median(v),
             "min": min(v), "max": max(v), "encoded_share": counts[name][0] / max(counts[name][1], 1),
             "ratio_to_fixed": statistics.median(v) / fixed} for name, v in rates.items()]
    result = {"corpus": a.corpus, "rounds": a.rounds, "gen_tokens_per_prompt": a.gen_tokens,
              "prompts": PROMPTS, "rows": rows, "runs": rates, "machine": mach}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"skip_speed_{a.corpus}.json").write_text(json.dumps(result, indent=1))
    md = [f"# Generation speed vs retrieval budget, {a.corpus}", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, load {mach['load_average'][0]:.1f} at start / "
          f"{mach['load_average_end'][0]:.1f} at end; {mach['date']}. {len(PROMPTS)} prompts x "
          f"{a.gen_tokens} tokens with traces, {a.rounds} rounds, settings interleaved in each round; "
          "test perplexities of the same settings are in ablation_{a.corpus}.md.".replace("{a.corpus}", a.corpus),
          "", "| setting | median tokens/s | min–max | encoded share | × fixed |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['setting']} | {r['median_tokens_per_second']:.1f} | {r['min']:.1f}–{r['max']:.1f} | "
                  f"{r['encoded_share']:.2f} | {r['ratio_to_fixed']:.2f} |")
    (a.out / f"skip_speed_{a.corpus}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
