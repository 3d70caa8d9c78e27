"""Benchmark: RETGEN's document store vs LangChain community FAISS (and LlamaIndex's
FaissVectorStore when ``llama-index-vector-stores-faiss`` is installed) on the same vectors.

Vectors: real all-MiniLM-L6-v2 embeddings (bfloat16, batch 256, cached as .npy under
--cache) of distinct WikiText-2 train sentences; beyond --real vectors, "synthetic-from-real"
vectors (a real vector plus gaussian noise of std --noise per dimension, renormalized;
labelled as such in the results). Queries are held-out real sentences.
Measures add throughput, memory (faiss index bytes + stored vectors/codes + ids, and process
RSS delta), p50/p95 single-query latency (faiss with 1 OpenMP thread), recall@10 against an
exact IndexFlatL2, and the load average around each store; records the machine. Writes
results/vectorstore.json and results/vectorstore.md.

    python benchmarks/vectorstore.py --sizes 100000 1000000  # 100k real; 1M synthetic-from-real
    python benchmarks/vectorstore.py --smoke                 # 2000 vectors, seconds

The retgen store runs once per profile (--profiles, default all of
retgen_engine.docstore.codes.PROFILES; see retgen_engine.docstore.codes.large_store_kwargs).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import faiss
import numpy as np

from retgen_engine import load_encoder
from retgen_engine.docstore import DocumentStore, large_store_kwargs
from retgen_engine.docstore.codes import PROFILES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "wikitext2_sample.tokens"
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.train.tokens"
OUT = Path(__file__).resolve().parent / "results"
K = 10


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wikitext_units(path: Path, n: int) -> list[str]:
    """Up to ``n`` distinct WikiText-2 sentences (>= 4 words, headings skipped), in corpus
    order; when the corpus has fewer sentences, 12-word windows (stride 24) fill up."""
    import re

    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("=")]
    out, seen = [], set()

    def take(t: str) -> bool:
        if t not in seen:
            seen.add(t)
            out.append(t)
        return len(out) >= n

    for ln in lines:
        for s in re.split(r"(?<= [.!?]) ", ln):
            if len(s.split()) >= 4 and take(s.strip()):
                return out
    words = " ".join(lines).split()
    for s in range(0, len(words) - 12, 24):
        if take(" ".join(words[s:s + 12])):
            return out
    return out


def real_vectors(n: int, data: Path, cache: Optional[Path]) -> tuple[np.ndarray, list[str], float]:
    """MiniLM (bfloat16, batch 256) embeddings of ``n`` WikiText-2 units, cached as .npy
    (keyed by the texts' sha256) so repeated runs encode once."""
    def key(texts: list[str]) -> str:
        return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]

    texts = wikitext_units(data, n)
    f = cache / f"retgen_minilm_wt2_{len(texts)}_{key(texts)}.npy" if cache else None
    if cache is not None and cache.is_dir():  # a cache of at least n units (a prefix) will do
        for g in sorted(cache.glob("retgen_minilm_wt2_*.npy")):
            size = int(g.name.split("_")[3])
            if size >= len(texts):
                more = wikitext_units(data, size)
                if g.name == f"retgen_minilm_wt2_{len(more)}_{key(more)}.npy":
                    return np.load(g, mmap_mode="r")[:len(texts)].copy(), texts, 0.0
    enc = load_encoder("minilm", dtype="bfloat16")
    t0 = time.perf_counter()
    vecs = np.ascontiguousarray(enc.encode(texts, batch_size=256), dtype=np.float32)
    enc_s = time.perf_counter() - t0
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npy")
        np.save(tmp, vecs, allow_pickle=False)
        os.replace(tmp, f)
    return vecs, texts, enc_s


