"""Refitting the document memory's weights on documents added to it.

At build time the memory's per-order weights, kappa and passage temperature are fitted on a
held-out slice of the training corpus (:mod:`.tuning`): text whose like the back-off already
knows. Documents added later are often text the back-off has never seen, where the memory
should weigh more, and the build-time weights under-use them.

:func:`tune_on_documents` holds out some of the added documents (seeded, whole documents, up
to ``max_tokens`` tokens) and scores them as new text: the language model as it is, the memory
without any passage of the held-out documents (the leakage mask: at test time a text is not in
the memory, and the back-off re-estimated with every added document except them, as
:mod:`~retgen_engine.lm.live_backoff` counts the others at test time). The weights are then
refitted on them by build-time tuning's own fit
(:class:`~.stages.MemoryStage`), with the config as it was and the memory off as candidates,
so the held-out likelihood never gets worse. The fitted values apply to every passage of the
memory, the corpus's included: the held-out text reads both, as new text will.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..checks import ArgumentError, int_arg
from ..memory.documents import added_documents, document_tokens  # noqa: F401  (re-exported)
from ..memory.mixture import MemoryParams
from ..ngram.features import backoff_features
from .stages import MEMORY_TAUS, MemoryStage, one_thread

log = logging.getLogger(__name__)


@dataclass
class _Held:
    """What :class:`MemoryStage` reads: the scored sequence and its positions."""

    seq: np.ndarray
    pos: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        return self.seq[self.pos]


def held_out_lm(lm: Any, held: Sequence[str]) -> Any:
    """``lm`` reading, in place of the back-off it reads with the memory, one re-estimated
    with every added document except ``held`` (:mod:`~retgen_engine.lm.live_backoff`): the
    held-out documents are new text to it, the others are known as at test time."""
    if lm._live is None or not lm.memory.config.update_backoff:
        return lm
    other = copy.copy(lm)
    other.backoff, other._live = lm._live.without(lm.memory, held), None
    return other


def tune_on_documents(lm: Any, params: Any, ids: Optional[Sequence[str]] = None,
                      max_tokens: int = 20000, min_documents: int = 2, seed: int = 0,
                      progress: bool = False, gate: bool = True) -> tuple[Any, dict]:
    """(the memory config refitted on held-out added documents, the report); ``lm`` a
    :class:`~retgen_engine.lm.mixture.RetgenLM` with a memory, ``params`` its retrieval
    parameters without the memory (what the memory is mixed on top of). ``ids``: the documents
    to draw from (default: every document added after the build). At least
    ``min_documents`` must be there: one is held out at a time, the others stay readable.
    ``gate``: fit the memory's learned gate with the weights (False: the weights only)."""
    t0 = time.perf_counter()
    mem = lm.memory
    if mem is None:
        raise ValueError("this model has no document memory to tune")
    int_arg("max_tokens", max_tokens, 1)
    int_arg("min_documents", min_documents, 2)
    pool = added_documents(mem) if ids is None else list(dict.fromkeys(ids))
    unknown = [d for d in pool if not mem.passages_of(d)]
    if unknown:
        raise ArgumentError(f"ids: {unknown[:5]!r} are not documents of the memory")
    if len(pool) < min_documents:
        raise ArgumentError(f"ids: {len(pool)} added documents; tuning on them needs at least "
                            f"{min_documents} (one held out, the others read)")
    rng = np.random.default_rng(seed)
    chosen, toks, tokens = [], [], 0
    for i in rng.permutation(len(pool)):
        if tokens >= max_tokens or len(chosen) >= len(pool) - 1:
            break  # one document at least stays readable
        x = document_tokens(mem, pool[i])[: max_tokens - tokens]
        if len(x) < 2:
            continue
        chosen.append(pool[i])
        toks.append(np.concatenate([[mem.tokenizer.vocab.eos_id], x]))
        tokens += len(x)
    if not chosen:
        raise ArgumentError("ids: no added document has two tokens or more to score")
    seq = np.concatenate(toks).astype(np.int64)
    pos = np.arange(1, len(seq))
    starts = np.cumsum([0] + [len(t) for t in toks[:-1]])
    pos = pos[~np.isin(pos, starts)]  # each document's own <eos> start is not scored
    held = _Held(seq, pos)
    excluded = {int(p) for d in chosen for p in mem.passages_of(d)}
    cfg0 = mem.config
    mp = MemoryParams.from_config(cfg0)
    hl = held_out_lm(lm, chosen)
    with mem.frozen():
        out = hl.score_stream(seq, params, start=1)
        log_prev = out["logp"][pos - 1]
        uq, _, queries = mem.stream_queries(seq, pos, mp.refresh)
        found = mem.find(queries, mp, exclude=[excluded] * len(uq), progress=progress)
        ms = MemoryStage(held, mem, found, set(MEMORY_TAUS) | {cfg0.temperature}, progress,
                         context=backoff_features(hl.backoff, lm.base_ids(seq), pos))
    with one_thread():
        cfg1 = ms.fit(log_prev, cfg0, gate=gate)
    before = float(-ms.logp(log_prev, cfg0).mean())
    after = float(-ms.logp(log_prev, cfg1).mean())
    report = {"documents": len(chosen), "tokens": int(len(pos)), "pool": len(pool),
              "excluded_passages": len(excluded),
              "perplexity": {"without_memory": math.exp(float(-log_prev.mean())),
                             "before": math.exp(before), "after": math.exp(after)},
              "before": {n: getattr(cfg0, n) for n in ("temperature", "weights", "kappa", "gate")},
              "after": {n: getattr(cfg1, n) for n in ("temperature", "weights", "kappa", "gate")},
              "seconds": time.perf_counter() - t0}
    log.info("memory tuned on %d held-out added documents (%d tokens): perplexity %.2f -> %.2f "
             "(without the memory %.2f) in %.1fs", len(chosen), len(pos), math.exp(before),
             math.exp(after), report["perplexity"]["without_memory"], report["seconds"])
    return cfg1, report
