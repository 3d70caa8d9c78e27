"""First-run speed on the bundled sample corpus: ``retgen demo`` wall time, and generation
speed with retrieval on every token, the step's thread policy of this release next to the
previous ones in the same run.

    python benchmarks/generation_speed.py               # writes results/generation_speed.{json,md}

Settings are interleaved round by round (a change of machine load hits all of them alike) and
reported as medians. "Encoding beside" is this release's policy (:mod:`retgen_engine.lm.beside`):
with the memory on, a step's query encoding runs on a second thread beside the back-off, the
cache and the memory's lookup; "inline" is the previous release (``RETGEN_STEP_WORKERS=0``). Both run a faiss search
of at most 16 queries on one OpenMP thread (:data:`retgen_engine.search.index.SMALL_BATCH`);
"every faiss thread" is the release before (``SMALL_BATCH = 0``, inline).
Every setting retrieves patterns at every token (``policy=False``: no skipping).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from retgen_engine import RetgenEngine
from retgen_engine.lm import beside
from retgen_engine.search import index as index_mod

from lm_benchmark import machine

HERE = Path(__file__).resolve().parent
PROMPTS = ["The tower was built", "In 1912 , the", "The game was released in"]
THIS = "encoding beside the step, one faiss thread for small batches (this release)"
PREVIOUS = "encoding inline, one faiss thread for small batches (previous release)"


def demo_seconds(quiet: bool) -> float:
    """Wall time of ``retgen demo`` in a fresh process (build + generate + traces)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "retgen_engine.cli", "demo"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gen-tokens", type=int, default=60)
    ap.add_argument("--demo-runs", type=int, default=1, help="`retgen demo` runs to time (0: skip)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("generation_speed")
    mach = machine()
    demo = [demo_seconds(a.quiet) for _ in range(a.demo_runs)]
    log.info("retgen demo: %s s", [round(x, 1) for x in demo])

    with tempfile.TemporaryDirectory(prefix="retgen-genspeed-") as tmp:
        t = time.perf_counter()
        RetgenEngine.sample(out=Path(tmp) / "m", progress=not a.quiet)
        build_s = time.perf_counter() - t
        eng = RetgenEngine.load(Path(tmp) / "m")
        info = eng.info()
        eng.generate(PROMPTS[0], max_new_tokens=5, seed=0)  # warm up the encoder session
        small = index_mod.SMALL_BATCH
        settings = {}
        for policy, sb, workers in ((THIS, small, None), (PREVIOUS, small, "0"),
                                    ("every faiss thread, encoding inline (two releases ago)", 0, "0")):
            for mem in (False, True):
                for trace in (True, False):
                    name = (f"{policy}; memory {'on' if mem else 'off'}; "
                            f"traces {'on' if trace else 'off'}")
                    settings[name] = (sb, workers, dict(memory=mem, trace=trace, policy=False))
        rates: dict[str, list[float]] = {n: [] for n in settings}
        env0 = os.environ.get("RETGEN_STEP_WORKERS")
        for r in range(a.rounds):
            for name, (sb, workers, kw) in settings.items():
                index_mod.SMALL_BATCH = sb
                if workers is None:
                    os.environ.pop("RETGEN_STEP_WORKERS", None)
                else:
                    os.environ["RETGEN_STEP_WORKERS"] = workers
                t, n = time.perf_counter(), 0
                for i, p in enumerate(PROMPTS):
                    n += eng.generate(p, max_new_tokens=a.gen_tokens, seed=i + 7 * r,
                                      **kw).completion_tokens
                rates[name].append(n / (time.perf_counter() - t))
            index_mod.SMALL_BATCH = small
            log.info("round %d/%d done", r + 1, a.rounds)
        if env0 is None:
            os.environ.pop("RETGEN_STEP_WORKERS", None)
        else:
            os.environ["RETGEN_STEP_WORKERS"] = env0
    mach["load_average_end"] = list(os.getloadavg())
    base = {n: statistics.median(v) for n, v in rates.items()}
    rows = []
    for name, v in rates.items():
        prev = PREVIOUS + name[name.index("; memory"):]  # the same setting, previous release
        rows.append({"setting": name, "median_tokens_per_second": statistics.median(v),
                     "min": min(v), "max": max(v),
                     "ratio_to_previous": statistics.median(v) / base[prev]})
    result = {"demo_wall_seconds": demo, "sample_build_seconds": build_s,
              "model": {k: info[k] for k in ("num_patterns", "index_spec", "vocab_size")},
              "encoder": info["encoder"], "memory_passages": (info["memory"] or {}).get("passages"),
              "rounds": a.rounds, "gen_tokens_per_prompt": a.gen_tokens, "prompts": PROMPTS,
              "small_batch": small, "step_workers": beside.workers(), "rows": rows, "runs": rates,
              "machine": mach}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "generation_speed.json").write_text(json.dumps(result, indent=1))
    md = ["# First run: demo wall time and generation speed (sample corpus)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, CPU flags `{mach['cpu_flags']}`; load "
          f"{mach['load_average'][0]:.1f} at start / {mach['load_average_end'][0]:.1f} at end; "
          f"{mach['date']}. Encoder: {info['encoder'].get('backend')} "
          f"{info['encoder'].get('dtype')}. Model: {info['num_patterns']} patterns, "
          f"{info['index_spec']}, {result['memory_passages']} memory passages; step workers "
          f"{result['step_workers']} (this release).", "",
          "- `retgen demo` wall time (fresh process: build, generate, traces): "
          + ", ".join(f"{x:.1f} s" for x in demo) if demo else "- `retgen demo` not timed",
          f"- sample model build (in this process): {build_s:.1f} s", "",
          f"Generation: {len(PROMPTS)} prompts x {a.gen_tokens} tokens, retrieval at every token "
          f"(no policy skipping), {a.rounds} rounds interleaved; median tokens/s.", "",
          "| setting | median tokens/s | min–max | × previous release |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['setting']} | {r['median_tokens_per_second']:.1f} | "
                  f"{r['min']:.1f}–{r['max']:.1f} | {r['ratio_to_previous']:.2f} |")
    (a.out / "generation_speed.md").write_text("\n".join(md) + "\n")
    if not a.quiet:
        print("\n".join(md))


if __name__ == "__main__":
    main()
