"""Language-modelling benchmark: build on a corpus's train split, tune the fixed retrieval
parameters (k, tau, lambda) and the document memory (keys, passage temperature, per-order
weights) on valid, report test, next to the Kneser-Ney back-off measured in the same run and
KenLM's 5-gram reference. Every row is one stage added to the one before: KN-5, + cache,
+ patterns, + memory (lexical, dense, fused keys, on KN-5 + cache), the same with the memory's
learned gate (fitted on valid with the weights), full system (all of them, the memory's keys
and gate or none chosen on valid, scored by the engine itself).

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

import _memory
from retgen_engine import RETGENConfig, RetgenEngine
from retgen_engine.memory.memory import PassageMemory
from retgen_engine.ngram.cache import ContextCache
from retgen_engine.ngram.features import backoff_features
from retgen_engine.text.corpus import read_eval_tokens
from retgen_engine.lm.evaluation import perplexity_report, prepend_context
from retgen_engine.search.index import table_bytes
from retgen_engine.lm.mixture import mix_logprobs
from retgen_engine.persist.modeldir import versions

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
CORPORA = {
    "wikitext2": ("wikitext-2/wiki.{}.tokens", 220.14),
    "ptb": ("ptb/ptb.{}.txt", 141.19),
}
GRID_K = [8, 16, 32, 64]
GRID_TAU = [0.01, 0.02, 0.05, 0.1, 0.2]
GRID_LAM = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
# the context cache, tuned first on the base distribution (window and decay fix what the
# cache counts; the weights only mix it), then (k, tau, lambda) on top of the best settings
GRID_WINDOW = [500, 1000, 2000]
GRID_DECAY = [0.0, 100.0, 200.0, 500.0]
GRID_UNIGRAM = [0.05, 0.08, 0.1, 0.13, 0.16]
GRID_BIGRAM = [0.0, 0.05, 0.1, 0.15, 0.2]
GRID_TRIGRAM = [0.0, 0.05, 0.1, 0.15, 0.2]
GRID_KAPPA = [0.0, 1.0, 3.0]
CACHE_KEYS = ("cache_window", "cache_unigram", "cache_bigram", "cache_trigram", "cache_decay",
              "cache_kappa")
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
    flags = []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split()
                               if f.startswith(("avx", "amx", "fma", "sse4")))
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_flags": " ".join(flags), "cores": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(), "versions": versions(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_line(m: dict) -> str:
    """The results files' machine sentence (``m``: :func:`machine` with ``load_average_end``)."""
    return (f"Machine: {m['cpu']}, {m['cores']} cores, load {m['load_average'][0]:.1f} at start / "
            f"{m['load_average_end'][0]:.1f} at end; {m['date']}; CPU flags {m['cpu_flags']}.")


def cache_of(params: dict) -> ContextCache:
    """The context cache a results row describes (rows from before the trigram cache have
    only window, unigram and bigram)."""
    return ContextCache(params["cache_window"], params["cache_unigram"], params["cache_bigram"],
                        params.get("cache_trigram", 0.0), params.get("cache_decay", 0.0),
                        params.get("cache_kappa", 0.0))


def tune_cache(seq: np.ndarray, log_kn: np.ndarray, V: int) -> list[dict]:
    """Every cache setting of the grid, scored on the base distribution (no retrieval)."""
    rows = []
    for window, decay in itertools.product(GRID_WINDOW, GRID_DECAY):
        parts = ContextCache(window, decay=decay).stream_parts(seq, V)
        for u, b, t, kappa in itertools.product(GRID_UNIGRAM, GRID_BIGRAM, GRID_TRIGRAM, GRID_KAPPA):
            if u + b + t >= 0.6 or (kappa and not (b or t)):
                continue
            cache = ContextCache(window, u, b, t, decay, kappa)
            rows.append({"cache_window": window, "cache_unigram": u, "cache_bigram": b,
                         "cache_trigram": t, "cache_decay": decay, "cache_kappa": kappa,
                         "valid_perplexity": float(np.exp(-cache.mix_parts(log_kn, parts).mean()))})
    return rows


