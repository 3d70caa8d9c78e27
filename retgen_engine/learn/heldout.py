"""Held-out slices of the training stream, without leakage.

A held-out slice S = stream[start:end] is scored as if it had never been in the corpus: the
back-off is re-estimated on the rest of the stream, each retrieved pattern's counts have S's
occurrences subtracted (patterns that exist only because of S are masked), and the document
memory's passages that overlap S may not be retrieved. A query therefore never retrieves its
own position, nor anything its document's neighbours in S contributed -- a stronger mask
than RETRO's same-document chunk filter. Valid and test are never touched.

:class:`HeldOutSlice` is that machinery; :func:`build_training_data` (the learned parts: the
last ``fraction`` of the stream, sampled queries) and :mod:`.tuning` (the mixture's weights at
build time) both read it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..ngram.features import backoff_features, candidate_features, right_aligned, skip_features
from ..ngram.kneser_ney import KneserNeyLM
from ..ngram.counts import NGramLevel, build_levels, lookup
from ..ngram.patterns import PatternTable

log = logging.getLogger(__name__)

#: the memory may not read passages within this many tokens before a held-out slice (at least
#: the text the slice's context reads): on a corpus read as one document (a file of many
#: articles) they hold the slice's own article, which made the memory look better on the slice
#: than on new text (measured on the sample corpus: benchmarks/results/build_tuning.md)
MEMORY_GUARD = 8192


def slice_counts(patterns: PatternTable, stream: np.ndarray, s_levels: list[NGramLevel],
                 vocab_size: int, ids: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count of pattern->target, count of pattern) [n, k] contributed by the slice."""
    V = vocab_size
    c = np.zeros(ids.shape, dtype=np.int64)
    tot = np.zeros(ids.shape, dtype=np.int64)
    valid = ids >= 0
    pid = np.maximum(ids, 0)
    L = patterns.length[pid].astype(np.int64)
    tgt = np.broadcast_to(np.asarray(targets, dtype=np.int64)[:, None], ids.shape)
    for Lv in np.unique(L[valid]):
        Lv = int(Lv)
        if Lv >= len(s_levels):
            continue
        m = valid & (L == Lv)
        first = patterns.first[pid[m]].astype(np.int64)
        node = stream[first - Lv + 1].astype(np.int64)
        for j in range(1, Lv):
            node = lookup(s_levels[j].keys, node, stream[first - Lv + 1 + j], V)
        nxt = s_levels[Lv]
        child_tot = np.bincount(nxt.keys // V, weights=nxt.counts,
                                minlength=len(s_levels[Lv - 1])).astype(np.int64)
        tot[m] = np.where(node >= 0, child_tot[np.maximum(node, 0)], 0)
        row = lookup(nxt.keys, node, tgt[m], V)
        c[m] = np.where(row >= 0, nxt.counts[np.maximum(row, 0)], 0)
    return c, tot


