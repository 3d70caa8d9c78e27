"""Build-time tuning: the mixture's weights fitted on a held-out slice of the user's own corpus.

The slice S is ``fraction`` of the training stream (at least ``min_tokens``, at most
``max_tokens`` tokens: one query each, so the time is bounded). It ends at a document end drawn
with ``seed`` (the stream's end when there is one document) and starts at a document start when
that at most doubles it, so S is whole documents where it can be. S is scored as if it had never
been in the corpus (:class:`~.heldout.HeldOutSlice`): the back-off re-estimated on the rest, the
patterns' counts without S's occurrences, and the memory may not read a passage that overlaps S
or the 8,192 tokens before it (at test time neither a text nor its own past is in the memory;
on a corpus read as one document that also keeps S's own article out, see
:data:`~.heldout.MEMORY_GUARD`).
The first positions of S, whose n-grams cross into the rest, are not scored. On S the stages
(:mod:`.stages`) are fitted one on top of the other by maximum held-out log-likelihood:

1. the context cache: unigram, bigram and trigram weights (as logits against the rest, their
   sum below 0.95) and log kappa by L-BFGS-B from several starts, for each unigram decay of a
   small grid (the window is the config's);
2. pattern retrieval: lambda for each (k, tau) of a grid (the log-likelihood is concave in
   lambda, so a bounded scalar search finds its maximum), then (log tau, lambda) refined by
   L-BFGS-B at the best k;
3. the document memory: the per-order weights and log kappa by L-BFGS-B for each passage
   temperature of a small grid (keys, k and refresh are the config's).

lambda = 0 and memory weights = 0 are always candidates, and are kept when the rounded fit does
not beat them: a stage that does not help is switched off (the report says so), so the tuned
model is never worse on S than its back-off + cache. The config as given (the defaults, unless
the user's config said otherwise) is scored on S the same way and kept if it scores better.
The report holds the held-out perplexity of every stage, before and after.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional, Sequence

import numpy as np

from ..config import CacheConfig, MemoryConfig, RETGENConfig, RetrievalConfig, TuningConfig, check_fields
from ..ngram.cache import ContextCache
from ..ngram.features import backoff_features
from .stages import (DECAYS, K_GRID, MEMORY_TAUS, CacheStage, MemoryStage, PatternStage,
                     memory_found, one_thread, prepare)

log = logging.getLogger(__name__)


def choose_slice(T: int, doc_offsets: Optional[np.ndarray], cfg: TuningConfig, margin: int
                 ) -> tuple[Optional[tuple[int, int]], str]:
    """((start, end) of the held-out slice, or None, why not). It ends at a document end
    drawn with ``cfg.seed`` and starts at a document start when that at most doubles it
    (whole documents: none of their text is left in the rest)."""
    n = min(max(int(round(cfg.fraction * T)), cfg.min_tokens), cfg.max_tokens)
    if 4 * n > T:
        return None, (f"the corpus ({T} tokens) is under 4 x {n} held-out tokens "
                      f"(tuning.min_tokens={cfg.min_tokens}): not tuned")
    n += margin
    offs = np.asarray(doc_offsets if doc_offsets is not None else [0, T], np.int64)
    ends = offs[1:][offs[1:] - n >= margin]
    end = int(np.random.default_rng(cfg.seed).choice(ends)) if len(ends) else T
    first = int(offs[np.searchsorted(offs, end - n, side="right") - 1])
    return (first if end - first <= 2 * n else end - n, end), ""



# -- all stages ------------------------------------------------------------------------------
def _nll(logp: np.ndarray) -> float:
    return float(-np.mean(logp))


def _ppl(nll: float) -> float:
    return float(np.exp(nll))


def tune(lm: Any, config: RETGENConfig, doc_offsets: Optional[np.ndarray] = None,
         doc_names: Optional[Sequence[str]] = None, progress: bool = True,
         **settings: Any) -> tuple[RETGENConfig, dict]:
    """Fit the mixture of ``lm`` (a :class:`~retgen_engine.lm.mixture.RetgenLM` over its
    training stream, assembled from ``config``) on a held-out slice; returns (a copy of
    ``config`` with the tuned values, the report). ``settings`` override ``config.tuning``
    (``fraction``, ``max_tokens``, ``min_tokens``, ``seed``). The fixed-parameter mixture is
    tuned: a learned gate or policy is not read."""
    t0 = time.perf_counter()
    bad = sorted(set(settings) - set(TuningConfig.model_fields))
    if bad:
        raise TypeError(f"tune() got unknown settings {bad}; allowed: "
                        f"{', '.join(TuningConfig.model_fields)}")
    cfg = TuningConfig.model_validate({**config.tuning.model_dump(),
                                       **check_fields(TuningConfig, **settings)})
    ret, kn, mem = lm.retriever, lm.backoff, lm.memory
    T = len(ret.stream)
    span, why = choose_slice(T, doc_offsets, cfg, max(ret.max_length, kn.order) + 1)
    if span is None:
        log.info("tuning skipped: %s", why)
        return config, {"skipped": why, "corpus_tokens": T, "settings": cfg.model_dump()}
    if mem is not None and not mem.passages:
        mem = None
    secs: dict = {}
    t = time.perf_counter()
    context = max(lm.cache.window, ret.query_length, mem.config.query_length if mem else 0,
                  kn.order) + 1
    d = prepare(lm, span[0], span[1], context)
    secs["slice"] = time.perf_counter() - t

    # before: the config as it was; after: each stage tuned on top of the tuned one before
    t = time.perf_counter()
    cs = CacheStage(d, lm.cache.window, set(DECAYS) | {config.cache.decay}, lm.V, progress)
    cache0 = ContextCache.from_config(config.cache)
    with one_thread():
        cache = cs.fit(cache0)
    base0, base = cs.logp(cache0), cs.logp(cache)
    secs["cache"] = time.perf_counter() - t

    t = time.perf_counter()
    r0 = config.retrieval
    ret0 = (r0.k, r0.temperature, r0.lam)
    ps = PatternStage(d, ret, max(max(K_GRID), r0.k), progress) if len(ret.patterns) else None
    if ps is not None:
        with one_thread():
            pat = ps.fit(base, ret0, progress)
        mid0, mid = ps.logp(base0, *ret0), ps.logp(base, *pat)
    else:
        pat, mid0, mid = ret0, base0, base
    secs["patterns"] = time.perf_counter() - t

    t = time.perf_counter()
    m0 = mem.config if mem is not None else config.memory
    excluded: set = set()
    if mem is not None:
        found, excluded = memory_found(d, mem, doc_offsets, doc_names, progress)
        ms = MemoryStage(d, mem, found, set(MEMORY_TAUS) | {m0.temperature}, progress,
                         context=backoff_features(d.held.backoff, d.seq, d.pos))
        with one_thread():
            m1 = ms.fit(mid, m0, gate=cfg.memory_gate)
        full0, full = ms.logp(mid0, m0), ms.logp(mid, m1)
    else:
        m1, full0, full = m0, mid0, mid
    secs["memory"] = time.perf_counter() - t

    # lam = 0 and the memory off were candidates; the rounded values must still beat them
    if _nll(mid) > _nll(base):
        pat, mid = (pat[0], pat[1], 0.0), base
        full = ms.logp(mid, m1) if mem is not None else mid
    if _nll(full) > _nll(mid):
        m1, full = m1.model_copy(update={"weights": [0.0] * m1.order}), mid
    notes: list[str] = []
    kept = "tuned"
    if _nll(full0) < _nll(full):  # the stages are fitted one by one: keep the better whole
        kept, cache, pat, m1, base, mid, full = "config", cache0, ret0, m0, base0, mid0, full0
    retrieval_used = ps is not None and pat[2] > 0
    memory_used = mem is not None and sum(m1.weights) > 0
    if not retrieval_used:
        notes.append("pattern retrieval off (lam = 0): it did not help on the held-out slice")
    if mem is not None and not memory_used:
        notes.append("document memory off (all weights 0): it did not help on the held-out "
                     "slice; documents added later are read only once memory.weights are set")
    if kept == "config":
        notes.append("the config as given scored better on the held-out slice than the "
                     "stage-by-stage fit and is kept")
    new = config.model_copy(deep=True)
    new.cache = CacheConfig.model_validate({**config.cache.model_dump(), **{
        n: getattr(cache, n) for n in ("unigram", "bigram", "trigram", "decay", "kappa")}})
    new.retrieval = RetrievalConfig.model_validate({**config.retrieval.model_dump(), "k": pat[0],
                                                    "temperature": pat[1], "lam": pat[2]})
    new.memory = MemoryConfig.model_validate(m1.model_dump())
    secs["total"] = time.perf_counter() - t0
    report = {
        "tokens": int(len(d.pos)), "corpus_tokens": T,
        "slice": {"start": span[0], "end": span[1], "scored_from": int(d.pos[0] + d.base)},
        "settings": cfg.model_dump(),
        "masked_pattern_candidates_share": ps.masked_share if ps is not None else None,
        "excluded_memory_passages": len(excluded),
        "perplexity": {
            "backoff": _ppl(_nll(d.log_kn)),
            "backoff_cache": {"before": _ppl(_nll(base0)), "after": _ppl(_nll(base))},
            "patterns": {"before": _ppl(_nll(mid0)), "after": _ppl(_nll(mid))},
            "memory": {"before": _ppl(_nll(full0)), "after": _ppl(_nll(full))},
        },
        "chosen": {"cache": new.cache.model_dump(),
                   "retrieval": {"k": pat[0], "temperature": pat[1], "lam": pat[2]},
                   "memory": {n: getattr(new.memory, n) for n in ("temperature", "weights", "kappa",
                                                                    "gate")}},
        "retrieval_used": bool(retrieval_used), "memory_used": bool(memory_used), "kept": kept,
        "notes": notes, "seconds": secs,
    }
    pp = report["perplexity"]
    log.info("tuned on %d held-out tokens in %.1fs: perplexity back-off %.2f, + cache %.2f -> "
             "%.2f, + patterns %.2f -> %.2f, + memory %.2f -> %.2f; chosen %s%s", len(d.pos),
             secs["total"], pp["backoff"], *(pp[s][w] for s in ("backoff_cache", "patterns", "memory")
                                            for w in ("before", "after")),
             report["chosen"], "; " + "; ".join(notes) if notes else "")
    return new, report


def summary(report: Optional[dict]) -> list[str]:
    """The report in a few lines of text (what ``retgen build`` and ``retgen info`` show)."""
    if not report:
        return ["not tuned (built with --no-tune / tune=False, or before build-time tuning)"]
    if "skipped" in report:
        return [f"not tuned: {report['skipped']}"]
    pp, ch = report["perplexity"], report["chosen"]
    stages = "; ".join(f"+ {name} {pp[key]['before']:.2f} -> {pp[key]['after']:.2f}"
                       for name, key in (("cache", "backoff_cache"), ("patterns", "patterns"),
                                         ("memory", "memory")))
    r, c, m = ch["retrieval"], ch["cache"], ch["memory"]
    return [f"tuned on {report['tokens']} held-out tokens in {report['seconds']['total']:.1f}s: "
            f"held-out perplexity back-off {pp['backoff']:.2f}; {stages} (the config as given "
            "-> tuned, each stage on top of the one before)",
            f"  chosen: cache unigram {c['unigram']:g}, bigram {c['bigram']:g}, trigram "
            f"{c['trigram']:g}, decay {c['decay']:g}, kappa {c['kappa']:g}; patterns lam "
            f"{r['lam']:g}, k {r['k']}, tau {r['temperature']:g}; memory weights "
            f"{', '.join(f'{w:g}' for w in m['weights'])}, temperature {m['temperature']:g}, "
            f"{'with' if m.get('gate') else 'no'} learned gate",
            *(f"  {note}" for note in report.get("notes", []))]