def make_vectors(size: int, n_queries: int, data: Path, cache: Optional[Path],
                 n_real: Optional[int] = None, noise: float = 0.02, seed: int = 0):
    """(base vectors, base texts, query vectors, origin). Queries are held-out real units.
    Base: ``min(size, n_real)`` real vectors; the rest synthetic-from-real (a random real
    base vector plus gaussian noise of std ``noise`` per dimension, renormalized)."""
    rng = np.random.default_rng(seed)
    n_real = min(size, n_real or size)
    real, texts, enc_s = real_vectors(n_real + n_queries, data, cache)
    perm = rng.permutation(len(real))
    queries, base = real[perm[:n_queries]], real[perm[n_queries:]]
    base_texts = [texts[i] for i in perm[n_queries:]]
    n_real = min(n_real, len(base))
    vecs = np.empty((size, real.shape[1]), dtype=np.float32)
    vecs[:n_real] = base[:n_real]
    vtexts = base_texts[:n_real]
    step = 100_000
    for s in range(n_real, size, step):  # synthetic-from-real, in chunks to bound memory
        src = rng.integers(0, n_real, min(step, size - s))
        x = base[src] + rng.normal(0, noise, (len(src), base.shape[1])).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        vecs[s:s + len(src)] = x
        vtexts += [f"{base_texts[j]} #{s + i}" for i, j in enumerate(src.tolist())]
    return vecs, vtexts, queries, {"real": n_real, "synthetic": size - n_real,
                                   "noise_std": noise if size > n_real else None,
                                   "encode_s": round(enc_s, 1), "source": str(data)}


def latency_recall(search, queries, truth):
    lat, rec = [], []
    for q, t in zip(queries, truth):
        t0 = time.perf_counter()
        got = search(q)
        lat.append(time.perf_counter() - t0)
        rec.append(len(set(got) & set(t.tolist())) / K)
    return {"p50_ms": round(1e3 * float(np.percentile(lat, 50)), 3),
            "p95_ms": round(1e3 * float(np.percentile(lat, 95)), 3),
            f"recall@{K}": round(float(np.mean(rec)), 4)}


