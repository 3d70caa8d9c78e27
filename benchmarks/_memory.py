"""Shared by the benchmarks: the document memory tuned on valid, scored on test.

The memory's parts at every position (F, H, C of :meth:`PassageMemory.stream_counts`) depend on
the keys, k, the refresh interval and the passage temperature; the per-order weights and kappa
only mix them, so they are fitted (Nelder-Mead on valid log-likelihood) once the parts are
computed, on top of a given base distribution (KN-5 + cache, or the full system), by L-BFGS-B
from two starts (Nelder-Mead, used before, left log-kappa at its start value)."""
from __future__ import annotations

import logging
import time

import numpy as np
from scipy.optimize import minimize

from retgen_engine.config import MemoryConfig
from retgen_engine.learn.memory_gate import fit_gate, memory_nll
from retgen_engine.lm.mixture import mix_logprobs
from retgen_engine.memory.mixture import MemoryParams, neighbour_probs

log = logging.getLogger("memory-bench")

KEYS = ("lexical", "dense", "fused")
TAUS = (0.1, 0.2, 0.5)


def fit(log_prev: np.ndarray, F, H, C, order: int) -> tuple[list, list, float]:
    """(weights, kappa, perplexity) maximizing the likelihood of log_prev mixed with the memory."""
    def unpack(x):
        e = np.exp(np.clip(x[:order], -30, 30))
        return 0.95 * e / (1 + e.sum()), np.exp(np.clip(x[order:], -30, 30))  # sum < 0.95

    def nll(x):
        w, kappa = unpack(x)
        p, lam = neighbour_probs(F, H, C, w, kappa)
        return -mix_logprobs(log_prev, p, lam).mean()

    r = None
    for kappa0 in (0.0, 2.0):  # log kappa: kappa 1 and e^2
        x0 = np.concatenate([np.full(order, -2.5), np.full(order, kappa0)])
        ri = minimize(nll, x0, method="L-BFGS-B", options={"maxiter": 500})
        if r is None or ri.fun < r.fun:
            r = ri
    w, kappa = unpack(r.x)
    return [round(float(v), 5) for v in w], [round(float(v), 4) for v in kappa], float(np.exp(r.fun))


class MemoEncoder:
    """The memory's encoder with its query vectors kept by text, so that tuning's dense and
    fused searches on valid encode each query once (same vectors, half the time). Cleared
    before each timed test search, whose seconds count every encoding."""

    def __init__(self, encoder):
        self._enc, self._memo = encoder, {}

    def __getattr__(self, name):
        return getattr(self._enc, name)

    def clear(self) -> None:
        self._memo.clear()

    def encode(self, texts, **kw):
        texts = list(texts)
        miss = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if miss:
            self._memo.update(zip(miss, self._enc.encode(miss, **kw)))
        if not texts:
            return np.zeros((0, self._enc.dim), np.float32)
        return np.stack([self._memo[t] for t in texts])


def memoize_queries(mem) -> None:
    if not isinstance(mem.encoder, MemoEncoder):
        mem.encoder = MemoEncoder(mem.encoder)


def score(log_prev, F, H, C, weights, kappa) -> float:
    p, lam = neighbour_probs(F, H, C, weights, kappa)
    return float(np.exp(-mix_logprobs(log_prev, p, lam).mean()))


def found_for(mem, seq, pos, keys: str, k: int, refresh: int):  # noqa: D401
    """One search per refresh point (the largest k serves every smaller one); seconds taken."""
    t = time.perf_counter()
    _, _, queries = mem.stream_queries(seq, pos, refresh)
    found = mem.find(queries, MemoryParams(k=k, refresh=refresh, keys=keys), progress=True)
    return found, time.perf_counter() - t


GATE_FIELDS = ("gate", "gate_center", "gate_scale")


def gate_config(mem, row: dict) -> MemoryConfig:
    """The memory config of a tuned row (with its learned gate if it has one)."""
    return MemoryConfig.model_validate({**mem.config.model_dump(), **{
        f: row.get(f, []) for f in GATE_FIELDS}, "weights": row["weights"],
        "kappa": row["kappa"], "temperature": row["temperature"]})


