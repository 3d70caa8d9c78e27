"""Ablation of RETGEN (the paper's table 6.2, measured): every row in one run, on one model
(built with ``index.keep_vectors`` so that other index specs use the same vectors; without
them the index rows are reported as not measured).

    python benchmarks/ablation.py --corpus wikitext2 --model-dir /tmp/retgen-ablation-wt2
    python benchmarks/ablation.py --corpus ptb --model-dir /tmp/retgen-bench-ptb

With ``results/<corpus>.json`` from lm_benchmark.py, rows with the document memory (its keys,
k, refresh and order as chosen there; weights and learned gate fitted on valid on top of each
row) follow the rows without it (``--no-memory`` leaves them out).

Builds the model if missing, trains the reranker and policy if missing, and writes
results/ablation_<corpus>.{json,md} and results/ablation_<corpus>_{lambda,k}.png.

Query embeddings and search results are kept in ``--cache-dir`` (.npy files), keyed by the
sha256 of what determines them (the query texts and the encoder; the serialized index, the
query vectors, k and nprobe), so a re-run after a change that leaves them alone skips the
hour of exhaustive search on WikiText-2 and still scores every row. Timings are always
measured afresh.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from retgen_engine import RETGENConfig, RetgenEngine
from retgen_engine.text.corpus import read_eval_tokens
from retgen_engine.search.energy import EnergyModel
from retgen_engine.lm.evaluation import prepend_context
from retgen_engine.ngram.features import backoff_features, right_aligned
from retgen_engine.search.index import FaissIndex
from retgen_engine.lm.mixture import RetrievalParams, gated_lam, mix_logprobs
from retgen_engine.search.retrieval import Retrieved
from retgen_engine.learn.training import train

from lm_benchmark import CORPORA, DATA, GRID_K, GRID_LAM, GRID_TAU, PROMPTS, cache_of, machine
import _memory
from learned_memory import with_tuned_memory
from retgen_engine.learn.memory_gate import fit_gate, memory_nll

HERE = Path(__file__).resolve().parent
log = logging.getLogger("ablation")
# the fixed-parameter grid reaches below lm_benchmark's smallest lambda (its best is 0.02)
GRID_LAM_FINE = sorted({0.005, 0.01, *GRID_LAM})
SKIP_BUDGETS = (1.0, 0.85, 0.7, 0.5, 0.3)
FRONTIER_KEYS = ("valid_perplexity", "test_perplexity", "retrieval_rate_test", "tokens_per_second",
                 "generation_encode_rate")


def alt_index(eng: RetgenEngine, spec: str) -> FaissIndex:
    import faiss

    vecs = np.asarray(eng.vectors, dtype=np.float32)
    index = faiss.index_factory(vecs.shape[1], spec, faiss.METRIC_L2)
    rng = np.random.default_rng(eng.config.index.seed)
    sample = vecs[np.sort(rng.choice(len(vecs), min(len(vecs), 200_000), replace=False))]
    index.train(sample)
    for s in range(0, len(vecs), 1 << 16):
        chunk = vecs[s:s + (1 << 16)]
        if "IVF" in spec:
            index.add_with_ids(chunk, np.arange(s, s + len(chunk), dtype=np.int64))
        else:
            index.add(chunk)  # sequential ids = pattern ids
    return FaissIndex(index, spec, eng.index.default_nprobe)


class ResultCache:
    """.npy files under ``root`` named by a sha256 key (nothing else is trusted)."""

    def __init__(self, root: Path | None):
        self.root = root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else np.ascontiguousarray(p).tobytes()
                     if isinstance(p, np.ndarray) else str(p).encode())
            h.update(b"\0")
        return h.hexdigest()[:32]

    def get(self, key: str, names: tuple[str, ...]):
        if self.root is None or not all((self.root / f"{key}.{n}.npy").exists() for n in names):
            return None
        return tuple(np.load(self.root / f"{key}.{n}.npy", allow_pickle=False) for n in names)

    def put(self, key: str, **arrays) -> None:
        if self.root is None:
            return
        for n, arr in arrays.items():
            tmp = self.root / f".{key}.{n}.tmp.npy"
            np.save(tmp, arr, allow_pickle=False)
            tmp.replace(self.root / f"{key}.{n}.npy")


def index_fingerprint(idx: FaissIndex) -> str:
    import faiss

    return hashlib.sha256(faiss.serialize_index(idx.index).tobytes()).hexdigest()


def index_bytes(idx: FaissIndex) -> int:
    return idx.nbytes()


def search_latency(eng: RetgenEngine, idx: FaissIndex, vecs: np.ndarray, n: int = 300) -> float:
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # single queries are served with one thread
    times = []
    for v in vecs[:n]:
        t = time.perf_counter()
        idx.search(v[None], 64)
        times.append(1000 * (time.perf_counter() - t))
    faiss.omp_set_num_threads(threads)
    return statistics.median(times)


def gen_speed(eng: RetgenEngine, n_tokens: int, rounds: int = 3, **kw) -> tuple[float, float]:
    """(median over ``rounds`` of tokens/s over all prompts, share of generated tokens whose
    context was encoded for retrieval)."""
    rates, encoded, made = [], [0], 0
    real = eng.retriever.encode

    def counting(texts, **k):
        encoded[0] += len(texts)
        return real(texts, **k)

    eng.retriever.encode = counting
    try:
        for r in range(rounds):
            t, n = time.perf_counter(), 0
            for i, p in enumerate(PROMPTS):
                n += eng.generate(p, max_new_tokens=n_tokens, seed=i, top_p=0.9, **kw).completion_tokens
            rates.append(n / (time.perf_counter() - t))
            made += n
    finally:
        eng.retriever.encode = real
    return statistics.median(rates), encoded[0] / max(made, 1)


def memory_rows(eng: RetgenEngine, chosen: dict, splits: dict, outs: dict, labels: list,
                gen_tokens: int, variant_kw: dict) -> list[dict]:
    """The rows with the document memory (lm_benchmark.py's keys, k, refresh and order): mixed
    last on top of the full system, the fixed-parameter model and back-off + cache, its
    per-order weights and learned gate fitted on valid on top of each (and once without the
    gate, the gate's ablation); one memory search per split shared by the rows."""
    chosen = {**chosen, **{f: [] for f in _memory.GATE_FIELDS}}  # each row fits its own gate
    with_tuned_memory(eng, chosen)
    mem = eng.memory
    mp = _memory.MemoryParams.from_config(mem.config)
    terms = {}
    for split, s in splits.items():
        pos = np.arange(1, len(s["seq"]))
        found, secs = _memory.found_for(mem, s["seq"], pos, mp.keys, mp.k, mp.refresh)
        F, H, C, wmax = mem.stream_counts(s["seq"], pos, mp, found, with_wmax=True)
        ctx = backoff_features(eng.backoff, eng.lm.base_ids(s["seq"]), pos)
        terms[split] = (F, H, C, wmax, ctx)
        log.info("memory: %s search %.0fs", split, secs)
    rows = []
    for base, label in ((labels[0], f"full system + document memory ({mp.keys} keys, k {mp.k}, "
                                      f"order {mem.config.order}; weights and learned gate fitted "
                                      "on valid)"),
                        (labels[1], "fixed-parameter model + document memory"),
                        ("base", "back-off + context cache + document memory, no patterns")):
        lv, lt = outs[base]
        w, kappa, _ = _memory.fit(lv, *terms["valid"][:3], mem.config.order)
        plain = _memory.gate_config(mem, {**chosen, "weights": w, "kappa": kappa})
        gated = fit_gate(lv, *terms["valid"], plain)
        for cfg, suffix in ((gated, ""), (plain, ", without the memory's learned gate")):
            if suffix and base != labels[0]:
                continue
            row = {"row": label + suffix,
                   "valid_perplexity": float(np.exp(memory_nll(lv, *terms["valid"], cfg))),
                   "test_perplexity": float(np.exp(memory_nll(lt, *terms["test"], cfg))),
                   "memory": {"weights": cfg.weights, "kappa": cfg.kappa, "gate": cfg.gate}}
            if base == labels[0] and not suffix:  # generation with the memory on, as fitted
                e = eng.variant(**variant_kw)
                e.memory.config = cfg
                row["tokens_per_second"], _ = gen_speed(e, gen_tokens, memory=True)
            rows.append(row)
            log.info("%s", row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="wikitext2")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/retgen-ablation-wt2"))
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--gen-tokens", type=int, default=60)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--retrain", action="store_true", help="train the learned parts again")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "retgen-bench",
                    help="where query embeddings and search results are kept between runs")
    ap.add_argument("--no-cache", action="store_true", help="encode and search afresh")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="leave out the rows with the document memory")
    ap.add_argument("--memory-keys", choices=["lexical", "dense", "fused"],
                    help="the memory rows' keys (default: lm_benchmark.py's choice)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("ablation")
    mach = machine()
    pattern, KENLM = CORPORA[a.corpus]
    files = {s: a.data_dir / pattern.format(s) for s in ("train", "valid", "test")}
    if not ((a.model_dir / "CURRENT").exists() or (a.model_dir / "manifest.json").exists()):
        cfg = RETGENConfig()
        cfg.index.keep_vectors = True
        cfg.tokenizer.mode = "words"
        RetgenEngine.build(files["train"], out=a.model_dir, config=cfg, overwrite=True)
    tuned = a.out / f"{a.corpus}.json"  # the cache settings tuned on valid by lm_benchmark.py
    cache = json.loads(tuned.read_text())["tuned_params"] if tuned.exists() else {}

    def load():
        e = RetgenEngine.load(a.model_dir)
        if cache:
            c = cache_of(cache)
            e.set_cache(c.window, c.unigram, c.bigram, c.trigram, c.decay, c.kappa)
        return e

    eng = load()
    if eng.vectors is None:
        log.warning("%s was built without index.keep_vectors: the rows that need another index "
                    "over the same vectors (without PQ, without IVF) are not measured", a.model_dir)
    if a.retrain or eng.policy is None or eng.reranker is None:
        # the held-out queries see the same cache as evaluation; the rows below leave the memory
        # out, so the learned parts are trained on the mixture without it (learned_memory.py
        # measures them with it)
        train(eng, seed=0, memory=False)
        eng = load()
    ret = eng.retriever
    learned, sim_only = ret.energy, EnergyModel()
    variants: dict = {}

    def model(energy, index_name: str = "IVF-PQ") -> RetgenEngine:
        """The engine ranking with ``energy`` over one of the indexes (a variant sharing the
        model's arrays): the learned reranker comes with its lambda gate, the similarity-only
        energy without it."""
        key = (energy is learned, index_name)
        if key not in variants:
            kw = {} if energy is learned else dict(energy=sim_only, gate=False)
            variants[key] = eng.variant(index=indexes[index_name], **kw)
        return variants[key]

    cache_store = ResultCache(None if a.no_cache else a.cache_dir / a.corpus)
    enc_id = json.dumps(eng.manifest.get("encoder"), sort_keys=True)
    splits = {}
    for split in ("valid", "test"):
        ids = read_eval_tokens(files[split], eng.tokenizer)
        seq = prepend_context(ids, eng.vocab)
        pos = np.arange(1, len(seq))
        texts = ret.stream_texts(seq, pos)
        vkey = ResultCache.key("vectors", enc_id, "\n".join(texts))
        hit = cache_store.get(vkey, ("vecs",))
        if hit is None:
            vecs = ret.encode(texts, progress=True)
            cache_store.put(vkey, vecs=vecs)
        else:
            vecs = hit[0]
            log.info("%s query vectors from the cache (%s)", split, vkey)
        splits[split] = {"seq": seq, "vecs": vecs, "empty": np.array([not t for t in texts]),
                         "Q": right_aligned(seq, pos, ret.max_length),
                         "log_kn": eng.backoff.stream_logprobs(seq)}
        splits[split]["log_base"] = eng.lm.cache.mix_stream(splits[split]["log_kn"], seq,
                                                            len(eng.vocab))
    nlist = eng.index.nlist
    indexes = {"IVF-PQ": eng.index}
    if eng.vectors is not None:
        t = time.perf_counter()
        indexes["IVF-Flat"] = alt_index(eng, f"IVF{nlist},Flat")
        indexes["PQ, exhaustive"] = alt_index(eng, f"PQ{eng.config.index.pq_nsplits}np")
        log.info("alternative indexes built in %.0fs", time.perf_counter() - t)
    kmax = max(GRID_K + eng.policy.k_choices)
    retrieved: dict = {}
    for name, idx in indexes.items():
        fp = index_fingerprint(idx)
        for split, s in splits.items():
            t = time.perf_counter()
            skey = ResultCache.key("search", fp, s["vecs"], s["empty"], kmax, idx.default_nprobe)
            hit = cache_store.get(skey, ("D", "I"))
            if hit is None:
                r = model(learned, name).retriever.search_vectors(
                    s["vecs"], kmax, empty=s["empty"], Q=s["Q"], progress=True)
                cache_store.put(skey, D=r.D, I=r.I)
            else:
                r = Retrieved(hit[0], hit[1], s["Q"])
            retrieved[name, split] = r
            log.info("%s %s search %.0fs%s", name, split, time.perf_counter() - t,
                     "" if hit is None else " (results from the cache)")

    def score(index_name, energy, params, split):
        s = splits[split]
        return model(energy, index_name).lm.score_stream(
            s["seq"], params, retrieved=retrieved[index_name, split], query_vectors=s["vecs"])

    def grid(index_name, energy):
        s, r = splits["valid"], retrieved[index_name, "valid"]
        targets, pos = s["seq"][1:], np.arange(1, len(s["seq"]))
        kf = backoff_features(eng.backoff, s["seq"], pos)  # the gate's inputs, once per grid
        rows = []
        lm = model(energy, index_name).lm
        for k, tau in itertools.product(GRID_K, GRID_TAU):
            rk = r.top(k)
            p, shift = lm.retrieval_terms(rk, targets, tau, s["seq"], pos, kf=kf)
            has = rk.valid.any(axis=1)
            for lam in GRID_LAM_FINE:
                lp = mix_logprobs(s["log_base"], p, np.where(has, gated_lam(lam, shift), 0.0))
                rows.append({"k": k, "temperature": tau, "lam": lam,
                             "valid_perplexity": float(np.exp(-lp.mean()))})
        return min(rows, key=lambda x: x["valid_perplexity"]), rows

    def ppl(out):
        return float(np.exp(-out["logp"].mean()))

    nprobe = eng.index.default_nprobe
    policy = RetrievalParams(use_policy=True, nprobe=nprobe)
    best_sim, grid_sim = grid("IVF-PQ", sim_only)
    best_learned, _ = grid("IVF-PQ", learned)

    def fixed(best):
        return RetrievalParams(best["k"], best["temperature"], best["lam"], nprobe)

    row_defs = [
        ("full system (learned reranker with its lambda gate + policy, IVF-PQ)", "IVF-PQ", learned, policy, {}),
        ("without PQ (IVF-Flat)", "IVF-Flat", learned, policy, {}),
        ("without IVF (exhaustive search over the same PQ codes)", "PQ, exhaustive", learned, policy, {}),
        ("without energy rerank (similarity-only softmax, no lambda gate, policy kept)", "IVF-PQ", sim_only, policy, {}),
        ("without learned policy (learned rerank and gate, best fixed k/tau/lambda on valid)", "IVF-PQ",
         learned, fixed(best_learned), dict(policy=False, k=best_learned["k"],
                                            temperature=best_learned["temperature"], lam=best_learned["lam"])),
        ("fixed-parameter model (similarity-only, best fixed k/tau/lambda on valid)", "IVF-PQ",
         sim_only, fixed(best_sim), dict(policy=False, k=best_sim["k"],
                                         temperature=best_sim["temperature"], lam=best_sim["lam"])),
    ]
    rows, outs = [], {}
    for label, iname, energy, params, gen_kw in row_defs:
        gen_kw = {**gen_kw, "memory": False}  # the rows without the memory (its rows follow)
        if iname not in indexes:
            rows.append({"row": label, "valid_perplexity": None, "test_perplexity": None,
                         "not_measured": "the model keeps no vectors (index.keep_vectors)"})
            continue
        v = score(iname, energy, params, "valid")
        te = score(iname, energy, params, "test")
        outs[label] = (v["logp"], te["logp"])
        speed, gen_rate = gen_speed(model(energy, iname), a.gen_tokens, **gen_kw)
        rows.append({"row": label, "valid_perplexity": ppl(v), "test_perplexity": ppl(te),
                     "retrieval_rate_test": float(np.mean(te["lam"] > 0)),
                     "index": iname, "index_bytes": index_bytes(indexes[iname]),
                     "median_ms_per_query": search_latency(eng, indexes[iname], splits["test"]["vecs"]),
                     "tokens_per_second": speed, "generation_encode_rate": gen_rate})
        log.info("%s", rows[-1])
    kn_v = float(np.exp(-splits["valid"]["log_kn"].mean()))
    kn_t = float(np.exp(-splits["test"]["log_kn"].mean()))
    speed_kn, _ = gen_speed(model(sim_only), a.gen_tokens, policy=False, lam=0.0, memory=False)
    rows.append({"row": "back-off only (KN-5, no cache)", "valid_perplexity": kn_v, "test_perplexity": kn_t,
                 "retrieval_rate_test": 0.0, "index": None, "index_bytes": 0,
                 "median_ms_per_query": 0.0, "tokens_per_second": speed_kn})
    nr = RetrievalParams(lam=0.0, nprobe=nprobe)
    base_v, base_t = score("IVF-PQ", learned, nr, "valid"), score("IVF-PQ", learned, nr, "test")
    rows.append({"row": "back-off + context cache, no retrieval", "valid_perplexity": ppl(base_v),
                 "test_perplexity": ppl(base_t), "retrieval_rate_test": 0.0, "index": None,
                 "index_bytes": 0, "median_ms_per_query": 0.0,
                 "tokens_per_second": speed_kn})
    outs["base"] = (base_v["logp"], base_t["logp"])
    if a.memory and tuned.exists() and eng.parts.memory is not None:
        chosen = json.loads(tuned.read_text())["memory"]["chosen"]
        rows += memory_rows(eng, {**chosen, "keys": a.memory_keys or chosen["keys"]}, splits, outs,
                            [row_defs[0][0], row_defs[5][0]], a.gen_tokens,
                            dict(index=indexes["IVF-PQ"]))
    fixed_sim_test = score("IVF-PQ", sim_only, fixed(best_sim), "test")
    d = fixed_sim_test["p_ret"] > 0
    if d.any():
        rows.append({"row": "retrieval only, where defined (fixed model's p_ret on the test tokens "
                            "whose next token it retrieved)", "valid_perplexity": None,
                     "test_perplexity": float(np.exp(-np.log(fixed_sim_test["p_ret"][d]).mean())),
                     "defined_share": float(d.mean()), "index": "IVF-PQ"})
    # the policy's skip stage: the share of tokens that retrieve (chosen per call) against
    # perplexity and generation speed, with the fixed-parameter models measured beside it
    frontier = []
    pol = eng.policy
    if getattr(pol, "skip_dim", 0) and bool(pol.skip_trained):
        for b in SKIP_BUDGETS:
            params = RetrievalParams(use_policy=True, nprobe=nprobe, budget=b)
            v, te = score("IVF-PQ", learned, params, "valid"), score("IVF-PQ", learned, params, "test")
            speed, gen_rate = gen_speed(eng, a.gen_tokens, budget=b, memory=False)
            frontier.append({"budget": b, "valid_perplexity": ppl(v), "test_perplexity": ppl(te),
                             "retrieval_rate_test": float(np.mean(te["lam"] > 0)),
                             "tokens_per_second": speed, "generation_encode_rate": gen_rate})
            log.info("budget %s: %s", b, frontier[-1])
        frontier.append({"budget": "fixed k/tau/lambda, learned rerank (row 5)",
                         **{k: rows[4][k] for k in FRONTIER_KEYS}})
        frontier.append({"budget": "fixed-parameter model (row 6)",
                         **{k: rows[5][k] for k in FRONTIER_KEYS}})
    fixed_row = rows[5]
    full_row = rows[0]
    deltas = {
        "reranker_vs_fixed_test": rows[4]["test_perplexity"] - fixed_row["test_perplexity"],
        "policy_vs_fixed_test": rows[3]["test_perplexity"] - fixed_row["test_perplexity"],
        "full_vs_fixed_test": full_row["test_perplexity"] - fixed_row["test_perplexity"],
        "policy_tokens_per_second_ratio_vs_fixed": rows[3]["tokens_per_second"] / fixed_row["tokens_per_second"],
        "full_tokens_per_second_ratio_vs_fixed": full_row["tokens_per_second"] / fixed_row["tokens_per_second"],
    }
    mach["load_average_end"] = list(__import__("os").getloadavg())
    result = {"corpus": a.corpus, "rows": rows, "deltas": deltas, "kn5_test_perplexity": KENLM,
              "best_fixed_similarity_only": best_sim, "best_fixed_learned_rerank": best_learned,
              "training": eng.manifest.get("training"), "grid_similarity_only": grid_sim,
              "skip_frontier": frontier,
              "cache": dataclasses.asdict(eng.lm.cache),
              "machine": mach}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"ablation_{a.corpus}.json").write_text(json.dumps(result, indent=1, default=float))
    md = [f"# Ablation on {a.corpus} (one model, one run)", "",
          f"Machine: {mach['cpu']}, {mach['cores']} cores, load {mach['load_average'][0]:.1f} at start / "
          f"{mach['load_average_end'][0]:.1f} at end; {mach['date']}. KenLM 5-gram test reference: {KENLM}. "
          f"Context cache (tuned on valid by lm_benchmark.py): "
          f"{', '.join(f'{k} {v}' for k, v in dataclasses.asdict(eng.lm.cache).items())}; "
          "the grids below tune k, tau and lambda on top of it.",
          "", "| row | valid ppl | test ppl | test / KenLM | retrieval rate | index MiB | median ms/query "
              "(search, 1 thread) | tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("not_measured"):
            md.append(f"| {r['row']} | not measured: {r['not_measured']} | | | | | | |")
            continue
        vp = f"{r['valid_perplexity']:.2f}" if r.get("valid_perplexity") else "–"
        md.append(f"| {r['row']} | {vp} | {r['test_perplexity']:.2f} | {r['test_perplexity'] / KENLM:.3f} | "
                  f"{r.get('retrieval_rate_test', r.get('defined_share', 0)):.2f} | "
                  f"{r.get('index_bytes', 0) / 2**20:.1f} | {r.get('median_ms_per_query', 0):.2f} | "
                  f"{r.get('tokens_per_second', 0):.1f} |")
    md += ["", "Deltas on test perplexity against the fixed-parameter model (negative = better): "
           f"learned reranker {deltas['reranker_vs_fixed_test']:+.2f}, learned policy "
           f"{deltas['policy_vs_fixed_test']:+.2f}, both {deltas['full_vs_fixed_test']:+.2f}. "
           f"Generation speed, policy vs fixed: x{deltas['policy_tokens_per_second_ratio_vs_fixed']:.2f}.", ""]
    mem_rows = [r for r in rows if "memory" in r]
    if mem_rows:
        md += ["Memory rows: the document memory mixed last on top of the row named, its per-order "
               "weights, kappa and learned gate fitted on valid on top of that row; the rows "
               "above them are without the memory (generation too). Test perplexity, memory on "
               f"the full system: {mem_rows[0]['test_perplexity']:.2f} with its learned gate, "
               f"{mem_rows[1]['test_perplexity']:.2f} without "
               f"({mem_rows[0]['test_perplexity'] - mem_rows[1]['test_perplexity']:+.2f}); "
               f"against the full system without the memory "
               f"{mem_rows[0]['test_perplexity'] - full_row['test_perplexity']:+.2f}.", ""]
    if frontier:
        md += ["## The policy's skip stage: retrieval budget per call", "",
               "Full system (learned rerank and gate, policy), IVF-PQ; the budget is the share of "
               "tokens the skip stage lets encode and search, decided from back-off and cache "
               f"statistics before any encoding (trained default {float(pol.skip_budget):.2f}).", "",
               "| budget | valid ppl | test ppl | retrieval rate (test) | encoded share (generation) "
               "| tokens/s |", "|---|---|---|---|---|---|"]
        for r in frontier:
            md.append(f"| {r['budget']} | {r['valid_perplexity']:.2f} | {r['test_perplexity']:.2f} | "
                      f"{r['retrieval_rate_test']:.2f} | {r['generation_encode_rate']:.2f} | "
                      f"{r['tokens_per_second']:.1f} |")
        md.append("")
    (a.out / f"ablation_{a.corpus}.md").write_text("\n".join(md))
    print("\n".join(md))
    plot(grid_sim, best_sim, a.out, a.corpus)


def plot(grid_rows, best, out: Path, corpus: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in grid_rows if r["k"] == best["k"] and r["temperature"] == best["temperature"]]
    plt.figure(figsize=(5, 3.5))
    plt.plot([r["lam"] for r in sel], [r["valid_perplexity"] for r in sel], "o-")
    plt.xlabel("lambda (retrieval weight)")
    plt.ylabel("valid perplexity (with the context cache)")
    plt.title(f"{corpus}, k={best['k']}, tau={best['temperature']}")
    plt.tight_layout()
    plt.savefig(out / f"ablation_{corpus}_lambda.png", dpi=120)
    plt.close()
    sel = [r for r in grid_rows if r["lam"] == best["lam"] and r["temperature"] == best["temperature"]]
    plt.figure(figsize=(5, 3.5))
    plt.plot([r["k"] for r in sel], [r["valid_perplexity"] for r in sel], "o-")
    plt.xscale("log", base=2)
    plt.xlabel("k (patterns retrieved)")
    plt.ylabel("valid perplexity (with the context cache)")
    plt.title(f"{corpus}, lambda={best['lam']}, tau={best['temperature']}")
    plt.tight_layout()
    plt.savefig(out / f"ablation_{corpus}_k.png", dpi=120)
    plt.close()


if __name__ == "__main__":
    main()