def bench_retgen(vecs, texts, queries, truth, profile: str, kwargs: dict, batch=10000):
    gc.collect()
    r0 = rss_bytes()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    s = DocumentStore(**kwargs)
    for b in range(0, len(vecs), batch):
        s.upsert([str(i) for i in range(b, b + len(vecs[b:b + batch]))], texts[b:b + batch],
                 vecs[b:b + batch])
    add_s = time.perf_counter() - t0
    if s.compressed and s.disk_bytes():
        spec = (s.spec + f" codes in RAM; ADC top {s.refine_factor}k re-scored from float16 "
                "vectors on disk")
    elif s.compressed and s.refine_codes == "index":
        spec = (s.spec + f" codes only in the index (no raw vectors); ADC top {s.refine_factor}k"
                " re-scored from the decoded codes")
    else:
        spec = s.spec + (f" + refine {s.refine_spec} codes (no raw vectors)" if s.compressed
                         else " + float32 vectors")
    res = {"store": f"retgen DocumentStore ({profile})", "spec": spec,
           "add_per_s": round(len(vecs) / add_s), "index_bytes": s.nbytes(),
           "disk_bytes": s.disk_bytes(),
           "rss_delta_bytes": rss_bytes() - r0, "refine_factor": s.refine_factor,
           "nprobe": s.index_config.nprobe}
    res.update(latency_recall(lambda q: [int(h.id) for h in s.search(q, K)], queries, truth))
    if res["disk_bytes"]:  # page cache dropped before every query: each read comes from disk
        cold = []
        for q in queries:
            s.evict_disk_cache()
            t1 = time.perf_counter()
            s.search(q, K)
            cold.append(time.perf_counter() - t1)
        res["p50_cold_ms"] = round(1e3 * float(np.percentile(cold, 50)), 3)
        res["p95_cold_ms"] = round(1e3 * float(np.percentile(cold, 95)), 3)
    res["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    del s
    return res


def bench_langchain_faiss(vecs, texts, queries, truth, batch=10000):
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import FakeEmbeddings

    gc.collect()
    r0 = rss_bytes()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    vs = FAISS(FakeEmbeddings(size=vecs.shape[1]), faiss.IndexFlatL2(vecs.shape[1]),
               InMemoryDocstore(), {})
    for b in range(0, len(vecs), batch):
        ids = [str(i) for i in range(b, b + len(vecs[b:b + batch]))]
        vs.add_embeddings(list(zip(texts[b:b + batch], vecs[b:b + batch].tolist())), ids=ids)
    add_s = time.perf_counter() - t0
    res = {"store": "langchain_community FAISS (IndexFlatL2)", "spec": "Flat",
           "add_per_s": round(len(vecs) / add_s),
           "index_bytes": int(faiss.serialize_index(vs.index).nbytes),
           "rss_delta_bytes": rss_bytes() - r0}
    res.update(latency_recall(
        lambda q: [int(d.id) for d, _ in vs.similarity_search_with_score_by_vector(q, K)],
        queries, truth))
    res["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    del vs
    return res


def bench_llama_faiss(vecs, texts, queries, truth, batch=10000):
    try:
        from llama_index.vector_stores.faiss import FaissVectorStore
    except ImportError:
        return {"store": "llama_index FaissVectorStore",
                "skipped": "llama-index-vector-stores-faiss is not installed"}
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery

    gc.collect()
    r0 = rss_bytes()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    vs = FaissVectorStore(faiss_index=faiss.IndexFlatL2(vecs.shape[1]))
    ids = []
    for b in range(0, len(vecs), batch):  # nodes in batches: 1M nodes at once would not fit
        ids += vs.add([TextNode(id_=str(b + i), text=t, embedding=v.tolist())
                       for i, (t, v) in enumerate(zip(texts[b:b + batch], vecs[b:b + batch]))])
    add_s = time.perf_counter() - t0
    # FaissVectorStore keeps only the faiss index; its node ids are faiss row numbers here
    res = {"store": "llama_index FaissVectorStore (IndexFlatL2)", "spec": "Flat (no texts kept)",
           "add_per_s": round(len(vecs) / add_s),
           "index_bytes": int(faiss.serialize_index(vs.client).nbytes),
           "rss_delta_bytes": rss_bytes() - r0}
    res.update(latency_recall(lambda q: [int(i) for i in vs.query(VectorStoreQuery(
        query_embedding=q.tolist(), similarity_top_k=K)).ids], queries, truth))
    res["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    del vs, ids
    return res


def _filesystem(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts; "" when unknown)."""
    best, fs = "", ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} ({dev})"
    except OSError:
        pass
    return fs


def machine() -> dict:
    import langchain_community
    import langchain_core
    import llama_index.core

    return {"cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
            "platform": platform.platform(), "python": platform.python_version(),
            "faiss": faiss.__version__, "numpy": np.__version__,
            "temp_dir_filesystem": _filesystem(tempfile.gettempdir()),
            "langchain_core": langchain_core.__version__,
            "langchain_community": langchain_community.__version__,
            "llama_index_core": llama_index.core.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--real", type=int, default=100_000,
                    help="real MiniLM vectors at most; larger sizes are synthetic-from-real")
    ap.add_argument("--noise", type=float, default=0.02,
                    help="std per dimension of the synthetic-from-real noise")
    ap.add_argument("--data", type=Path, default=WIKITEXT if WIKITEXT.is_file() else DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/retgen_cache"),
                    help="where encoded vectors are cached (.npy)")
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES,
                    help="retgen large-store profiles (retgen_engine.docstore.codes.large_store_kwargs)")
    ap.add_argument("--refine-factor", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--stores", nargs="+", default=["retgen", "langchain", "llama_index"])
    ap.add_argument("--smoke", action="store_true", help="one size of 2000 vectors")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sizes = [2000] if args.smoke else args.sizes
    faiss.omp_set_num_threads(1)
    runs = []
    for size in sizes:
        vecs, texts, queries, origin = make_vectors(size, args.queries, args.data, args.cache,
                                                    args.real, args.noise)
        exact = faiss.IndexFlatL2(vecs.shape[1])
        exact.add(vecs)
        _, truth = exact.search(queries, K)
        del exact
        results = []
        over = {"nprobe": args.nprobe} if args.nprobe else {}
        for profile in args.profiles if "retgen" in args.stores else []:
            kw = large_store_kwargs(profile, args.refine_factor, **over)
            results.append(bench_retgen(vecs, texts, queries, truth, profile, kw))
        if "langchain" in args.stores:
            results.append(bench_langchain_faiss(vecs, texts, queries, truth))
        if "llama_index" in args.stores:
            results.append(bench_llama_faiss(vecs, texts, queries, truth))
        flat = [r["index_bytes"] for r in results if "index_bytes" in r and
                r["spec"].startswith("Flat")]
        for r in results:
            if "index_bytes" in r:
                r["bytes_per_vector"] = round(r["index_bytes"] / size, 1)
                if flat:
                    r["memory_ratio_vs_flat"] = round(min(flat) / r["index_bytes"], 2)
        runs.append({"size": size, "dim": int(vecs.shape[1]), "vectors": origin,
                     "results": results})
        del vecs, texts
        gc.collect()
        # written after every size, so a long last size does not lose the earlier ones
        report = {"machine": machine(), "k": K, "queries": args.queries, "runs": runs,
                  "sizes_requested": sizes,
                  "command": (f"nice -n {os.nice(0)} " if os.nice(0) else "")
                  + "python benchmarks/vectorstore.py " + " ".join(sys.argv[1:])}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "vectorstore.json").write_text(json.dumps(report, indent=2))
        (args.out / "vectorstore.md").write_text(markdown(report))
        print(markdown(report), flush=True)


def markdown(rep: dict) -> str:
    m = rep["machine"]
    lines = [f"# Vector store benchmark\n\n`{rep['command']}`; {m['cpu_count']} CPUs (shared "
             f"with other jobs; load at the end {tuple(round(x, 2) for x in m['loadavg'])}), "
             f"faiss {m['faiss']}, 1 OpenMP thread for add and search; recall@{rep['k']} vs exact "
             f"IndexFlatL2 over {rep['queries']} held-out real MiniLM queries (WikiText-2 "
             "sentences). Memory = faiss index (serialized) + stored vectors or codes + ids; "
             "texts/metadata are not counted for any store; disk = float16 vectors kept on disk "
             "(compact-disk: temp dir on "
             f"{m.get('temp_dir_filesystem') or 'an unknown filesystem'}), not in RAM. "
             "p50/p95 are medians/95th percentiles "
             "of single-query wall time through each store's Python API (cold: the page cache "
             "dropped before each query, so the disk rows are read from disk); the 1-minute load "
             "average before/after each store is in the last column (timings are noisy).\n"]
    for run in rep["runs"]:
        v = run["vectors"]
        syn = (f", {v['synthetic']} synthetic-from-real (real vector + N(0, {v['noise_std']}) "
               "per dimension, renormalized)" if v["synthetic"] else "")
        lines.append(f"\n## {run['size']} vectors (dim {run['dim']}; {v['real']} real MiniLM"
                     f"{syn})\n")
        lines.append("| store | spec | add/s | memory MB | B/vector | flat/ours memory | "
                     "disk B/vector | RSS delta MB | p50 ms | p95 ms | p50 / p95 cold ms | "
                     f"recall@{rep['k']} | load 1m |\n"
                     "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in run["results"]:
            if "skipped" in r:
                lines.append(f"| {r['store']} | skipped: {r['skipped']} ||||||||||||")
                continue
            lines.append(f"| {r['store']} | {r['spec']} | {r['add_per_s']} | "
                         f"{r['index_bytes'] / 1e6:.1f} | {r.get('bytes_per_vector', '')} | "
                         f"{r.get('memory_ratio_vs_flat', '')} | "
                         f"{round(r.get('disk_bytes', 0) / run['size'], 1) or ''} | "
                         f"{r['rss_delta_bytes'] / 1e6:.1f} | {r['p50_ms']} | {r['p95_ms']} | "
                         + (f"{r['p50_cold_ms']} / {r['p95_cold_ms']} | " if 'p50_cold_ms' in r
                            else "| ") +
                         f"{r['recall@%d' % rep['k']]} | {r.get('loadavg_1m', '')} |")
    done = {run["size"] for run in rep["runs"]}
    missing = [n for n in rep.get("sizes_requested", []) if n not in done]
    if missing:
        lines.append(f"\nRequested but not finished (stopped for time): sizes {missing}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
