"""Language-modelling benchmark: build on a corpus's train split, tune the fixed retrieval
parameters (k, tau, lambda) on valid, report test, next to the Kneser-Ney back-off measured in
the same run and KenLM's 5-gram reference.

    python benchmarks/lm_benchmark.py --corpus wikitext2   # writes results/wikitext2.{json,md}
    python benchmarks/lm_benchmark.py --corpus ptb         # writes results/ptb.{json,md}
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from retgen_engine import RETGENConfig, RetgenEngine
from retgen_engine.corpus import read_eval_tokens
from retgen_engine.evaluation import perplexity_report, prepend_context
from retgen_engine.lm import mix_logprobs
from retgen_engine.store import versions

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
CORPORA = {
    "wikitext2": ("wikitext-2/wiki.{}.tokens", 220.14),
    "ptb": ("ptb/ptb.{}.txt", 141.19),
}
GRID_K = [8, 16, 32, 64]
GRID_TAU = [0.01, 0.02, 0.05, 0.1, 0.2]
GRID_LAM = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
PROMPTS = ["The game was released in", "In 1998 , the company", "He said that the"]


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "load_average": os.getloadavg(), "versions": versions(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def tune(eng: RetgenEngine, ids: np.ndarray, log: logging.Logger) -> tuple[dict, list]:
    """Grid search of (k, tau, lambda) on valid from one search pass at the largest k."""
    seq = prepend_context(ids, eng.vocab)
    t = time.perf_counter()
    retrieved = eng.retriever.search_stream(seq, max(GRID_K), progress=True)
    search_s = time.perf_counter() - t
    log_kn = eng.backoff.stream_logprobs(seq)
    targets = seq[1:]
    rows = []
    for k, tau in itertools.product(GRID_K, GRID_TAU):
        r = retrieved.top(k)
        p_ret = eng.retriever.target_probs(r, targets, tau)
        any_ = r.valid.any(axis=1)
        for lam in GRID_LAM:
            lp = mix_logprobs(log_kn, p_ret, np.where(any_, lam, 0.0))
            rows.append({"k": k, "temperature": tau, "lam": lam,
                         "valid_perplexity": float(np.exp(-lp.mean()))})
    best = min(rows, key=lambda r: r["valid_perplexity"])
    log.info("valid search %.1fs; best %s", search_s, best)
    return best, rows


def generation_speed(eng: RetgenEngine, params: dict, n_tokens: int) -> dict:
    rates = []
    for i, p in enumerate(PROMPTS):
        t = time.perf_counter()
        res = eng.generate(p, max_new_tokens=n_tokens, seed=i, top_p=0.9, trace=True,
                           k=params["k"], temperature=params["temperature"], lam=params["lam"])
        rates.append(res.completion_tokens / (time.perf_counter() - t))
    return {"median": statistics.median(rates), "runs": rates,
            "sample": PROMPTS[0] + eng.generate(PROMPTS[0], max_new_tokens=30, seed=0, top_p=0.9,
                                                trace=False, **{k: params[k] for k in
                                                                ("k", "temperature", "lam")}).text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--model-dir", type=Path, help="default: /tmp/retgen-bench-<corpus>")
    ap.add_argument("--reuse", action="store_true", help="reuse an existing model directory")
    ap.add_argument("--config", type=Path, help="RETGENConfig JSON for the build")
    ap.add_argument("--gen-tokens", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("lm_benchmark")
    pattern, kenlm = CORPORA[a.corpus]
    files = {s: a.data_dir / pattern.format(s) for s in ("train", "valid", "test")}
    model_dir = a.model_dir or Path(f"/tmp/retgen-bench-{a.corpus}")
    mach = machine()

    cfg = RETGENConfig.load(a.config) if a.config else RETGENConfig()
    cfg.tokenizer.mode = "words"
    if a.reuse and (model_dir / "manifest.json").exists():
        eng = RetgenEngine.load(model_dir)
    else:
        RetgenEngine.build(files["train"], out=model_dir, config=cfg, overwrite=True, progress=True)
        eng = RetgenEngine.load(model_dir)
    stats = eng.manifest["build_stats"]

    valid = read_eval_tokens(files["valid"], eng.tokenizer)
    test = read_eval_tokens(files["test"], eng.tokenizer)
    best, grid = tune(eng, valid, log)
    params = eng.retrieval_params(k=best["k"], temperature=best["temperature"], lam=best["lam"])
    t = time.perf_counter()
    rep = perplexity_report(eng.lm, test, eng.vocab, params, progress=True)
    test_secs = time.perf_counter() - t
    gen = generation_speed(eng, best, a.gen_tokens)
    index_bytes = (model_dir / eng.manifest["index"]["file"]).stat().st_size
    flat_bytes = eng.index.ntotal * eng.index.dim * 4
    mach["load_average_end"] = os.getloadavg()
    result = {
        "corpus": a.corpus,
        "valid_perplexity": best["valid_perplexity"],
        "test_perplexity": rep["perplexity"],
        "backoff_test_perplexity": rep["backoff_perplexity"],
        "kn5_test_perplexity": kenlm,
        "kn5_reference": "KenLM lmplz -o 5 (modified Kneser-Ney), measured on this machine type "
                         "and given in the project brief; not re-run by this script",
        "test_over_kn5": rep["perplexity"] / kenlm,
        "test_over_backoff": rep["perplexity"] / rep["backoff_perplexity"],
        "retrieval_coverage": rep["retrieval_coverage"],
        "retrieval_only_test_perplexity_where_defined": rep["retrieval_only_perplexity_where_defined"],
        "test_tokens": rep["tokens"],
        "tuned_params": {k: best[k] for k in ("k", "temperature", "lam")},
        "nprobe": params.nprobe,
        "build_seconds_encode": stats.get("build_seconds_encode"),
        "build_seconds_index": stats.get("build_seconds_index"),
        "build_seconds_total": stats.get("build_seconds_total"),
        "num_patterns": stats.get("num_patterns", len(eng.patterns)),
        "index_spec": eng.index.spec,
        "index_bytes": index_bytes,
        "flat_index_bytes": flat_bytes,
        "flat_over_index": flat_bytes / index_bytes,
        "generate_tokens_per_second": gen["median"],
        "generate_runs_tokens_per_second": gen["runs"],
        "generate_sample": gen["sample"],
        "eval_ms_per_token": 1000 * test_secs / rep["tokens"],
        "config": eng.config.model_dump(),
        "grid": grid,
        "machine": mach,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.corpus}.json").write_text(json.dumps(result, indent=1))
    md = [f"# {a.corpus}: RETGEN vs Kneser-Ney (test split)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, load {mach['load_average'][0]:.1f} at "
          f"start / {mach['load_average_end'][0]:.1f} at end; {mach['date']}.", "",
          "| model | test perplexity | ratio to KenLM 5-gram |", "|---|---|---|",
          f"| RETGEN (retrieval + KN-5 back-off, tuned on valid) | {rep['perplexity']:.2f} | "
          f"{rep['perplexity'] / kenlm:.3f} |",
          f"| our KN-5 back-off alone (same run) | {rep['backoff_perplexity']:.2f} | "
          f"{rep['backoff_perplexity'] / kenlm:.3f} |",
          f"| KenLM 5-gram (reference, brief) | {kenlm:.2f} | 1.000 |", "",
          "| measure | value |", "|---|---|",
          f"| valid perplexity (tuned) | {best['valid_perplexity']:.2f} |",
          f"| tuned k / tau / lambda | {best['k']} / {best['temperature']} / {best['lam']} |",
          f"| retrieval coverage (test) | {rep['retrieval_coverage']:.3f} |",
          f"| patterns | {result['num_patterns']:,} |",
          f"| index | {eng.index.spec}, {index_bytes / 2**20:.1f} MiB ({flat_bytes / index_bytes:.1f}x "
          f"smaller than flat float32, {flat_bytes / 2**20:.1f} MiB) |",
          f"| build: encode / index / total s | {stats.get('build_seconds_encode', 0):.0f} / "
          f"{stats.get('build_seconds_index', 0):.0f} / {stats.get('build_seconds_total', 0):.0f} |",
          f"| generation tokens/s (median of {len(gen['runs'])}, with traces) | {gen['median']:.1f} |",
          f"| eval ms/token (test, batched) | {result['eval_ms_per_token']:.3f} |", ""]
    (a.out / f"{a.corpus}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
