"""Encoder backends side by side: throughput, single-query latency, contention, recall@10.

    python benchmarks/encoder.py [--rounds 3] [--out benchmarks/results/encoder]

For every backend (torch float32 / bfloat16, ONNX Runtime float32 / int8) on the bundled
all-MiniLM-L6-v2, idle and while two busy processes (started and stopped here) compete for the
cores:

* contexts/s at ~8 and ~32 word pieces (``encode``, batches of 256);
* single-query p50 latency (the lean path) at ~8 and ~16 word pieces;
* recall@10 of exact inner-product search (faiss IndexFlatIP) over a few thousand pattern-like
  contexts against torch float32's top-10: ``same`` (database and queries both encoded by the
  backend) and ``cross`` (a database built with torch float32, queried with the backend).

Rounds interleave the backends so that a noisy machine hurts them alike; medians are reported.
Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retgen_engine.search import encoders_onnx  # noqa: E402
from retgen_engine.search.encoder import bundled_minilm_path, fast_tokenizer, load_encoder  # noqa: E402
from retgen_engine.search.encoders_select import (NATIVE_BF16_FLAGS, available_cores, choose,  # noqa: E402
                                                  cpu_flags, onnxruntime_installed)

BACKENDS = [("torch", "float32"), ("torch", "bfloat16"), ("onnx", "float32"), ("onnx", "int8")]
REF = "torch/float32"
DATA = ROOT / "examples" / "data" / "wikitext2_sample.tokens"


def texts_with_pieces(words: list[str], pieces: int, n: int, seed: int) -> list[str]:
    """n word windows of the sample whose text is ~``pieces`` word pieces with [CLS]/[SEP]."""
    tok = fast_tokenizer(bundled_minilm_path(), 512)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        i = int(rng.integers(0, len(words) - 64))
        for j in range(i + 1, i + 64):
            t = " ".join(words[i:j])
            if len(tok.encode(t).ids) >= pieces:
                out.append(t)
                break
    return out


def mean_pieces(texts: list[str]) -> float:
    tok = fast_tokenizer(bundled_minilm_path(), 512)
    return float(np.mean([sum(e.attention_mask) for e in tok.encode_batch(texts)]))


def throughput(enc, texts: list[str], seconds: float) -> float:
    enc.encode(texts[:256])  # warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        enc.encode(texts, batch_size=256)
        n += len(texts)
    return n / (time.perf_counter() - t0)


def single_p50_ms(enc, texts: list[str]) -> float:
    for t in texts[:20]:
        enc.encode([t])
    ts = []
    for t in texts:
        t0 = time.perf_counter()
        enc.encode([t])
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def _spin(stop_at: float) -> None:  # a busy process: pure CPU until told to stop (or timeout)
    x = 0
    while time.time() < stop_at:
        x += 1


class Load:
    """Two busy processes for the duration of the ``with`` block (killed in ``finally``)."""

    def __init__(self, n: int = 2, max_seconds: float = 900):
        self.n, self.max_seconds, self.procs = n, max_seconds, []

    def __enter__(self):
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_spin, args=(time.time() + self.max_seconds,), daemon=True)
                      for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.join(5)
        return False


def measure(encs: dict, sets: dict, rounds: int, seconds: float) -> dict:
    res: dict = {k: {m: [] for m in ("ctx_s_8", "ctx_s_32", "p50_ms_8", "p50_ms_16")} for k in encs}
    for _ in range(rounds):
        for k, e in encs.items():
            res[k]["ctx_s_8"].append(throughput(e, sets["b8"], seconds))
            res[k]["ctx_s_32"].append(throughput(e, sets["b32"], seconds))
            res[k]["p50_ms_8"].append(single_p50_ms(e, sets["q8"]))
            res[k]["p50_ms_16"].append(single_p50_ms(e, sets["q16"]))
    return {k: {m: float(np.median(v)) for m, v in d.items()} for k, d in res.items()}


def recall(encs: dict, db_texts: list[str], q_texts: list[str], k: int = 10) -> dict:
    import faiss

    def topk(db, q):
        index = faiss.IndexFlatIP(db.shape[1])
        index.add(np.ascontiguousarray(db, dtype=np.float32))
        return index.search(np.ascontiguousarray(q, dtype=np.float32), k)[1]

    vecs = {key: (e.encode(db_texts), np.stack([e.encode([t])[0] for t in q_texts]))
            for key, e in encs.items()}
    ref_db, ref_q = vecs[REF]
    ref = topk(ref_db, ref_q)

    def rec(got):
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, ref)]))

    return {key: {"same": rec(topk(db, q)), "cross": rec(topk(ref_db, q)),
                  "cos_mean": float(np.mean(np.sum(db * ref_db, axis=1))),
                  "cos_min": float(np.min(np.sum(db * ref_db, axis=1)))}
            for key, (db, q) in vecs.items()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in ("torch", "onnxruntime", "onnx", "transformers", "sentence-transformers",
              "tokenizers", "faiss-cpu", "numpy"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = sorted(cpu_flags())
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "f16c"))]
    return {"platform": platform.platform(), "cpu": model, "cores_available": available_cores(),
            "cpu_count": os.cpu_count(), "native_bf16": sorted(NATIVE_BF16_FLAGS & set(flags)),
            "simd_flags": simd, "flags": flags, "loadavg_start": os.getloadavg()}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Encoder backends ({r['date']})", "",
             f"Machine: {m['cpu']}, {m['cores_available']} cores available, native bf16: "
             f"{', '.join(m['native_bf16']) or 'no'}; load average {m['loadavg_start']} at start, "
             f"{r['loadavg_end']} at end (other work on the machine shows here).",
             f"SIMD flags: {' '.join(m['simd_flags'])}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), "",
             f"auto picks **{r['auto']['backend']}/{r['auto']['dtype']}** ({r['auto']['reason']}). "
             f"ONNX export (once per weights): {r['export_seconds']} s.", "",
             f"Word pieces (with [CLS]/[SEP]), mean: {r['pieces']}. Medians over "
             f"{r['rounds']} idle / {r['load_rounds']} loaded rounds; 'load' = two busy processes.",
             "",
             "| backend | ctx/s @8 | ctx/s @32 | x torch fp32 @8 | 1-query p50 ms @8 | @16 | "
             "ctx/s @8 load | slowdown @8 | p50 @16 load | slowdown 1q | recall@10 same | "
             "cross | cos mean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = r["idle"]["torch/float32"]["ctx_s_8"]
    for k, v in r["idle"].items():
        ld, rc = r["load"].get(k, {}), r["recall"].get(k, {})
        sd = v["ctx_s_8"] / ld["ctx_s_8"] if ld else float("nan")
        s1 = ld["p50_ms_16"] / v["p50_ms_16"] if ld else float("nan")
        lines.append(
            f"| {k} | {v['ctx_s_8']:.0f} | {v['ctx_s_32']:.0f} | {v['ctx_s_8'] / base:.2f} | "
            f"{v['p50_ms_8']:.2f} | {v['p50_ms_16']:.2f} | {ld.get('ctx_s_8', float('nan')):.0f} | "
            f"{sd:.2f} | {ld.get('p50_ms_16', float('nan')):.2f} | {s1:.2f} | "
            f"{rc.get('same', float('nan')):.3f} | {rc.get('cross', float('nan')):.3f} | "
            f"{rc.get('cos_mean', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load-rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5, help="per throughput measurement")
    ap.add_argument("--db", type=int, default=3000, help="contexts in the recall database")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoder"))
    a = ap.parse_args(argv)
    words = DATA.read_text(encoding="utf-8").split()
    sets = {"b8": texts_with_pieces(words, 8, 512, 1), "b32": texts_with_pieces(words, 32, 256, 2),
            "q8": texts_with_pieces(words, 8, 100, 3), "q16": texts_with_pieces(words, 16, 100, 4)}
    pieces = {k: round(mean_pieces(v), 1) for k, v in sets.items()}
    t = time.perf_counter()
    encs = {f"{b}/{d}": load_encoder("minilm", dtype=d, backend=b) for b, d in BACKENDS}
    export_s = json.loads((encs["onnx/float32"].export_dir / "meta.json").read_text())["seconds"]
    print(f"loaded in {time.perf_counter() - t:.1f}s", flush=True)
    spin = load_encoder("minilm", dtype="float32", backend="onnx")
    encoders_onnx.ALLOW_SPINNING = "1"  # read when the batch session is made (lazily)
    spin.encode(sets["b8"][:64])
    encoders_onnx.ALLOW_SPINNING = "0"
    encs_all = {**encs, "onnx/float32 spinning": spin}
    c = choose(cpu_flags(), onnxruntime_installed())
    r = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "versions": versions(),
         "auto": {"backend": c.backend, "dtype": c.dtype, "reason": c.reason},
         "export_seconds": export_s, "pieces": pieces, "rounds": a.rounds,
         "load_rounds": a.load_rounds}
    t = time.perf_counter()
    r["idle"] = measure(encs_all, sets, a.rounds, a.seconds)
    print(f"idle done in {time.perf_counter() - t:.0f}s", flush=True)
    t = time.perf_counter()
    with Load(2):
        r["load"] = measure(encs_all, sets, a.load_rounds, a.seconds)
    print(f"load done in {time.perf_counter() - t:.0f}s", flush=True)
    t = time.perf_counter()
    # recall: distinct pattern-like contexts of 1-4 words (what RETGEN stores and queries)
    rng = np.random.default_rng(5)
    ctx = list(dict.fromkeys(" ".join(words[i:i + n]) for n in (1, 2, 3, 4)
                             for i in rng.integers(0, len(words) - 8, a.db)))
    rng.shuffle(ctx)
    r["recall"] = recall(encs, ctx[:a.db], ctx[a.db:a.db + 300])
    r["recall_db"], r["recall_queries"] = a.db, 300
    print(f"recall done in {time.perf_counter() - t:.0f}s", flush=True)
    r["loadavg_end"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=1), encoding="utf-8")
    md = markdown(r)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return r


if __name__ == "__main__":
    main()