@dataclass
class HeldOutSlice:
    """stream[start:end] held out: ``backoff`` is re-estimated on the rest of the stream
    (stream[:start] followed by stream[end:]; the few n-grams across that join are the only
    ones the corpus did not have), ``levels`` count the n-grams wholly inside the slice (what
    :func:`slice_counts` subtracts from the patterns)."""

    stream: np.ndarray
    start: int
    end: int
    vocab_size: int
    backoff: KneserNeyLM
    levels: list[NGramLevel]

    @classmethod
    def make(cls, stream: np.ndarray, vocab_size: int, order: int, max_length: int,
             start: int, end: int) -> "HeldOutSlice":
        stream = np.asarray(stream, dtype=np.int64)
        if not 0 <= start < end <= len(stream):
            raise ValueError(f"held-out slice [{start}, {end}) is not inside the stream "
                             f"[0, {len(stream)})")
        rest = np.concatenate([stream[:start], stream[end:]])
        kn = KneserNeyLM.from_levels(build_levels(rest, vocab_size, order), order, vocab_size)
        return cls(stream, int(start), int(end), int(vocab_size), kn,
                   build_levels(stream[start:end], vocab_size, max_length + 1))

    def margin(self, order: int, max_length: int) -> int:
        """Positions at the slice's start whose n-grams cross into the rest: not scored."""
        return max(max_length, order) + 1

    def candidates(self, ret: Any, pos: np.ndarray, k: int, progress: bool = False,
                   vecs: Optional[np.ndarray] = None) -> dict:
        """The pattern search for predicting stream[i], i in ``pos`` (inside the slice), with
        the slice's occurrences subtracted: ``vecs`` (the queries' embeddings), ``dist`` and
        ``ids`` [n, k] (-1 where masked or none), ``valid``, ``ratio`` (count(p, target) /
        count(p), both without the slice) and ``count`` (count(p) without the slice)."""
        stream, patterns = self.stream, ret.patterns
        pos = np.asarray(pos, dtype=np.int64)
        targets = stream[pos]
        if vecs is None:
            texts = ret.stream_texts(stream, pos)
            vecs = ret.encoder.encode(texts, batch_size=256, progress=progress,
                                      desc="encoding queries")
        r = ret.search_vectors(vecs, k, progress=progress)
        D, I = r.D, r.I
        c_full = ret.counts_of(I, targets)
        n_full = np.where(I >= 0, patterns.count[np.maximum(I, 0)], 0)
        c_s, n_s = slice_counts(patterns, stream, self.levels, self.vocab_size, I, targets)
        cnt = n_full - n_s
        valid = (I >= 0) & (cnt > 0)
        ratio = np.where(valid, (c_full - c_s) / np.maximum(cnt, 1), 0.0)
        return {"vecs": vecs, "dist": np.where(valid, D, 0.0), "ids": np.where(valid, I, -1),
                "valid": valid, "ratio": ratio, "count": np.where(valid, cnt, 0),
                "masked_share": float(1 - valid.sum() / max((I >= 0).sum(), 1))}

    def memory_exclusions(self, memory: Any, doc_offsets: np.ndarray,
                          doc_names: Sequence[str], before: int = 0) -> set[int]:
        """Passage ids of the memory's corpus passages that overlap the slice or the ``before``
        tokens ahead of it (the text the slice's own context reads: at test time a text's own
        past is never in the memory). Passages are named as
        :func:`~retgen_engine.memory.passages.corpus_passages` names them: ``<document>#<part>``,
        a repeated document name made ``<name>@<index>``."""
        start = max(0, self.start - int(before))
        from ..memory.passages import passage_spans, record_id

        cfg = memory.config
        L, stride = cfg.passage_length, cfg.stride or cfg.passage_length
        out: set[int] = set()
        seen: set[str] = set()
        offs = np.asarray(doc_offsets, dtype=np.int64)
        for d, name in enumerate(doc_names):
            doc = name if name not in seen else f"{name}@{d}"
            seen.add(doc)
            lo, hi = int(offs[d]), int(offs[d + 1])
            if hi <= start or lo >= self.end:
                continue
            for part, (s, e) in enumerate(passage_spans(hi - lo, L, stride)):
                if lo + s < self.end and lo + e > start:
                    pid = memory.store.int_id(record_id(doc, part))
                    if pid is not None:
                        out.add(int(pid))
        return out


