"""Live updates of the document memory against a rebuild.

WikiText-2 train is split by article into halves A and B (alternate articles). A model is built
on A with the full training vocabulary (so every perplexity below is over the same vocabulary);
B is then added through ``engine.memory.add`` while the model is live (its passages, and the
back-off's counts re-estimated with it; a row without the latter shows what each brings); that
is compared with a
full rebuild on A + B (same config, same vocabulary), each timed in this run. After the live
add, the memory's weights are also refitted on held-out documents of B (``engine.tune_memory``:
some of B's articles scored as new text, the memory without their passages), as a user would
after adding a batch of new text. Finally B is deleted, the weights set back to the build's,
and A's perplexity must come back (within 0.1%). The memory's query vectors are kept by text
between the evaluations (the same test queries each time; the live add and the rebuild are
timed, the evaluations are not).

The LM and memory settings are those ``lm_benchmark.py`` tuned on valid (results/wikitext2.json)
when that file exists, else the config defaults.

    python benchmarks/memory_update.py            # writes results/memory_update.{json,md}
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

import _memory
from lm_benchmark import DATA, HERE, cache_of, machine
from retgen_engine import RETGENConfig, RetgenEngine
from retgen_engine.learn.memory_tuning import added_documents
from retgen_engine.lm.evaluation import perplexity_report, prepend_context
from retgen_engine.text.corpus import CorpusSource, read_eval_tokens, tokenize_corpus

HEADING = re.compile(r"^ = [^=].* = $")


def articles(path: Path) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if HEADING.match(line.rstrip("\n")):
            out.append((line.strip(" =\n"), []))
        if out:
            out[-1][1].append(line)
        # lines before the first heading (blank) are dropped
    return out


def eval_params(eng: RetgenEngine, tuned: dict, memory: bool = True):
    return eng.retrieval_params(k=tuned.get("k") or None, temperature=tuned.get("temperature") or None,
                                lam=tuned.get("lam"), policy=False, memory=memory)


def evaluate(eng: RetgenEngine, test: np.ndarray, tuned: dict, retrieved, memory: bool = True) -> dict:
    params = eval_params(eng, tuned, memory)
    t = time.perf_counter()
    rep = perplexity_report(eng.lm, test, eng.vocab, params, retrieved=retrieved)
    rep["seconds"] = time.perf_counter() - t
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/retgen-memory-update"))
    ap.add_argument("--keys", choices=["lexical", "dense", "fused"],
                    help="memory keys (default: those lm_benchmark.py chose on valid)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--reuse-a", action="store_true",
                    help="load model A from --work if it is there (its build time from its manifest)")
    ap.add_argument("--rebuild-model", type=Path,
                    help="a model already built on all of train with the same config and "
                         "vocabulary (e.g. lm_benchmark.py's); its build time is read from its "
                         "manifest instead of building it again in this run")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("memory_update")
    mach = machine()
    train = a.data_dir / "wikitext-2" / "wiki.train.tokens"
    test_file = a.data_dir / "wikitext-2" / "wiki.test.tokens"
    tuned_file = a.out / "wikitext2.json"
    tuned, mem_row = {"lam": None}, None
    cfg = RETGENConfig()
    cfg.tokenizer.mode = "words"
    if tuned_file.exists():
        res = json.loads(tuned_file.read_text())
        tuned = res["tuned_params"]
        cfg.cache = type(cfg.cache)(**vars(cache_of(tuned)))
        mem_row = res.get("memory", {}).get("chosen")
    if mem_row:
        cfg.memory = cfg.memory.model_copy(update={k: mem_row[k] for k in (
            "keys", "k", "refresh", "temperature", "weights", "kappa", "order") if k in mem_row})
    if a.keys:
        cfg.memory.keys = a.keys

    arts = articles(train)
    A, B = arts[0::2], arts[1::2]
    a.work.mkdir(parents=True, exist_ok=True)
    fa = a.work / "A.tokens"
    fa.write_text("".join("".join(lines) for _, lines in A), encoding="utf-8")
    vocab = tokenize_corpus(CorpusSource([train]), "words", progress=False).vocab
    n_tok = {name: sum(len(l.split()) + 1 for _, ls in part for l in ls) for name, part in (("A", A), ("B", B))}
    log.info("%d articles: A %d (%d tokens), B %d (%d tokens)", len(arts), len(A), n_tok["A"],
             len(B), n_tok["B"])

    t = time.perf_counter()
    if a.reuse_a and (a.work / "model-A" / "CURRENT").exists():
        eng = RetgenEngine.load(a.work / "model-A")
        eng.config.memory = cfg.memory  # the settings of this run (the tables at its order)
        eng.use_memory(eng.memory.store)
        stale = added_documents(eng.memory)  # a run stopped before its delete left B in it
        if stale:
            log.warning("model A's memory holds %d added documents; deleted first", len(stale))
            eng.memory.delete(stale)
            eng.save_memory()
        build_a = eng.manifest["build_stats"]["build_seconds_total"]
    else:
        eng = RetgenEngine.build(fa, out=a.work / "model-A", config=cfg, overwrite=True,
                                 vocabulary=vocab, progress=True)
        build_a = time.perf_counter() - t
    if eng.vocab.itos[:len(vocab)] != vocab.itos:
        raise SystemExit("model A's vocabulary is not the training vocabulary")
    eng = eng.variant(cache=cfg.cache)
    _memory.memoize_queries(eng.memory)
    test = read_eval_tokens(test_file, eng.tokenizer)
    seq = prepend_context(test, eng.vocab)
    retrieved = eng.retriever.search_stream(seq, tuned.get("k") or cfg.retrieval.k, progress=True)
    r_a = evaluate(eng, test, tuned, retrieved)
    r_a_nomem = evaluate(eng, test, tuned, retrieved, memory=False)

    texts = ["".join(lines) for _, lines in B]
    ids = [f"B:{i}:{title}" for i, (title, _) in enumerate(B)]
    t = time.perf_counter()
    eng.memory.add(texts, ids=ids, metadatas=[{"source": "wiki.train.tokens, half B"}] * len(B),
                   progress=True)
    enc_s = time.perf_counter() - t
    eng.lm.backoff_for(eval_params(eng, tuned))  # the back-off re-estimated with B (timed here)
    add_s = time.perf_counter() - t
    backoff_s = add_s - enc_s
    t = time.perf_counter()
    eng.save_memory()
    save_s = time.perf_counter() - t
    r_amb = evaluate(eng, test, tuned, retrieved)
    cfg_built = eng.memory.config
    # the ablation: B read by the passages only, the back-off as built on A
    eng.memory.config = cfg_built.model_copy(update={"update_backoff": False})
    r_amb_passages = evaluate(eng, test, tuned, retrieved)
    eng.memory.config = cfg_built
    t = time.perf_counter()
    tune_rep = eng.tune_memory(ids, progress=True, params=eval_params(eng, tuned, memory=False))
    tune_s = time.perf_counter() - t
    r_tuned = evaluate(eng, test, tuned, retrieved)
    n_before = len(eng.memory)
    deleted = eng.memory.delete(ids)
    eng.memory.config = cfg_built  # the build's weights again
    eng.save_memory()  # model A is left as it was built
    r_a2 = evaluate(eng, test, tuned, retrieved)

    rebuild_from = "built in this run"
    t = time.perf_counter()
    if a.rebuild_model is not None:
        full = RetgenEngine.load(a.rebuild_model)
        if full.vocab.itos[:len(vocab)] != vocab.itos:
            raise SystemExit(f"{a.rebuild_model} was not built with the training vocabulary")
        st = full.manifest["build_stats"]
        if full.parts.memory is None or not full.memory.passages:
            raise SystemExit(f"{a.rebuild_model} has no memory")
        full.config.memory = cfg.memory
        full.use_memory(full.memory.store)
        # its memory was built by lm_benchmark.py after the model (logged there, not in the
        # manifest): counted as its passage encoding at the same rate as this run's add
        mem_s = st.get("build_seconds_memory")
        src = "its manifest"
        if mem_s is None and tuned_file.exists():  # built by lm_benchmark.py: timed there
            mem_s = json.loads(tuned_file.read_text()).get("memory", {}).get("build_seconds")
            src = tuned_file.name
        rebuild_s = st["build_seconds_total"] + (mem_s or 0.0)
        rebuild_from = (f"{a.rebuild_model}: model build {st['build_seconds_total']:.0f} s from "
                        f"its manifest + memory build {mem_s or 0.0:.0f} s from {src}")
    else:
        full = RetgenEngine.build(train, out=a.work / "model-AB", config=cfg, overwrite=True,
                                  vocabulary=vocab, progress=True)
        rebuild_s = time.perf_counter() - t
    full = full.variant(cache=cfg.cache)
    retrieved_ab = full.retriever.search_stream(seq, tuned.get("k") or cfg.retrieval.k, progress=True)
    r_ab = evaluate(full, test, tuned, retrieved_ab)

    p_a, p_amb, p_ab, p_a2, p_t = (r["perplexity"] for r in (r_a, r_amb, r_ab, r_a2, r_tuned))
    gap = (p_a - p_amb) / (p_a - p_ab) if p_a != p_ab else float("nan")
    gap_t = (p_a - p_t) / (p_a - p_ab) if p_a != p_ab else float("nan")
    result = {
        "articles": {"A": len(A), "B": len(B)}, "tokens": n_tok, "vocab_size": len(vocab),
        "memory_config": cfg.memory.model_dump(), "lm_params": tuned,
        "test_perplexity": {"A alone": p_a, "A alone, memory off": r_a_nomem["perplexity"],
                            "A + memory(B) added live": p_amb,
                            "A + memory(B) added live, passages only (back-off as built)":
                                r_amb_passages["perplexity"],
                            "A + memory(B) added live, weights refitted on held-out B": p_t,
                            "rebuild on A + B": p_ab, "A after deleting B": p_a2},
        "gap_closed": gap, "gap_closed_tuned": gap_t,
        "memory_tune": tune_rep,
        "seconds": {"build A": build_a, "live add of B": add_s,
                    "live add of B: memory.add (passages encoded, tables)": enc_s,
                    "live add of B: back-off re-estimated": backoff_s, "save memory": save_s,
                    "memory tune on B": tune_s, "rebuild A + B": rebuild_s},
        "add_over_rebuild_time": add_s / rebuild_s,
        "add_and_tune_over_rebuild_time": (add_s + tune_s) / rebuild_s,
        "rebuild_timing": rebuild_from,
        "delete_restores_within": abs(p_a2 / p_a - 1), "deleted_documents": deleted,
        "documents_before_delete": n_before, "machine": mach,
        "targets": {"gap_closed": ">= 0.5", "add_over_rebuild_time": "<= 0.10",
                    "delete_restores_within": "<= 0.001"},
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "memory_update.json").write_text(json.dumps(result, indent=1))
    md = ["# Live memory update vs rebuild (WikiText-2 test)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, CPU flags {mach['cpu_flags']}; "
          f"{mach['date']}. Train split by article: A {len(A)} articles ({n_tok['A']:,} tokens), "
          f"B {len(B)} ({n_tok['B']:,}); one vocabulary of {len(vocab):,} words; memory keys "
          f"{cfg.memory.keys}.", "",
          "| model | test perplexity | wall time s |", "|---|---|---|",
          f"| A alone (memory of A's passages) | {p_a:.2f} | build {build_a:.0f} |",
          f"| A alone, memory off | {r_a_nomem['perplexity']:.2f} | |",
          f"| A + memory(B), added live with `memory.add` (passages and the back-off's counts) | "
          f"{p_amb:.2f} | add {add_s:.0f}: passages {enc_s:.0f} + back-off {backoff_s:.1f} (+ save "
          f"{save_s:.0f}) |",
          f"| the same, B read by the passages only (`update_backoff=False`) | "
          f"{r_amb_passages['perplexity']:.2f} | |",
          f"| A + memory(B), then `engine.tune_memory` on {tune_rep['documents']} held-out B "
          f"articles ({tune_rep['tokens']:,} tokens) | {p_t:.2f} | tune {tune_s:.0f} |",
          f"| rebuild on A + B | {p_ab:.2f} | rebuild {rebuild_s:.0f} ({rebuild_from}) |",
          f"| A after `memory.delete(B)`, the build's weights set back | {p_a2:.2f} | |", "",
          f"The live add closes {100 * gap:.1f}% of the gap between A alone and the rebuild "
          f"(target >= 50%) in {100 * add_s / rebuild_s:.1f}% of the rebuild's time (target <= 10%); "
          f"with the weights refitted on held-out B, {100 * gap_t:.1f}% in "
          f"{100 * (add_s + tune_s) / rebuild_s:.1f}%; "
          f"after deleting B, A's perplexity is back within {100 * abs(p_a2 / p_a - 1):.4f}% "
          "(target <= 0.1%).", ""]
    (a.out / "memory_update.md").write_text("\n".join(md))
    print("\n".join(md))
    if a.rebuild_model is None:
        shutil.rmtree(a.work / "model-AB", ignore_errors=True)


if __name__ == "__main__":
    main()