def tune(mem, seq, bases: dict[str, np.ndarray], k: int, refresh: int, keys_list=KEYS,
         taus=TAUS, context=None) -> tuple[dict, list]:
    """Best (tau, weights, kappa) per (keys, base) on valid, and every row tried; with
    ``context`` (the back-off features of the positions) also the memory's learned gate fitted
    with the weights of each best row (base ``<base>+gate``)."""
    pos = np.arange(1, len(seq))
    rows, best = [], {}
    for keys in keys_list:
        found, secs = found_for(mem, seq, pos, keys, k, refresh)
        log.info("valid: %s search over %d refresh points in %.0fs", keys, len(found[0]), secs)
        for tau in taus:
            mp = MemoryParams(k=k, refresh=refresh, keys=keys, temperature=tau)
            F, H, C = mem.stream_counts(seq, pos, mp, found)
            for base, lp in bases.items():
                w, kappa, ppl = fit(lp, F, H, C, mem.config.order)
                row = {"keys": keys, "k": k, "refresh": refresh, "temperature": tau,
                       "order": mem.config.order,
                       "base": base, "weights": w, "kappa": kappa, "valid_perplexity": ppl,
                       "search_seconds": secs}
                rows.append(row)
                log.info("valid %s", row)
                if (keys, base) not in best or ppl < best[keys, base]["valid_perplexity"]:
                    best[keys, base] = row
        for base in (list(bases) if context is not None else []):
            r = best[keys, base]
            mp = MemoryParams(k=k, refresh=refresh, keys=keys, temperature=r["temperature"])
            F, H, C, wmax = mem.stream_counts(seq, pos, mp, found, with_wmax=True)
            t = time.perf_counter()
            cfg = fit_gate(bases[base], F, H, C, wmax, context, gate_config(mem, r))
            row = {**r, "base": base + "+gate", "weights": cfg.weights, "kappa": cfg.kappa,
                   **{f: getattr(cfg, f) for f in GATE_FIELDS}, "gate_fit_seconds":
                   time.perf_counter() - t, "valid_perplexity": float(np.exp(memory_nll(
                       bases[base], F, H, C, wmax, context, cfg)))}
            rows.append(row)
            best[keys, base + "+gate"] = row
            log.info("valid %s", row)
    return best, rows


def tuned_config(mem, row: dict):
    """The memory's config with a tuned row's settings (its learned gate, or none)."""
    return mem.config.model_copy(update={"keys": row["keys"], "k": row["k"],
                                         "refresh": row["refresh"],
                                         "temperature": row["temperature"],
                                         "weights": row["weights"], "kappa": row["kappa"],
                                         **{f: row.get(f, []) for f in GATE_FIELDS}})


def test_rows(mem, seq, bases: dict[str, np.ndarray], best: dict, keys_list=KEYS,
              context=None) -> dict:
    """Test perplexity per (keys, base) with the settings tuned on valid (``context``: the
    back-off features of the positions, for the rows with a learned gate, base
    ``<base>+gate``, mixed on top of ``bases[<base>]``)."""
    pos = np.arange(1, len(seq))
    out = {}
    for keys in keys_list:
        if isinstance(mem.encoder, MemoEncoder):
            mem.encoder.clear()  # the test search is timed with all its encoding
        rows = {b: best[keys, b] for b in [*bases, *(f"{b}+gate" for b in bases)]
                if (keys, b) in best}
        k = max(r["k"] for r in rows.values())
        found, secs = found_for(mem, seq, pos, keys, k, next(iter(rows.values()))["refresh"])
        for base, r in rows.items():
            mp = MemoryParams(k=r["k"], refresh=r["refresh"], keys=keys, temperature=r["temperature"])
            F, H, C, wmax = mem.stream_counts(seq, pos, mp, found, with_wmax=True)
            lp = bases[base.split("+")[0]]
            ppl = float(np.exp(memory_nll(lp, F, H, C, wmax, context, gate_config(mem, r))))
            out[keys, base] = {**r, "test_perplexity": ppl,
                               "test_search_seconds": secs, "found": found}
            log.info("test %s %s: %.2f", keys, base, out[keys, base]["test_perplexity"])
    return out


def memory_bytes(mem) -> dict:
    st = mem.stats()
    return {"table_bytes": st["table_bytes"], "store_bytes": st["store_bytes"],
            "passages": st["passages"], "tokens": st["tokens"]}
