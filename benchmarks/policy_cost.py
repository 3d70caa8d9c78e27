"""Inference cost of the learned policy against one search and one query encoding (batch 1,
one thread each), on a trained model directory.

    python benchmarks/policy_cost.py --model-dir /tmp/wt2_model   # writes results/policy_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from retgen_engine import RetgenEngine

from lm_benchmark import machine

HERE = Path(__file__).resolve().parent


def median_ms(fn, n: int = 300) -> float:
    for _ in range(10):
        fn()
    t = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        t.append(1000 * (time.perf_counter() - s))
    return statistics.median(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args()
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    eng = RetgenEngine.load(a.model_dir)
    if eng.policy is None:
        raise SystemExit(f"{a.model_dir} has no trained policy (run `retgen train`)")
    vec = eng.retriever.encode(["the game was released"])
    x = np.concatenate([vec, np.zeros((1, eng.policy.input_dim - vec.shape[1]), np.float32)], 1)
    res = {"policy_forward_ms": median_ms(lambda: eng.policy.act(x)),
           "search_k64_ms": median_ms(lambda: eng.index.search(vec, 64)),
           "encode_query_ms": median_ms(lambda: eng.retriever.encode(["the game was released"]), 100),
           "index_spec": eng.index.spec, "machine": machine()}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "policy_cost.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
