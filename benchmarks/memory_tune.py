"""Refitting the memory's weights on added documents (``engine.tune_memory``), measured where it
is meant to matter: a small model whose build-time tuning turned its memory almost off, given
many documents afterwards.

The bundled sample model (23 WikiText-2 articles, tuned at build time) gets N other WikiText-2
train articles through ``memory.add``; then ``tune_memory`` holds out some of them as new text
and refits the memory's weights. Perplexity is measured on text none of it saw (the first
tokens of WikiText-2 valid and test), with the memory's weights as built, after the refit, and
without the memory (``memory=False``: the build's back-off, no passages) and with the added
documents in the back-off's counts only (the live back-off, no passages), one pattern search
and one memory search shared by the configs.

    python benchmarks/memory_tune.py        # writes results/memory_tune.{json,md}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from build_tuning import valid_perplexity
from lm_benchmark import DATA, HERE, machine
from memory_update import articles
from retgen_engine import RetgenEngine
from retgen_engine.lm.evaluation import perplexity_report
from retgen_engine.text.corpus import read_eval_tokens

log = logging.getLogger("memory_tune")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--articles", type=int, default=100, help="WikiText-2 train articles added")
    ap.add_argument("--eval-tokens", type=int, default=20000,
                    help="the first N tokens of valid and of test are scored")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mach = machine()
    wt2 = a.data_dir / "wikitext-2"
    t = time.perf_counter()
    eng = RetgenEngine.sample(progress=True, tune=True)
    build_s = time.perf_counter() - t
    sample_titles = {t for t, _ in articles(HERE.parent / "examples" / "data" / "wikitext2_sample.tokens")}
    arts = [x for x in articles(wt2 / "wiki.train.tokens") if x[0] not in sample_titles]
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(arts), size=min(a.articles, len(arts)), replace=False).tolist())
    texts = ["".join(arts[i][1]) for i in pick]
    ids = [f"wt2-train:{i}:{arts[i][0]}" for i in pick]
    t = time.perf_counter()
    eng.memory.add(texts, ids=ids, progress=True)
    add_s = time.perf_counter() - t
    built = eng.config.model_copy(deep=True)
    t = time.perf_counter()
    rep = eng.tune_memory(progress=True)
    tune_s = time.perf_counter() - t
    tuned = eng.config.model_copy(deep=True)
    eng.memory.config = built.memory
    splits = {}
    plain = eng.variant(reranker=False, policy=False)
    for split in ("valid", "test"):
        x = read_eval_tokens(wt2 / f"wiki.{split}.tokens", eng.tokenizer)[: a.eval_tokens]
        splits[split] = valid_perplexity(eng, {"as built": built, "tuned": tuned}, x)
        # memory=False: the build's back-off, no passages (the added documents not read at all)
        splits[split]["memory=False"] = perplexity_report(
            plain.lm, x, plain.vocab, plain.retrieval_params(policy=False, memory=False))["perplexity"]
    mach["load_average_end"] = os.getloadavg()
    result = {"articles_added": len(ids), "tokens_added": int(sum(d["tokens"] for d in eng.memory.documents()
                                                               if d["id"] in set(ids))),
              "seconds": {"sample build (tuned)": build_s, "memory.add": add_s, "tune_memory": tune_s},
              "tune": rep, "eval": splits, "eval_tokens": a.eval_tokens,
              "memory_as_built": built.memory.model_dump(), "memory_tuned": tuned.memory.model_dump(),
              "machine": mach}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "memory_tune.json").write_text(json.dumps(result, indent=1, default=float))
    md = ["# Refitting the memory's weights on added documents", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, CPU flags {mach['cpu_flags']}; load "
          f"{mach['load_average'][0]:.1f} at start / {mach['load_average_end'][0]:.1f} at end; "
          f"{mach['date']}.", "",
          f"The sample model (23 WikiText-2 articles, tuned at build time: memory weights "
          f"{built.memory.weights}) + {len(ids)} other WikiText-2 train articles "
          f"({result['tokens_added']:,} tokens) added with `memory.add` in {add_s:.0f} s; "
          f"`tune_memory` held out {rep['documents']} of them ({rep['tokens']:,} tokens) in "
          f"{tune_s:.0f} s: held-out perplexity {rep['perplexity']['before']:.2f} -> "
          f"{rep['perplexity']['after']:.2f} (without the memory "
          f"{rep['perplexity']['without_memory']:.2f}); weights now {tuned.memory.weights}.", "",
          f"| first {a.eval_tokens:,} tokens of | `memory=False` (build's back-off, no passages) "
          "| added documents in the back-off's counts only | + passages, weights as built "
          "| + passages, after `tune_memory` |",
          "|---|---|---|---|---|",
          *[f"| WikiText-2 {s} | {v['memory=False']:.2f} | "
            f"{v['as built']['before_memory_perplexity']:.2f} | "
            f"{v['as built']['perplexity']:.2f} | {v['tuned']['perplexity']:.2f} |"
            for s, v in splits.items()], ""]
    (a.out / "memory_tune.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
