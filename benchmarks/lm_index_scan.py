"""How a built LM's IVF-PQ index is scanned: L2 with faiss' precomputed table, L2 without it
(``IndexConfig.precomputed_table=False``, the default), or by inner product (``ip_scan``). Same model, same codes, measured
side by side: RAM held by the index, single-query search latency (1 thread, k=32, real valid
contexts), and valid/test perplexity of the saved model.

    python benchmarks/lm_index_scan.py --model-dir /tmp/wt2_model --corpus wikitext2
    python benchmarks/lm_index_scan.py --model-dir /tmp/retgen-bench-ptb --corpus ptb

Writes results/lm_index_scan_<corpus>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from retgen_engine import RetgenEngine
from retgen_engine.text.corpus import read_eval_tokens
from retgen_engine.search.index import FaissIndex, drop_precomputed_table, table_bytes

from lm_benchmark import CORPORA, DATA, machine

HERE = Path(__file__).resolve().parent


def variants(eng):
    """(name, FaissIndex) over the model's one faiss index, in order: the table is built for
    the first variant and dropped from the shared faiss object for the other two."""
    base = eng.index
    ivf = faiss.downcast_index(faiss.extract_index_ivf(base.index))
    ivf.use_precomputed_table = 1
    ivf.precompute_table()
    yield "L2 + faiss precomputed table", base
    drop_precomputed_table(base.index)
    yield "L2, no table (default)", FaissIndex(base.index, base.spec, base.default_nprobe,
                                              mapped_from=base.mapped_from)
    yield "inner-product scan (ip_scan)", FaissIndex(base.index, base.spec, base.default_nprobe,
                                                     mapped_from=base.mapped_from, ip_scan=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    ap.add_argument("--queries", type=int, default=500, help="single-query latency samples")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    eng = RetgenEngine.load(a.model_dir)
    pattern = DATA / CORPORA[a.corpus][0]
    ids = {s: read_eval_tokens(str(pattern).format(s), eng.tokenizer) for s in ("valid", "test")}
    pos = np.linspace(1, len(ids["valid"]) - 1, a.queries).astype(int)
    vecs = eng.retriever.encode(eng.retriever.stream_texts(ids["valid"], pos))
    rows = []
    for name, ix in variants(eng):
        e = eng.variant(index=ix)
        faiss.omp_set_num_threads(1)
        lat = []
        for v in vecs:
            t = time.perf_counter()
            ix.search(v[None], 32)
            lat.append(1e3 * (time.perf_counter() - t))
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        row = {"variant": name, "index_bytes": ix.nbytes(),
               "table_bytes": table_bytes(ix.index), "search_p50_ms": statistics.median(lat),
               "load_1m": os.getloadavg()[0]}
        for split in ("valid", "test"):
            t = time.perf_counter()
            row[f"{split}_perplexity"] = e.perplexity(ids[split])["perplexity"]
            row[f"{split}_seconds"] = time.perf_counter() - t
        print(json.dumps(row), flush=True)
        rows.append(row)
    flat = eng.index.ntotal * eng.index.dim * 4
    rep = {"corpus": a.corpus, "model_dir": str(a.model_dir), "index_spec": eng.index.spec,
           "ntotal": eng.index.ntotal, "flat_float32_bytes": flat, "rows": rows,
           "command": "python benchmarks/lm_index_scan.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "out"),
           "machine": machine()}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"lm_index_scan_{a.corpus}.json").write_text(json.dumps(rep, indent=1))
    md = [f"# LM index scan, {a.corpus}\n",
          f"`{rep['command']}`; {eng.index.spec}, {eng.index.ntotal} patterns; one model, one run; "
          f"{os.cpu_count()} CPUs, search latency with 1 faiss thread over {a.queries} real valid "
          "contexts (k=32, default nprobe), perplexity of the saved model (its own retrieval "
          "settings).\n",
          "| variant | index RAM MiB (of which faiss table) | flat float32 / index | search p50 ms "
          "| valid ppl | test ppl |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['index_bytes'] / 2**20:.1f} ({r['table_bytes'] / 2**20:.1f}) "
                  f"| {flat / r['index_bytes']:.1f} | {r['search_p50_ms']:.3f} "
                  f"| {r['valid_perplexity']:.2f} | {r['test_perplexity']:.2f} |")
    (a.out / f"lm_index_scan_{a.corpus}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