def tune(eng: RetgenEngine, ids: np.ndarray, log: logging.Logger, top_caches: int = 3
         ) -> tuple[dict, list]:
    """Grid search on valid: the cache settings on the base distribution, then (k, tau,
    lambda) over one search pass at the largest k, on top of the ``top_caches`` best cache
    settings and of no cache."""
    seq = prepend_context(ids, eng.vocab)
    t = time.perf_counter()
    retrieved = eng.retriever.search_stream(seq, max(GRID_K), progress=True)
    search_s = time.perf_counter() - t
    log_kn = eng.backoff.stream_logprobs(seq)
    targets = seq[1:]
    p_ret = {}
    for k, tau in itertools.product(GRID_K, GRID_TAU):
        r = retrieved.top(k)
        p_ret[k, tau] = (eng.retriever.target_probs(r, targets, tau), r.valid.any(axis=1))
    cache_rows = tune_cache(seq, log_kn, len(eng.vocab))
    log.info("cache grid: %d settings, best %s", len(cache_rows),
             min(cache_rows, key=lambda r: r["valid_perplexity"]))
    none = {"cache_window": GRID_WINDOW[-1], "cache_unigram": 0.0, "cache_bigram": 0.0,
            "cache_trigram": 0.0, "cache_decay": 0.0, "cache_kappa": 0.0}
    # the results keep the 50 best cache settings (of some 3,600) and every retrieval row
    rows = [{"k": 0, "temperature": 0, "lam": 0.0, **r}
            for r in sorted(cache_rows, key=lambda r: r["valid_perplexity"])[:50]]
    for c in [none, *sorted(cache_rows, key=lambda r: r["valid_perplexity"])[:top_caches]]:
        common = {k: c[k] for k in CACHE_KEYS}
        log_base = cache_of(common).mix_stream(log_kn, seq, len(eng.vocab))
        if c is none:
            rows.append({"k": 0, "temperature": 0, "lam": 0.0, **common,
                         "valid_perplexity": float(np.exp(-log_base.mean()))})
        for (k, tau), (p, has) in p_ret.items():
            for lam in GRID_LAM:
                lp = mix_logprobs(log_base, p, np.where(has, lam, 0.0))
                rows.append({"k": k, "temperature": tau, "lam": lam, **common,
                             "valid_perplexity": float(np.exp(-lp.mean()))})
    best = min(rows, key=lambda r: r["valid_perplexity"])
    log.info("valid search %.1fs; best %s", search_s, best)
    return best, rows, retrieved


def ensure_memory(eng: RetgenEngine, log: logging.Logger) -> tuple[PassageMemory, float]:
    """The model's memory (the training corpus as passages), built and saved if it has none."""
    if eng.parts.memory is not None and eng.parts.memory.passages:
        return eng.parts.memory, float(eng.manifest.get("build_stats", {}).get("build_seconds_memory", 0))
    t = time.perf_counter()
    mem = PassageMemory.from_corpus(eng.tokenizer, eng.encoder, eng.config.memory, eng.stream_ids,
                                    eng.doc_offsets, eng.doc_names, progress=True)
    secs = time.perf_counter() - t
    eng.use_memory(mem.store)
    eng.save_memory()
    log.info("memory: %d passages built in %.0fs", mem.passages, secs)
    return eng.memory, secs


def generation_speed(eng: RetgenEngine, params: dict, n_tokens: int, memory: bool = False) -> dict:
    """Tokens/s of generating from each prompt (with traces), after one untimed warm-up
    generation with the same settings (the index pages and the encoder session warm)."""
    rates = []
    kw = {k: params[k] for k in ("k", "temperature", "lam")}
    eng.generate(PROMPTS[-1], max_new_tokens=n_tokens, seed=99, top_p=0.9, trace=True,
                 memory=memory, **kw)
    for i, p in enumerate(PROMPTS):
        t = time.perf_counter()
        res = eng.generate(p, max_new_tokens=n_tokens, seed=i, top_p=0.9, trace=True,
                           memory=memory, **kw)
        rates.append(res.completion_tokens / (time.perf_counter() - t))
    return {"median": statistics.median(rates), "runs": rates,
            "sample": PROMPTS[0] + eng.generate(PROMPTS[0], max_new_tokens=30, seed=0, top_p=0.9,
                                                trace=False, memory=memory, **kw).text}


