"""Codec sweep: bytes per vector against recall@10 for faiss codes on the vector-store data.

Answers "how small can the index of a 1M-record MiniLM store be at recall@10 >= 0.9?" with the
codes faiss offers, each measured in the same run on the same vectors as
``benchmarks/vectorstore.py`` (real MiniLM WikiText-2 sentence vectors, then synthetic-from-real
beyond ``--real``; held-out real queries; truth from an exact ``IndexFlatL2``, the flat stores'
index, listed as the peer). Every codec is IVF with the same ``nlist`` (trained on a 65,536
sample), searched with 1 OpenMP thread at each ``--nprobe``:

- ``IVF-Flat``: raw float32 vectors, the ceiling that list probing alone allows;
- 8-bit residual PQ (``PQ{m}``; also try 9-bit ``PQ{m}x9``), ranked by ADC; ``+renorm`` re-scores the
  ADC top 4*k from the decoded, renormalized codes (what the store's ``compact``/``balanced``
  profiles do with the same bytes);
- ``SQ8``; RaBitQ with 2-4 bits per dimension (query bits ``qb=8``).

B/vector is the serialized faiss index (codes, 8-byte ids, centroids, codebooks) over N; the
document store adds 11 B per record (row id, IVF list number, liveness), see vectorstore.md.
Writes results/codecs.json and results/codecs.md.

    python benchmarks/codecs.py --size 1000000        # about 15 min on 2 cores
    python benchmarks/codecs.py --size 20000 --nlist 128 --codecs PQ128 RaBitQ2   # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

import vectorstore as vs
from retgen_engine.search.index import drop_precomputed_table

K = 10
CODECS = ["Flat", "SQ8", "PQ128", "PQ128+renorm", "PQ192+renorm", "RaBitQ2", "RaBitQ3",
          "RaBitQ4"]


def recall(I: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(I, truth)]))


def renorm_rescore(index, queries: np.ndarray, kk: int) -> np.ndarray:
    """ADC top ``kk`` re-scored from the decoded codes, renormalized (inner product)."""
    out = np.empty((len(queries), K), dtype=np.int64)
    for i, q in enumerate(queries):
        _, ids, rec = index.search_and_reconstruct(q[None], kk)
        rec = rec[0] / np.maximum(np.linalg.norm(rec[0], axis=1, keepdims=True), 1e-12)
        out[i] = ids[0][np.argsort(-(rec @ q), kind="stable")[:K]]
    return out


def run_codec(base: str, posts: list[str], vecs, queries, truth, nlist: int,
              nprobes: list[int], train) -> list:
    """Train and fill one IVF index with codes ``base``; measure it plain ("") and re-scored
    ("renorm") as ``posts`` asks."""
    spec = f"IVF{nlist},{base}"
    t0 = time.perf_counter()
    index = faiss.index_factory(vecs.shape[1], spec, faiss.METRIC_L2)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index.train(train)
    drop_precomputed_table(index)  # as the store's profiles do: no nlist*M*256-float table
    if base.startswith("RaBitQ"):
        index.qb = 8
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add_with_ids(vecs, np.arange(len(vecs), dtype=np.int64))
    add_s = time.perf_counter() - t0
    nbytes = int(faiss.serialize_index(index).nbytes)
    rows = []
    faiss.omp_set_num_threads(1)
    for post, nprobe in [(p, n) for p in posts for n in nprobes]:
        name = base + (f"+{post}" if post else "")
        index.nprobe = nprobe
        lat = []
        got = np.empty((len(queries), K), dtype=np.int64)
        for i, q in enumerate(queries):
            t = time.perf_counter()
            if post == "renorm":
                got[i] = renorm_rescore(index, q[None], 4 * K)[0]
            else:
                got[i] = index.search(q[None], K)[1][0]
            lat.append(time.perf_counter() - t)
        rows.append({"codec": name, "spec": spec, "nprobe": nprobe,
                     "bytes_per_vector": round(nbytes / len(vecs), 1),
                     "flat_over_this": round(vecs.shape[1] * 4 / (nbytes / len(vecs)), 2),
                     f"recall@{K}": round(recall(got, truth), 4),
                     "p50_ms": round(1e3 * float(np.median(lat)), 3),
                     "train_s": round(train_s, 1), "add_per_s": round(len(vecs) / add_s),
                     "loadavg_1m": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--real", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--nlist", type=int, default=2051,
                    help="IVF lists (default: what the store's in-index profiles pick when "
                         "they compress at 80k records)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--codecs", nargs="+", default=CODECS)
    ap.add_argument("--data", type=Path, default=vs.WIKITEXT if vs.WIKITEXT.is_file() else vs.DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/retgen_cache"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    vecs, _, queries, origin = vs.make_vectors(args.size, args.queries, args.data, args.cache,
                                               args.real, args.noise)
    exact = faiss.IndexFlatL2(vecs.shape[1])
    exact.add(vecs)
    t = time.perf_counter()
    faiss.omp_set_num_threads(1)
    lat = []
    truth = np.empty((len(queries), K), dtype=np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        truth[i] = exact.search(q[None], K)[1][0]
        lat.append(time.perf_counter() - t)
    rows = [{"codec": "exact IndexFlatL2 (the flat stores' index; peer)", "spec": "Flat",
             "nprobe": None, "bytes_per_vector": vecs.shape[1] * 4.0, "flat_over_this": 1.0,
             f"recall@{K}": 1.0, "p50_ms": round(1e3 * float(np.median(lat)), 3),
             "train_s": 0.0, "add_per_s": None, "loadavg_1m": round(os.getloadavg()[0], 2)}]
    del exact
    rng = np.random.default_rng(0)
    train = vecs[np.sort(rng.choice(len(vecs), min(len(vecs), 65_536), replace=False))]
    groups: dict[str, list[str]] = {}
    for name in args.codecs:  # one trained index per base codec, its variants share it
        base, _, post = name.partition("+")
        groups.setdefault(base, []).append(post)
    for base, posts in groups.items():
        rows += run_codec(base, posts, vecs, queries, truth, args.nlist, args.nprobe, train)
    rep = {"command": "python benchmarks/codecs.py " + " ".join(
               f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
               for k, v in vars(args).items() if k not in ("data", "cache", "out")),
           "machine": vs.machine(), "faiss": faiss.__version__, "size": args.size,
           "vectors": origin, "nlist": args.nlist, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codecs.json").write_text(json.dumps(rep, indent=1))
    (args.out / "codecs.md").write_text(markdown(rep))
    print(markdown(rep))


def markdown(rep: dict) -> str:
    v = rep["vectors"]
    lines = [f"# Codec sweep: {rep['size']} vectors ({v['real']} real MiniLM"
             + (f", {v['synthetic']} synthetic-from-real, noise std {v['noise_std']}" if
                v["synthetic"] else "") + ")", "",
             f"`{rep['command']}`; faiss {rep['faiss']}; {rep['machine']['platform']} "
             f"({rep['machine']['cpu_count']} CPUs, shared: load in the last column); IVF{rep['nlist']}"
             f" for every codec; 1 OpenMP thread per query; recall@{K} against exact search.", "",
             "| codec | nprobe | B/vector (index) | flat/this | recall@10 | p50 ms | train s | add/s "
             "| load 1m |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        lines.append(f"| {r['codec']} | {r['nprobe'] or ''} | {r['bytes_per_vector']} | "
                     f"{r['flat_over_this']} | {r[f'recall@{K}']} | {r['p50_ms']} | "
                     f"{r['train_s']} | {r['add_per_s'] or ''} | {r['loadavg_1m']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
