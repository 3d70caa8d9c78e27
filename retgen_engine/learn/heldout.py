"""Training queries for the learned parts, without leakage.

The last ``fraction`` of the training stream is the held-out slice S. Every statistic a
training query sees is computed as if S had never been in the corpus: the back-off is
re-estimated on the prefix, and each retrieved pattern's counts have S's occurrences
subtracted (patterns that exist only because of S are masked). A query therefore never
retrieves its own position, nor anything its document's neighbours in S contributed -- a
stronger mask than RETRO's same-document chunk filter. Valid and test are never touched.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..ngram.features import backoff_features, candidate_features, right_aligned, skip_features
from ..ngram.kneser_ney import KneserNeyLM
from ..ngram.counts import NGramLevel, build_levels, lookup
from ..ngram.patterns import PatternTable

log = logging.getLogger(__name__)


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


def build_training_data(engine, fraction: float = 0.02, max_queries: int = 20000, k: int = 64,
                        seed: int = 0, progress: bool = True) -> dict:
    """Cached features of held-out training queries (see module docstring)."""
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
    kn = KneserNeyLM.from_levels(build_levels(stream[:cut], V, order), order, V)
    s_levels = build_levels(stream[cut:], V, lmax + 1)
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(np.arange(lo, T), size=min(max_queries, T - lo), replace=False))
    targets = stream[pos]
    # the base distribution a query sees: the prefix back-off, mixed with the context cache
    # over the query's own preceding text (past tokens only, as at test time)
    base = max(cut - engine.lm.cache.window - order, 0)
    seg = stream[base:]
    log_base = engine.lm.cache.mix_stream(kn.stream_logprobs(seg, start=1), seg, V, start=1)
    log_base = log_base[pos - base - 1]

    ret = engine.retriever
    itos = engine.vocab.itos
    q = ret.query_length
    texts = [ret.tokenizer.context_text([itos[t] for t in stream[i - q:i]]) for i in pos.tolist()]
    vecs = ret.encoder.encode(texts, batch_size=256, progress=progress, desc="encoding queries")
    D, I = ret.index.search(vecs, k)
    c_full = ret.counts_of(I, targets)
    n_full = np.where(I >= 0, engine.patterns.count[np.maximum(I, 0)], 0)
    c_s, n_s = slice_counts(engine.patterns, stream, s_levels, V, I, targets)
    cnt = n_full - n_s
    valid = (I >= 0) & (cnt > 0)
    I_m = np.where(valid, I, -1)
    feats = candidate_features(engine.patterns, stream, I_m, right_aligned(stream, pos, lmax))
    ratio = np.where(valid, (c_full - c_s) / np.maximum(cnt, 1), 0.0)
    kf = backoff_features(kn, stream, pos)
    log.info("training data: %d queries from the last %.1f%% of the corpus, %.1f%% of retrieved "
             "candidates masked as leakage, %.1fs", len(pos), 100 * fraction,
             100 * (1 - valid.sum() / max((I >= 0).sum(), 1)), time.perf_counter() - t0)
    return {"dist": np.where(valid, D, 0.0), "valid": valid, "ratio": ratio, "ids": I_m,
            "logfreq": np.log(np.maximum(cnt, 1)), "div": feats["div"], "len": feats["len"],
            "exact": feats["exact"], "log_base": log_base, "x": np.concatenate([vecs, kf], axis=1),
            "kf": kf,
            "z": skip_features(kf, engine.lm.cache.window, stream, pos),
            "positions": pos, "targets": targets, "cut": cut}