def speed_only(a, eng: RetgenEngine, files: dict, log: logging.Logger) -> None:
    """Re-measure the speed rows of an earlier run (its tuned settings, from its JSON): the full
    system's eval ms/token on test, then generation with the memory off and on, interleaved
    over ``--speed-rounds`` rounds (medians over every prompt of every round). The eval times
    the pattern search, the memory's search and the scoring together, as a full run does.
    The perplexities are left as that run measured them; the scored one is logged as a check."""
    res_path = a.out / f"{a.corpus}.json"
    result = json.loads(res_path.read_text())
    tp, chosen = result["tuned_params"], result["memory"]["chosen"]
    eng = eng.variant(reranker=False, policy=False, cache=cache_of(tp))
    mem = eng.memory
    n = int(chosen["order"])
    if n != mem.config.order:  # the tables are derived state
        eng.config.memory = eng.config.memory.model_copy(
            update={"order": n, "weights": [0.05] * n, "kappa": [1.0] * n})
        mem = eng.use_memory(mem.store)
    mem.config = _memory.tuned_config(mem, chosen)
    test = read_eval_tokens(files["test"], eng.tokenizer)
    seq = prepend_context(test, eng.vocab)
    full_params = eng.retrieval_params(k=tp["k"] or None, temperature=tp["temperature"] or None,
                                       lam=tp["lam"], policy=False)
    t = time.perf_counter()
    retrieved = eng.retriever.search_stream(seq, tp["k"] or eng.lm.defaults.k,
                                            nprobe=full_params.nprobe, progress=True)
    rep = perplexity_report(eng.lm, test, eng.vocab, full_params, retrieved=retrieved)
    ms = 1000 * (time.perf_counter() - t) / rep["tokens"]
    log.info("full system test perplexity %.2f (the run: %.2f), %.3f ms/token", rep["perplexity"],
             result["full_system_test_perplexity"], ms)
    # memory off and on interleaved round by round (a change of load hits both alike)
    gen, gen_mem = {"runs": []}, {"runs": []}
    for _ in range(a.speed_rounds):
        gen["runs"] += generation_speed(eng, tp, a.gen_tokens)["runs"]
        gen_mem["runs"] += generation_speed(eng, tp, a.gen_tokens, memory=True)["runs"]
    for g in (gen, gen_mem):
        g["median"] = statistics.median(g["runs"])
    mach = machine()
    result["generate_tokens_per_second"] = gen["median"]
    result["generate_runs_tokens_per_second"] = gen["runs"]
    result["memory"].update(eval_ms_per_token=ms, generate_tokens_per_second=gen_mem["median"],
                            generate_runs_tokens_per_second=gen_mem["runs"])
    result["generate_remeasured"] = {"machine": mach, "reason": a.speed_reason,
                                     "full_system_test_perplexity_check": rep["perplexity"]}
    res_path.write_text(json.dumps(result, indent=1))
    note = f"re-measured {mach['date']}, load {mach['load_average'][0]:.1f}"
    md = (a.out / f"{a.corpus}.md").read_text().splitlines()
    # rows by (start, end of the label): a label may carry an earlier re-measurement's note
    new = {("| generation tokens/s", "memory off"):
               f"| generation tokens/s (median of {len(gen['runs'])}, with traces; {note}), "
               f"memory off | {gen['median']:.1f} |",
           ("| generation tokens/s", "memory on"):
               f"| generation tokens/s (median of {len(gen_mem['runs'])}, with traces; {note}), "
               f"memory on | {gen_mem['median']:.1f} |",
           ("| eval ms/token (test, batched", "full system with memory"):
               f"| eval ms/token (test, batched; {note}), full system with memory | {ms:.3f} |"}
    out = []
    for line in md:
        label = line.rsplit("|", 2)[0].rstrip()
        for (head, tail), row in new.items():
            if line.startswith(head) and label.endswith(tail):
                line = row
                break
        out.append(line)
    (a.out / f"{a.corpus}.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--model-dir", type=Path, help="default: /tmp/retgen-bench-<corpus>")
    ap.add_argument("--reuse", action="store_true", help="reuse an existing model directory")
    ap.add_argument("--config", type=Path, help="RETGENConfig JSON for the build")
    ap.add_argument("--gen-tokens", type=int, default=100)
    ap.add_argument("--memory-k", type=int, default=128, help="passages per memory query")
    ap.add_argument("--memory-refresh", type=int, default=8, help="tokens between memory queries")
    ap.add_argument("--memory-order", type=int, default=None,
                    help="n-gram order of the memory's tables (default: the model's config)")
    ap.add_argument("--memory-keys", nargs="+", default=list(_memory.KEYS),
                    choices=_memory.KEYS, help="memory keys to compare")
    ap.add_argument("--no-memory-gate", action="store_true",
                    help="do not fit the memory's learned gate (rows without it only)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--speed-only", action="store_true",
                    help="re-measure the speed rows (generation with the memory off and on, the full "
                    "system's eval ms/token) of an existing results file (records when)")
    ap.add_argument("--speed-rounds", type=int, default=3,
                    help="with --speed-only: rounds of generation, memory off and on interleaved")
    ap.add_argument("--speed-reason", default="re-measured with --speed-only",
                    help="why the speed was re-measured (stored with the result)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("lm_benchmark")
    pattern, kenlm = CORPORA[a.corpus]
    files = {s: a.data_dir / pattern.format(s) for s in ("train", "valid", "test")}
    model_dir = a.model_dir or Path(f"/tmp/retgen-bench-{a.corpus}")
    mach = machine()

    cfg = RETGENConfig.load(a.config) if a.config else RETGENConfig()
    cfg.tokenizer.mode = "words"
    if a.reuse and ((model_dir / "CURRENT").exists() or (model_dir / "manifest.json").exists()):
        eng = RetgenEngine.load(model_dir)
    else:
        RetgenEngine.build(files["train"], out=model_dir, config=cfg, overwrite=True, progress=True)
        eng = RetgenEngine.load(model_dir)
    stats = eng.manifest["build_stats"]
    # the fixed-parameter model: similarity-only energy, no lambda gate and no policy, even if
    # `retgen train` has run on it
    eng = eng.variant(reranker=False, policy=False)

    if a.speed_only:
        speed_only(a, eng, files, log)
        return
    valid = read_eval_tokens(files["valid"], eng.tokenizer)
    test = read_eval_tokens(files["test"], eng.tokenizer)
    best, grid, retrieved_valid = tune(eng, valid, log)
    best_nocache = min((r for r in grid if not cache_of(r).enabled),
                       key=lambda r: r["valid_perplexity"])
    eng = eng.variant(reranker=False, policy=False, cache=cache_of(best))
    params = eng.retrieval_params(k=best["k"] or None, temperature=best["temperature"] or None,
                                  lam=best["lam"], policy=False, memory=False)
    t = time.perf_counter()
    seq = prepend_context(test, eng.vocab)
    retrieved = eng.retriever.search_stream(seq, max(GRID_K), nprobe=params.nprobe, progress=True)
    rep = perplexity_report(eng.lm, test, eng.vocab, params, retrieved=retrieved)
    test_secs = time.perf_counter() - t
    no_cache = eng.variant(reranker=False, policy=False,  # same run, without the cache
                           cache=ContextCache(eng.lm.cache.window, 0.0, 0.0, 0.0))
    rep_nocache = perplexity_report(
        no_cache.lm, test, eng.vocab, no_cache.retrieval_params(
            k=best_nocache["k"], temperature=best_nocache["temperature"],
            lam=best_nocache["lam"], policy=False, memory=False),
        retrieved=retrieved)
    gen = generation_speed(eng, best, a.gen_tokens)

    # -- the document memory, tuned on valid on top of KN-5 + cache and of the full system
    mem, mem_build_s = ensure_memory(eng, log)
    if a.memory_order and a.memory_order != mem.config.order:  # the tables are derived state
        n = a.memory_order
        eng.config.memory = eng.config.memory.model_copy(
            update={"order": n, "weights": [0.05] * n, "kappa": [1.0] * n})
        mem = eng.use_memory(mem.store)
    _memory.memoize_queries(mem)
    seq_v = prepend_context(valid, eng.vocab)
    out_v = eng.lm.score_stream(seq_v, params, retrieved=retrieved_valid)
    bases_v = {"cache": out_v["log_base"], "full": out_v["logp"]}
    # the memory's learned gate reads the back-off's features (no gate with --no-memory-gate)
    ctx = (lambda s: None) if a.no_memory_gate else (
        lambda s: backoff_features(eng.backoff, eng.lm.base_ids(s), np.arange(1, len(s))))
    mem_best, mem_grid = _memory.tune(mem, seq_v, bases_v, a.memory_k, a.memory_refresh,
                                      a.memory_keys, context=ctx(seq_v))
    seq_t = prepend_context(test, eng.vocab)
    out_t = eng.lm.score_stream(seq_t, params, retrieved=retrieved)
    mem_test = _memory.test_rows(mem, seq_t, {"cache": out_t["log_base"], "full": out_t["logp"]},
                                 mem_best, a.memory_keys, context=ctx(seq_t))
    chosen = min((r for (k, b), r in mem_best.items() if b.startswith("full")),
                 key=lambda r: r["valid_perplexity"])
    mem.config = _memory.tuned_config(mem, chosen)
    mem.encoder = getattr(mem.encoder, "_enc", mem.encoder)  # generation encodes afresh
    # the full system, scored by the engine itself (the memory's search timed with it)
    full_params = eng.retrieval_params(k=best["k"] or None, temperature=best["temperature"] or None,
                                       lam=best["lam"], policy=False)
    t = time.perf_counter()
    found = mem_test[chosen["keys"], "full"]
    rep_full = perplexity_report(eng.lm, test, eng.vocab, full_params, retrieved=retrieved,
                                 memory_found=found["found"])
    # + the pattern search and the memory's search it reuses
    full_secs = time.perf_counter() - t + test_secs + found["test_search_seconds"]
    gen_mem = generation_speed(eng, best, a.gen_tokens, memory=True)
    # RAM: the index file (memory-mapped) + faiss' precomputed IVF-PQ table (rebuilt on load)
    index_bytes = eng.index.nbytes()
    table = table_bytes(eng.index.index)
    flat_bytes = eng.index.ntotal * eng.index.dim * 4
    mach["load_average_end"] = os.getloadavg()
    rows = [
        ("our KN-5 back-off alone", rep["backoff_perplexity"]),
        ("KN-5 + context cache", rep["backoff_cache_perplexity"]),
        ("KN-5 + cache + patterns (the previous release's full system)", rep["perplexity"]),
        *[(f"KN-5 + cache + memory, {k} keys", mem_test[k, "cache"]["test_perplexity"])
          for k in a.memory_keys],
        *[(f"KN-5 + cache + patterns + memory, {k} keys", mem_test[k, "full"]["test_perplexity"])
          for k in a.memory_keys],
        *[(f"KN-5 + cache + memory with its learned gate, {k} keys",
           mem_test[k, "cache+gate"]["test_perplexity"]) for k in a.memory_keys
          if (k, "cache+gate") in mem_test],
        *[(f"KN-5 + cache + patterns + memory with its learned gate, {k} keys",
           mem_test[k, "full+gate"]["test_perplexity"]) for k in a.memory_keys
          if (k, "full+gate") in mem_test],
        (f"RETGEN full system: KN-5 + cache + patterns + memory ({chosen['keys']} keys, "
         f"{'with' if chosen.get('gate') else 'without'} the learned gate, chosen on valid), "
         "scored by the engine", rep_full["perplexity"]),
        ("patterns + KN-5 without the context cache", rep_nocache["perplexity"]),
        ("KenLM 5-gram (reference given in the brief, not re-run)", kenlm),
    ]
    mem_only = {k: mem_test[k, "cache"]["test_perplexity"] for k in a.memory_keys}
    result = {
        "corpus": a.corpus,
        "full_system_test_perplexity": rep_full["perplexity"],
        "memory": {"chosen": chosen,
                   "test": {f"{k}/{b}": {x: v for x, v in r.items() if x != "found"}
                            for (k, b), r in mem_test.items()},
                   "memory_alone_over_cache": {k: v / rep["backoff_cache_perplexity"]
                                               for k, v in mem_only.items()},
                   "grid": mem_grid, "build_seconds": mem_build_s, **_memory.memory_bytes(mem),
                   "eval_ms_per_token": 1000 * full_secs / rep_full["tokens"],
                   "generate_tokens_per_second": gen_mem["median"],
                   "generate_runs_tokens_per_second": gen_mem["runs"],
                   "generate_sample": gen_mem["sample"]},
        "valid_perplexity": best["valid_perplexity"],
        "test_perplexity": rep["perplexity"],
        "test_perplexity_without_cache": rep_nocache["perplexity"],
        "backoff_cache_test_perplexity": rep["backoff_cache_perplexity"],
        "backoff_test_perplexity": rep["backoff_perplexity"],
        "kn5_test_perplexity": kenlm,
        "kn5_reference": "KenLM lmplz -o 5 (modified Kneser-Ney), measured on this machine type "
                         "and given in the project brief; not re-run by this script",
        "test_over_kn5": rep["perplexity"] / kenlm,
        "test_over_backoff": rep["perplexity"] / rep["backoff_perplexity"],
        "retrieval_coverage": rep["retrieval_coverage"],
        "retrieval_only_test_perplexity_where_defined": rep["retrieval_only_perplexity_where_defined"],
        "test_tokens": rep["tokens"],
        "tuned_params": {k: best[k] for k in ("k", "temperature", "lam", *CACHE_KEYS)},
        "tuned_params_without_cache": {k: best_nocache[k] for k in ("k", "temperature", "lam")},
        "nprobe": params.nprobe,
        "build_seconds_encode": stats.get("build_seconds_encode"),
        "build_seconds_index": stats.get("build_seconds_index"),
        "build_seconds_total": stats.get("build_seconds_total"),
        "build_note": "build timings are from the model's manifest (the run that built it)",
        "num_patterns": stats.get("num_patterns", len(eng.patterns)),
        "index_spec": eng.index.spec,
        "index_bytes": index_bytes,
        "index_table_bytes": table,
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
          f"start / {mach['load_average_end'][0]:.1f} at end; {mach['date']}; CPU flags "
          f"{mach['cpu_flags']}.", "",
          "| model | test perplexity | ratio to KenLM 5-gram |", "|---|---|---|",
          *[f"| {name} | {v:.2f} | {v / kenlm:.3f} |" for name, v in rows], "",
          "| measure | value |", "|---|---|",
          f"| valid perplexity (tuned) | {best['valid_perplexity']:.2f} |",
          f"| tuned k / tau / lambda | {best['k']} / {best['temperature']} / {best['lam']} |",
          f"| tuned cache window / unigram / bigram / trigram / decay / kappa | "
          f"{' / '.join(str(best[k]) for k in CACHE_KEYS)} |",
          f"| retrieval coverage (test) | {rep['retrieval_coverage']:.3f} |",
          f"| patterns | {result['num_patterns']:,} |",
          f"| index in RAM | {eng.index.spec}, {index_bytes / 2**20:.1f} MiB (file "
          f"{(index_bytes - table) / 2**20:.1f} + faiss' precomputed PQ table {table / 2**20:.1f}; "
          f"{flat_bytes / index_bytes:.1f}x smaller than flat float32, {flat_bytes / 2**20:.1f} MiB) |",
          f"| build: encode / index / total s | {stats.get('build_seconds_encode', 0):.0f} / "
          f"{stats.get('build_seconds_index', 0):.0f} / {stats.get('build_seconds_total', 0):.0f} |",
          f"| generation tokens/s (median of {len(gen['runs'])}, with traces), memory off | {gen['median']:.1f} |",
          f"| generation tokens/s (median of {len(gen_mem['runs'])}, with traces), memory on | {gen_mem['median']:.1f} |",
          f"| eval ms/token (test, batched), without memory | {result['eval_ms_per_token']:.3f} |",
          f"| eval ms/token (test, batched), full system with memory | {result['memory']['eval_ms_per_token']:.3f} |",
          f"| memory | {mem.passages:,} passages of {mem.config.passage_length} tokens; n-gram tables "
          f"{result['memory']['table_bytes'] / 2**20:.1f} MiB, store {(result['memory']['store_bytes'] or 0) / 2**20:.1f} MiB; "
          f"built in {mem_build_s:.0f} s |",
          f"| memory tuned on valid | keys {chosen['keys']}, k {chosen['k']}, refresh {chosen['refresh']}, "
          f"temperature {chosen['temperature']}, weights {chosen['weights']}, kappa {chosen['kappa']} |",
          *([f"| the memory's learned gate (test, {chosen['keys']} keys, on the full system) | "
             f"with {mem_test[chosen['keys'], 'full+gate']['test_perplexity']:.2f}, without "
             f"{mem_test[chosen['keys'], 'full']['test_perplexity']:.2f} |"]
            if (chosen['keys'], 'full+gate') in mem_test else []),
          "| memory alone / KN-5 + cache (test) | "
          + ", ".join(f"{k} {v:.3f}" for k, v in result['memory']['memory_alone_over_cache'].items()) + " |",
          ""]
    (a.out / f"{a.corpus}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