def memory_terms(engine, held: HeldOutSlice, pos: np.ndarray, before: int,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(p_mem of each held-out position's token, lam_mem, passages excluded): the engine's
    memory read as at test time, with its config, except that it may not retrieve a passage
    overlapping the slice or the ``before`` tokens ahead of it (at least the context the
    positions read, and :data:`MEMORY_GUARD`)."""
    from ..memory.mixture import MemoryParams

    mem = engine.lm.memory
    ex = held.memory_exclusions(mem, engine.doc_offsets, engine.doc_names,
                                before=max(int(before), MEMORY_GUARD))
    mp = MemoryParams.from_config(mem.config)
    uq, _, _ = mem.stream_queries(held.stream, pos, mp.refresh)
    p, lam = mem.stream_terms(held.stream, pos, mp, exclude=[ex] * len(uq), progress=progress,
                              context=backoff_features(held.backoff, held.stream, pos))
    return p, lam, len(ex)


def memory_in_mixture(engine, memory: bool) -> bool:
    """Whether the learned parts train with the document memory mixed last, as the model
    computes: asked for, the model has one, and its weights are not all 0."""
    mem = engine.lm.memory
    return bool(memory) and mem is not None and len(mem) > 0 and sum(mem.config.weights) > 0


def memory_pair(data: dict):
    """(p_mem, lam_mem) of :func:`build_training_data`'s result, or None without them."""
    return (data["mem_p"], data["mem_lam"]) if "mem_p" in data else None


def build_training_data(engine, fraction: float = 0.02, max_queries: int = 20000, k: int = 64,
                        seed: int = 0, progress: bool = True, memory: bool = True) -> dict:
    """Cached features of held-out training queries: the last ``fraction`` of the stream held
    out (see :class:`HeldOutSlice`), ``max_queries`` positions of it sampled. With ``memory``
    (and a model whose memory is on, :func:`memory_in_mixture`) the data also hold the memory's
    terms of each query (``mem_p``, ``mem_lam``; :func:`memory_terms`), so that the reranker's
    gate and the policy learn what patterns add on top of the memory."""
    if not 0 < fraction < 0.5:
        raise ValueError(f"fraction={fraction}: the held-out slice must be in (0, 0.5)")
    t0 = time.perf_counter()
    stream = np.asarray(engine.stream_ids, dtype=np.int64)
    T, V, order = len(stream), engine.backoff.V, engine.backoff.order
    lmax = int(engine.patterns.length.max())
    cut = int(T * (1 - fraction))
    lo = cut + max(lmax, order) + 1
    if T - lo < 100:
        raise ValueError(f"the corpus ({T} tokens) is too small to hold out a training slice")
    held = HeldOutSlice.make(stream, V, order, lmax, cut, T)
    kn = held.backoff
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(np.arange(lo, T), size=min(max_queries, T - lo), replace=False))
    targets = stream[pos]
    # the base distribution a query sees: the prefix back-off, mixed with the context cache
    # over the query's own preceding text (past tokens only, as at test time)
    base = max(cut - engine.lm.cache.window - order, 0)
    seg = stream[base:]
    log_base = engine.lm.cache.mix_stream(kn.stream_logprobs(seg, start=1), seg, V, start=1)
    log_base = log_base[pos - base - 1]

    c = held.candidates(engine.retriever, pos, k, progress)
    valid, I_m = c["valid"], c["ids"]
    feats = candidate_features(engine.patterns, stream, I_m, right_aligned(stream, pos, lmax))
    kf = backoff_features(kn, stream, pos)
    extra: dict = {}
    if memory_in_mixture(engine, memory):
        p_mem, lam_mem, n_ex = memory_terms(engine, held, pos, cut - base, progress)
        extra = {"mem_p": p_mem, "mem_lam": lam_mem, "mem_excluded": n_ex}
        log.info("training data: the memory mixed last (%d passages excluded as leakage; "
                 "weight > 0 at %.1f%% of queries)", n_ex, 100 * float(np.mean(lam_mem > 0)))
    log.info("training data: %d queries from the last %.1f%% of the corpus, %.1f%% of retrieved "
             "candidates masked as leakage, %.1fs", len(pos), 100 * fraction,
             100 * c["masked_share"], time.perf_counter() - t0)
    return {**extra, "dist": c["dist"], "valid": valid, "ratio": c["ratio"], "ids": I_m,
            "logfreq": np.log(np.maximum(c["count"], 1)), "div": feats["div"],
            "len": feats["len"], "exact": feats["exact"], "log_base": log_base,
            "x": np.concatenate([c["vecs"], kf], axis=1), "kf": kf,
            "z": skip_features(kf, engine.lm.cache.window, stream, pos),
            "positions": pos, "targets": targets, "cut": cut}
