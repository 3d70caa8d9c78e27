"""Decoding settings chosen by measurement: which one makes text whose statistics sit closest
to human text (the criterion of Holtzman et al., "The Curious Case of Neural Text
Degeneration", 2020).

From N lines of WikiText-2 valid (each at least P + M tokens, headings left out) the first P
tokens are the prompt and the next M the human continuation. Every decoding setting of the
grid generates M tokens per prompt (seeded: prompt i draws with seed + i in every setting), and
each continuation, the human one included, is described by:

- ``ppl``: the model's perplexity of the continuation given the prompt, one scorer for all (the
  full model, default retrieval, the document memory on; every token counted, ``<unk>`` of the
  human text included). For settings generated with exactly that distribution the log-probs
  along the generation path are used (checked against the stream scorer's on two prompts:
  within 1e-4 nats, float32 encoder noise, or every setting is rescored); the others are
  rescored with ``lm.score_stream``;
- ``distinct-1/2/3``: distinct n-grams / n-grams, pooled over the continuations;
- ``rep-4``: the share of a continuation's 4-grams that already occurred earlier in it (mean
  over continuations);
- ``in-corpus-4``: the share of the continuations' 4-grams that occur in the training stream;
- ``span``: the mean length of copied spans: each continuation cut greedily, left to right,
  into the longest pieces that occur in the training stream (a suffix array of
  ``engine.stream_ids``; binary search per position), and ``match``, the mean of the longest
  match starting at each position.

Distance to human, per statistic group: |ln((g + e) / (h + e))| (e = 0.01 for shares, 0 for
ppl and span), distinct-1/2/3 averaged into one group; the overall distance is the mean of the
five groups (ppl, distinct, rep-4, in-corpus-4, span): about the log of the typical factor by
which a statistic is off. The setting with the smallest overall distance is the chosen default;
a paired bootstrap over prompts (the same resampled prompts for the human and every setting)
gives each setting's share of wins.

    python benchmarks/generation_quality.py                      # ~40 min on 2 shared cores
    python benchmarks/generation_quality.py --grid refine \
        --merge benchmarks/results/generation_quality.json      # finer grid, ranked with it
    python benchmarks/generation_quality.py --n 4 --m 16 --settings greedy "top-p 0.7"
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from retgen_engine import RetgenEngine

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "wikitext-2" / "wiki.valid.tokens"
RESULTS = HERE / "results"
EPS = 0.01  # added to shares before their log ratio (a share of 0 stays comparable)

#: (name, sampling overrides, retrieval overrides); the scorer is the model's default retrieval
GRID: list[tuple[str, dict, dict]] = [
    ("greedy", {"temperature": 0.0}, {}),
    ("greedy, rep 1.3", {"temperature": 0.0, "repetition_penalty": 1.3}, {}),
    ("pure sampling T=1", {"temperature": 1.0}, {}),
    ("T=0.7", {"temperature": 0.7}, {}),
    ("top-k 40", {"top_k": 40}, {}),
    ("top-p 0.9", {"top_p": 0.9}, {}),
    ("top-p 0.7", {"top_p": 0.7}, {}),
    ("top-p 0.5", {"top_p": 0.5}, {}),
    ("min-p 0.05", {"min_p": 0.05}, {}),
    ("min-p 0.1", {"min_p": 0.1}, {}),
    ("min-p 0.2", {"min_p": 0.2}, {}),
    ("typical 0.9", {"typical_p": 0.9}, {}),
    ("typical 0.5", {"typical_p": 0.5}, {}),
    ("top-p 0.7, rep 1.2", {"top_p": 0.7, "repetition_penalty": 1.2}, {}),
    ("top-p 0.7, no memory", {"top_p": 0.7}, {"memory": False}),
    # longer-span copying with what exists per call: sharper passage weights make the few best
    # passages carry the memory's n-gram distribution, so runs copied from one passage grow
    ("top-p 0.7, memory tau 0.05", {"top_p": 0.7}, {"memory_temperature": 0.05}),
]
#: a second, finer grid around the main grid's closest settings (top-p 0.9 and pure sampling
#: on the WikiText-2 model; min-p 0.05 was already far too narrow there); run with
#: ``--grid refine --merge results/generation_quality.json`` to rank both together
REFINE: list[tuple[str, dict, dict]] = [
    ("top-p 0.95", {"top_p": 0.95}, {}),
    ("top-p 0.8", {"top_p": 0.8}, {}),
    ("min-p 0.01", {"min_p": 0.01}, {}),
    ("min-p 0.02", {"min_p": 0.02}, {}),
    ("typical 0.95", {"typical_p": 0.95}, {}),
    ("T=0.9", {"temperature": 0.9}, {}),
]
GRIDS = {"main": GRID, "refine": REFINE}
#: what a setting leaves at neutral (so a row means exactly what its name says)
NEUTRAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0,
           "repetition_penalty": 1.0}
STATS = ("ppl", "distinct-1", "distinct-2", "distinct-3", "rep-4", "in-corpus-4", "span")

log = logging.getLogger("generation_quality")


# -- the machine -----------------------------------------------------------------------------
def machine() -> dict:
    cpu, flags = "unknown", []
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "f16c")))
    return {"platform": platform.platform(), "cpu": cpu,
            "cores_available": len(os.sched_getaffinity(0)), "simd_flags": simd,
            "load_average_start": list(os.getloadavg())}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in ("retgen", "numpy", "faiss-cpu", "torch", "sentence-transformers", "bm25s"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


# -- prompts ---------------------------------------------------------------------------------
def prompts(path: Path, n: int, p: int, m: int) -> list[tuple[list[str], list[str]]]:
    """N (prompt, human continuation) token lists from lines with at least p + m tokens,
    evenly spread over the file (headings left out)."""
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines()]
    ok = [t for t in lines if len(t) >= p + m and t[0] != "="]
    if len(ok) < n:
        raise SystemExit(f"only {len(ok)} lines of {path} have {p + m} tokens; ask for fewer")
    pick = np.linspace(0, len(ok) - 1, n).round().astype(int)
    return [(ok[i][:p], ok[i][p:p + m]) for i in pick]


# -- the training stream ---------------------------------------------------------------------
def suffix_array(s: np.ndarray) -> np.ndarray:
    """Suffix array of int array ``s`` by prefix doubling (numpy sorts, O(n log^2 n))."""
    n = len(s)
    rank = np.unique(s, return_inverse=True)[1].astype(np.int64)
    k = 1
    while True:
        second = np.full(n, -1, np.int64)
        second[:n - k] = rank[k:]
        key = rank * (n + 1) + (second + 1)
        sa = np.argsort(key, kind="stable")
        ks = key[sa]
        new = np.empty(n, np.int64)
        new[sa] = np.concatenate([[0], np.cumsum(ks[1:] != ks[:-1])])
        rank = new
        if rank[sa[-1]] == n - 1 or k >= n:
            return sa
        k *= 2


class Corpus:
    """The training stream: its 4-grams (hashed) and a suffix array for copied spans."""

    def __init__(self, stream: np.ndarray, vocab_size: int):
        self.s = np.ascontiguousarray(stream, dtype=np.int64)
        self.V = int(max(vocab_size, self.s.max() + 1))
        if float(self.V) ** 4 >= 2.0 ** 63:
            raise SystemExit(f"vocabulary of {self.V} too large for exact 4-gram keys")
        t = time.perf_counter()
        self.grams4 = np.unique(self.hash4(self.s))
        self.sa = suffix_array(self.s)
        self.seconds = time.perf_counter() - t

    def hash4(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64)
        if len(x) < 4:
            return np.zeros(0, np.int64)
        V = self.V
        return ((x[:-3] * V + x[1:-2]) * V + x[2:-1]) * V + x[3:]

    def in_corpus4(self, x: np.ndarray) -> np.ndarray:
        h = self.hash4(x)
        i = np.searchsorted(self.grams4, h)
        return (i < len(self.grams4)) & (self.grams4[np.minimum(i, len(self.grams4) - 1)] == h)

    def _lcp(self, q: np.ndarray, pos: int) -> int:
        seg = self.s[pos:pos + len(q)]
        neq = np.flatnonzero(seg != q[:len(seg)])
        return int(neq[0]) if len(neq) else len(seg)

    def _less(self, pos: int, q: np.ndarray) -> bool:
        """Suffix at ``pos`` < q lexicographically (q as a prefix counts as not less)."""
        seg = self.s[pos:pos + len(q)]
        neq = np.flatnonzero(seg != q[:len(seg)])
        if len(neq):
            return bool(seg[neq[0]] < q[neq[0]])
        return len(seg) < len(q)

    def longest_match(self, q: np.ndarray) -> int:
        """The longest prefix of ``q`` that occurs in the stream."""
        lo, hi = 0, len(self.sa)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._less(int(self.sa[mid]), q):
                lo = mid + 1
            else:
                hi = mid
        best = 0
        for j in (lo - 1, lo):
            if 0 <= j < len(self.sa):
                best = max(best, self._lcp(q, int(self.sa[j])))
        return best

    def matches(self, x: np.ndarray) -> np.ndarray:
        """Per position i, the longest match of x[i:] in the stream."""
        x = np.asarray(x, np.int64)
        return np.array([self.longest_match(x[i:]) for i in range(len(x))], np.int64)


def spans(match: np.ndarray) -> list[int]:
    """Greedy left-to-right cut into copied spans (a token found nowhere is a span of 1)."""
    out, i = [], 0
    while i < len(match):
        step = max(int(match[i]), 1)
        out.append(step)
        i += step
    return out


# -- statistics ------------------------------------------------------------------------------
def ngram_keys(x: np.ndarray, n: int, V: int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    if len(x) < n:
        return np.zeros(0, np.int64)
    h = x[:len(x) - n + 1].copy()
    for j in range(1, n):
        h = h * V + x[j:len(x) - n + 1 + j]
    return h


def describe(conts: list[np.ndarray], logps: list[np.ndarray], corpus: Corpus) -> list[dict]:
    """Per continuation, what the statistics are pooled from."""
    out = []
    for x, lp in zip(conts, logps):
        g4 = ngram_keys(x, 4, corpus.V)
        _, first = np.unique(g4, return_index=True)
        m = corpus.matches(x)
        out.append({"lp_sum": float(np.sum(lp)), "n": len(x),
                    "grams": {n: ngram_keys(x, n, corpus.V) for n in (1, 2, 3)},
                    "rep4": (1 - len(first) / len(g4)) if len(g4) else 0.0,
                    "in4": int(corpus.in_corpus4(x).sum()), "n4": len(g4),
                    "spans": spans(m), "match_sum": int(m.sum())})
    return out


def pooled(d: list[dict], idx=None) -> dict:
    """The statistics of the continuations ``idx`` (all when None)."""
    rows = d if idx is None else [d[i] for i in idx]
    n = sum(r["n"] for r in rows)
    res = {"ppl": float(np.exp(-sum(r["lp_sum"] for r in rows) / n))}
    for k in (1, 2, 3):
        g = np.concatenate([r["grams"][k] for r in rows])
        res[f"distinct-{k}"] = len(np.unique(g)) / max(len(g), 1)
    res["rep-4"] = float(np.mean([r["rep4"] for r in rows]))
    res["in-corpus-4"] = sum(r["in4"] for r in rows) / max(sum(r["n4"] for r in rows), 1)
    sp = [s for r in rows for s in r["spans"]]
    res["span"] = float(np.mean(sp))
    res["match"] = sum(r["match_sum"] for r in rows) / n
    return res


def distances(g: dict, h: dict) -> dict:
    def d(a, b, eps):
        return abs(float(np.log((a + eps) / (b + eps))))

    out = {"ppl": d(g["ppl"], h["ppl"], 0.0),
           "distinct": float(np.mean([d(g[f"distinct-{k}"], h[f"distinct-{k}"], EPS)
                                      for k in (1, 2, 3)])),
           "rep-4": d(g["rep-4"], h["rep-4"], EPS),
           "in-corpus-4": d(g["in-corpus-4"], h["in-corpus-4"], EPS),
           "span": d(g["span"], h["span"], 0.0)}
    out["overall"] = float(np.mean(list(out.values())))
    return out


# -- generation and scoring ------------------------------------------------------------------
def score(eng: RetgenEngine, prompt_ids: list[int], cont: np.ndarray, params) -> np.ndarray:
    seq = np.array(list(prompt_ids) + [int(t) for t in cont], np.int64)
    return eng.lm.score_stream(seq, params, start=len(prompt_ids))["logp"]


def run(args) -> dict:
    eng = RetgenEngine.load(args.model)
    mach = machine()
    mach["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    data = prompts(Path(args.data), args.n, args.prompt_tokens, args.m)
    scorer = eng.retrieval_params()
    ids = [eng.generator.prompt_ids(" ".join(p))[0] for p, _ in data]
    human = [np.array(eng.vocab.ids(h), np.int64) for _, h in data]
    log.info("model %s: %d training tokens, memory %s; %d prompts of %d tokens, %d new tokens",
             args.model, len(eng.stream_ids), eng.parts.memory is not None, len(data),
             args.prompt_tokens, args.m)
    corpus = Corpus(eng.stream_ids, len(eng.vocab))
    log.info("training stream indexed (4-grams, suffix array) in %.1f s", corpus.seconds)

    t = time.perf_counter()
    human_lp = [score(eng, pi, h, scorer) for pi, h in
                tqdm(list(zip(ids, human)), desc="scoring human text", disable=args.quiet)]
    human_desc = describe(human, human_lp, corpus)
    human_stats = pooled(human_desc)
    log.info("human: %s (%.0f s)", {k: round(v, 3) for k, v in human_stats.items()},
             time.perf_counter() - t)

    full = GRIDS[args.grid]
    grid = [g for g in full if not args.settings or g[0] in args.settings]
    if args.settings and len(grid) != len(args.settings):
        raise SystemExit(f"unknown settings; the grid has: {[g[0] for g in full]}")
    rows, check = [], None
    for name, samp, retr in grid:
        kw = {**NEUTRAL, **samp}
        t = time.perf_counter()
        conts, path_lp, texts = [], [], []
        for i, (p, _) in enumerate(tqdm(data, desc=name, disable=args.quiet)):
            r = eng.generate(" ".join(p), max_new_tokens=args.m, seed=args.seed + i,
                             trace=False, **kw, **retr)
            conts.append(np.array([tk.token_id for tk in r.tokens], np.int64))
            path_lp.append(np.array([tk.logprob for tk in r.tokens]))
            texts.append(r.text)
        gen_s = time.perf_counter() - t
        ntok = sum(len(c) for c in conts)
        t = time.perf_counter()
        if retr:  # generated with another distribution than the scorer's: rescore
            logps = [score(eng, pi, c, scorer) for pi, c in zip(ids, conts)]
            how = "rescored"
        else:
            if check is None:  # the path's log-probs are the stream scorer's
                diffs = [float(np.max(np.abs(score(eng, pi, c, scorer) - lp)))
                         for pi, c, lp in list(zip(ids, conts, path_lp))[:2]]
                check = {"setting": name, "max_abs_diff": max(diffs)}
                log.info("path vs stream log-probs: max |diff| %.2e", check["max_abs_diff"])
                if check["max_abs_diff"] > 1e-4:
                    log.warning("path log-probs differ from the stream scorer's; rescoring all")
            if check["max_abs_diff"] > 1e-4:
                logps, how = [score(eng, pi, c, scorer) for pi, c in zip(ids, conts)], "rescored"
            else:
                logps, how = path_lp, "path"
        desc = describe(conts, logps, corpus)
        st = pooled(desc)
        row = {"name": name, "sampling": kw, "retrieval": retr, "stats": st,
               "distance": distances(st, human_stats), "tokens": ntok,
               "tokens_per_s": ntok / gen_s, "generate_s": gen_s,
               "score_s": time.perf_counter() - t, "scored": how,
               "ppl_per_prompt_median": float(statistics.median(
                   float(np.exp(-np.mean(lp))) for lp in logps)),
               "samples": texts[:args.samples], "_desc": desc}
        rows.append(row)
        log.info("%-28s ppl %.1f d1 %.3f d2 %.3f rep4 %.3f in4 %.3f span %.2f -> distance %.3f "
                 "(%.0f tok/s)", name, st["ppl"], st["distinct-1"], st["distinct-2"],
                 st["rep-4"], st["in-corpus-4"], st["span"], row["distance"]["overall"],
                 row["tokens_per_s"])

    # paired bootstrap over prompts: how often each setting is the closest
    rng = np.random.default_rng(args.seed)
    wins = np.zeros(len(rows))
    boot = [[] for _ in rows]
    for _ in range(args.bootstrap):
        idx = rng.integers(0, len(data), len(data))
        h = pooled(human_desc, idx)
        ds = [distances(pooled(r["_desc"], idx), h)["overall"] for r in rows]
        wins[int(np.argmin(ds))] += 1
        for j, v in enumerate(ds):
            boot[j].append(v)
    for j, r in enumerate(rows):
        r["bootstrap_win_share"] = float(wins[j] / max(args.bootstrap, 1))
        r["distance_overall_90ci"] = ([float(np.percentile(boot[j], 5)),
                                       float(np.percentile(boot[j], 95))]
                                      if args.bootstrap else None)
        del r["_desc"]
        r["run"] = "this"
    merged = []
    for path in args.merge or []:  # earlier runs on the same prompts, ranked with this one
        old = json.loads(Path(path).read_text(encoding="utf-8"))
        same = all(old[k] == v for k, v in (("prompts", len(data)), ("seed", args.seed),
                   ("prompt_tokens", args.prompt_tokens), ("new_tokens", args.m)))
        hs = old["human"]["stats"]
        rel = max(abs(hs[k] - human_stats[k]) / max(1e-12, abs(hs[k])) for k in hs)
        log.info("%s: human statistics within %.1e (relative) of this run's", path, rel)
        if not same or rel > 1e-6:
            raise SystemExit(f"{path}: other prompts, seed or human statistics; cannot merge")
        have = {r["name"] for r in rows}
        for r in old["settings"]:
            if r["name"] not in have and r.get("run", "this") == "this":
                rows.append({**r, "run": Path(path).name})
        merged.append(str(path))
    rows.sort(key=lambda r: r["distance"]["overall"])
    mach["load_average_end"] = list(os.getloadavg())
    return {
        "model": str(args.model), "data": str(args.data),
        "prompts": len(data), "prompt_tokens": args.prompt_tokens, "new_tokens": args.m,
        "seed": args.seed, "bootstrap": args.bootstrap, "scorer": {
            "k": scorer.k, "temperature": scorer.temperature, "lam": scorer.lam,
            "memory": None if scorer.memory is None else vars(scorer.memory)},
        "model_generation_config": eng.config.generation.model_dump(),
        "path_check": check, "corpus_index_s": corpus.seconds,
        "distance_definition": "mean over groups (ppl, distinct-1/2/3 averaged, rep-4, "
                               "in-corpus-4, span) of |ln((gen + e) / (human + e))|, "
                               f"e = {EPS} for shares, 0 for ppl and span",
        "human": {"stats": human_stats, "ppl_per_prompt_median": float(statistics.median(
            float(np.exp(-np.mean(lp))) for lp in human_lp)),
            "samples": [eng.tokenizer.detokenize(h) for _, h in data[:args.samples]]},
        "prompt_samples": [eng.tokenizer.detokenize(p) for p, _ in data[:args.samples]],
        "grid": args.grid, "merged": merged,
        "settings": rows, "chosen": rows[0]["name"] if rows else None,
        "machine": mach, "versions": versions(),
    }


def markdown(r: dict) -> str:
    m, h = r["machine"], r["human"]["stats"]
    fmt = lambda s: (f"{s['ppl']:.1f} | {s['distinct-1']:.3f} | {s['distinct-2']:.3f} | "
                     f"{s['distinct-3']:.3f} | {s['rep-4']:.3f} | {s['in-corpus-4']:.3f} | "
                     f"{s['span']:.2f} | {s['match']:.2f}")
    lines = [
        f"# Generation quality: decoding settings against human text ({m['date']})", "",
        f"Model `{r['model']}`; {r['prompts']} prompts of {r['prompt_tokens']} tokens from "
        f"WikiText-2 valid, {r['new_tokens']} new tokens each (seed {r['seed']} + prompt "
        f"index in every setting). Scorer: the full model (k={r['scorer']['k']}, "
        f"tau={r['scorer']['temperature']}, lambda={r['scorer']['lam']}, document memory "
        f"{'on' if r['scorer']['memory'] else 'off'}); generation-path log-probs checked "
        f"against the stream scorer: max |diff| "
        f"{r['path_check']['max_abs_diff']:.1e}." if r["path_check"] else "", "",
        f"Machine: {m['cpu']}, {m['cores_available']} cores available; SIMD "
        f"{' '.join(m['simd_flags'])}; load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end (other jobs share the cores). Versions: "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".", "",
        f"Distance: {r['distance_definition']}. Win share: how often the setting is the "
        f"closest over {r['bootstrap']} paired bootstrap resamples of the prompts"
        + (f" (within the row's own run; rows marked * come from {', '.join(r['merged'])}, "
           "the same prompts, seeds and human statistics)" if r.get("merged") else "") + ".", "",
        f"**Chosen default: {r['chosen']}.**", "",
        "| setting | ppl | distinct-1 | distinct-2 | distinct-3 | rep-4 | in-corpus-4 | span | "
        "match | distance (90% CI) | win share | tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| **human** | {fmt(h)} | 0 | | |",
    ]
    for s in r["settings"]:
        ci = s["distance_overall_90ci"]
        star = " *" if s.get("run", "this") != "this" else ""
        lines.append(f"| {s['name']}{star} | {fmt(s['stats'])} | {s['distance']['overall']:.3f}"
                     + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
                     + f" | {s['bootstrap_win_share']:.2f} | {s['tokens_per_s']:.0f} |")
    lines += ["", "Per-group distances:", "",
              "| setting | ppl | distinct | rep-4 | in-corpus-4 | span |", "|---|---|---|---|---|---|"]
    for s in r["settings"]:
        d = s["distance"]
        lines.append(f"| {s['name']} | {d['ppl']:.3f} | {d['distinct']:.3f} | {d['rep-4']:.3f} "
                     f"| {d['in-corpus-4']:.3f} | {d['span']:.3f} |")
    lines += ["", "## Sample continuations", ""]
    show = r["settings"][:3] + [s for s in r["settings"][3:]
                                if s["name"] in ("greedy", "pure sampling T=1")]
    for i, p in enumerate(r["prompt_samples"]):
        lines += [f"**Prompt {i + 1}:** {p}", "", f"- *human:* {r['human']['samples'][i]}"]
        for s in show:
            if i < len(s["samples"]):
                text = s["samples"][i].strip().replace("\n", " ⏎ ")  # line breaks shown
                lines.append(f"- *{s['name']}:* {text}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="/tmp/retgen-bench-wikitext2", help="a built model")
    ap.add_argument("--data", default=str(DATA), help="WikiText-2 valid (.tokens)")
    ap.add_argument("--n", type=int, default=120, help="prompts")
    ap.add_argument("--m", type=int, default=64, help="tokens generated per prompt")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="tokens per prompt")
    ap.add_argument("--seed", type=int, default=0, help="prompt i samples with seed + i")
    ap.add_argument("--bootstrap", type=int, default=200, help="paired bootstrap resamples")
    ap.add_argument("--samples", type=int, default=3, help="sample continuations kept")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="main", help="which grid")
    ap.add_argument("--settings", nargs="*", help="run only these grid settings (by name)")
    ap.add_argument("--merge", nargs="*", help="earlier results (.json) on the same prompts "
                    "to rank together with this run")
    ap.add_argument("--out", help="output path without extension (.json and .md are written; "
                    "default: results/generation_quality, or _refine for --grid refine)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md of an earlier result")
    args = ap.parse_args()
    if args.render:
        src = Path(args.render)
        src.with_suffix(".md").write_text(markdown(json.loads(src.read_text("utf-8"))), "utf-8")
        return
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader's notes on SIMD builds
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    r = run(args)
    out = Path(args.out or RESULTS / ("generation_quality" if args.grid == "main"
                                      else f"generation_quality_{args.grid}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(r), encoding="utf-8")
    print(f"chosen: {r['chosen']}; wrote {out}.json and .md")


if __name__ == "__main__":
    main()
