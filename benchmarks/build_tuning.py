"""Build-time tuning (retgen_engine.learn.tuning) measured: the held-out slice's perplexity per
stage before and after, the tuning's seconds, and perplexity on text the model never saw
(WikiText-2 valid) with the config as built vs the tuned one.

1. the bundled sample corpus (RetgenEngine.sample, MiniLM), built without tuning, then tuned;
2. an existing WikiText-2 model (lm_benchmark.py's /tmp/retgen-bench-wikitext2), tuned.

Valid is scored with one pattern search and one memory search shared by both configs (keys, k
and refresh are not tuned; the larger k serves both). The learned reranker/policy are off. The
tuning is run a second time without the memory's learned gate (``memory_gate=False``): its
ablation on valid, text neither tuning saw.

    python benchmarks/build_tuning.py                       # writes results/build_tuning.{json,md}
    python benchmarks/build_tuning.py --valid-tokens 0      # all of valid
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from lm_benchmark import DATA, HERE, machine
from retgen_engine import RetgenEngine
from retgen_engine.learn.tuning import summary, tune
from retgen_engine.lm.evaluation import perplexity_report, prepend_context
from retgen_engine.memory.mixture import MemoryParams
from retgen_engine.text.corpus import read_eval_tokens

log = logging.getLogger("build_tuning")


def valid_perplexity(eng: RetgenEngine, configs: dict, ids: np.ndarray) -> dict:
    """Perplexity of ``ids`` under each config (name -> RETGENConfig) of ``eng``'s parts."""
    seq = prepend_context(ids, eng.vocab)
    pos = np.arange(1, len(seq))
    k = max(c.retrieval.k for c in configs.values())
    t = time.perf_counter()
    retrieved = eng.retriever.search_stream(seq, k, nprobe=eng.lm.defaults.nprobe, progress=True)
    found, mem = None, eng.parts.memory
    if mem is not None:
        mp = MemoryParams.from_config(mem.config)
        mp = MemoryParams(max(c.memory.k for c in configs.values()), mp.refresh, mp.keys, mp.temperature)
        found = mem.find(mem.stream_queries(seq, pos, mp.refresh)[2], mp, progress=True)
    search_s = time.perf_counter() - t
    out = {}
    original = mem.config if mem is not None else None
    try:
        for name, cfg in configs.items():
            if mem is not None:
                mem.config = cfg.memory  # the memory reads its own config
            e = RetgenEngine(cfg, eng.parts, eng.manifest, eng.model_dir).variant(
                reranker=False, policy=False)
            rep = perplexity_report(e.lm, ids, e.vocab, e.retrieval_params(policy=False),
                                    retrieved=retrieved, memory_found=found)
            out[name] = {k: rep[k] for k in ("perplexity", "backoff_perplexity",
                                              "backoff_cache_perplexity",
                                              "before_memory_perplexity", "tokens")}
            log.info("valid %s: %s", name, out[name])
    finally:
        if mem is not None:
            mem.config = original
    out["search_seconds"] = search_s
    return out


def run(name: str, eng: RetgenEngine, valid_ids: np.ndarray, max_tokens: int) -> dict:
    base = eng.variant(reranker=False, policy=False)
    t = time.perf_counter()
    tuned_cfg, rep = tune(base.lm, eng.config, eng.doc_offsets, eng.doc_names, progress=True,
                          max_tokens=max_tokens)
    secs = time.perf_counter() - t
    log.info("%s: %s", name, "\n".join(summary(rep)))
    # the ablation of the memory's learned gate: the same tuning without it
    nogate_cfg, nogate = tune(base.lm, eng.config, eng.doc_offsets, eng.doc_names,
                              progress=True, max_tokens=max_tokens, memory_gate=False)
    v = valid_perplexity(eng, {"as built": eng.config, "tuned": tuned_cfg,
                               "tuned without the memory gate": nogate_cfg}, valid_ids)
    return {"corpus": name, "corpus_tokens": int(len(eng.stream_ids)), "tuning": rep,
            "tuning_without_memory_gate": nogate, "tuning_seconds": secs, "valid": v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--wikitext2-model", type=Path, default=Path("/tmp/retgen-bench-wikitext2"))
    ap.add_argument("--valid-tokens", type=int, default=20000,
                    help="score the first N tokens of WikiText-2 valid (0: all)")
    ap.add_argument("--max-tokens", type=int, default=20000, help="held-out slice bound")
    ap.add_argument("--skip-wikitext2", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mach = machine()
    valid_file = a.data_dir / "wikitext-2" / "wiki.valid.tokens"
    results = []
    t = time.perf_counter()
    sample = RetgenEngine.sample(progress=True, tune=False)
    build_s = time.perf_counter() - t
    ids = read_eval_tokens(valid_file, sample.tokenizer)
    ids = ids[:a.valid_tokens] if a.valid_tokens else ids
    results.append({**run("sample (examples/data, 23 WikiText-2 articles)", sample, ids,
                          a.max_tokens), "build_seconds_untuned": build_s})
    if not a.skip_wikitext2 and (a.wikitext2_model / "CURRENT").exists():
        wt2 = RetgenEngine.load(a.wikitext2_model)
        ids = read_eval_tokens(valid_file, wt2.tokenizer)
        ids = ids[:a.valid_tokens] if a.valid_tokens else ids
        results.append(run("WikiText-2 train", wt2, ids, a.max_tokens))
    mach["load_average_end"] = os.getloadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "build_tuning.json").write_text(json.dumps({"machine": mach, "results": results},
                                                        indent=1, default=float))
    md = ["# Build-time tuning on the user's corpus", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, CPU flags {mach['cpu_flags']}; load "
          f"{mach['load_average'][0]:.1f} at start / {mach['load_average_end'][0]:.1f} at end "
          f"(shared machine); {mach['date']}; versions {mach['versions']}.", "",
          "Held-out slice: the tuning's own slice of the training stream (its counts removed); "
          "valid: WikiText-2 valid, "
          + (f"first {a.valid_tokens:,} tokens" if a.valid_tokens else "all") + ". "
          "'as built' is the model's config before tuning (the built-in defaults).", "",
          "| corpus | slice tokens | tuning s | slice: back-off | + cache (as built -> tuned) "
          "| + patterns | + memory (no gate) | valid as built | valid tuned (no memory gate) "
          "| valid back-off + cache as built |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pp, v = r["tuning"]["perplexity"], r["valid"]
        md.append(f"| {r['corpus']} | {r['tuning']['tokens']:,} | {r['tuning_seconds']:.1f} | "
                  f"{pp['backoff']:.2f} | " + " | ".join(
                      f"{pp[s]['before']:.2f} -> {pp[s]['after']:.2f}"
                      for s in ("backoff_cache", "patterns", "memory"))
                  + f" ({r['tuning_without_memory_gate']['perplexity']['memory']['after']:.2f})"
                  f" | {v['as built']['perplexity']:.2f} | {v['tuned']['perplexity']:.2f} "
                  f"({v['tuned without the memory gate']['perplexity']:.2f}) | "
                  f"{v['as built']['backoff_cache_perplexity']:.2f} |")
    md += ["", "Chosen values and notes:", ""]
    for r in results:
        md += [f"- {r['corpus']}: " + " ".join(s.strip() for s in summary(r["tuning"])[1:])]
    (a.out / "build_tuning.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
