"""Perplexity under the standard word-level convention, with the back-off as the peer."""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from .mixture import RetgenLM, RetrievalParams
from ..search.retrieval import Retrieved
from ..text.tokenizer import Vocabulary

log = logging.getLogger(__name__)


def prepend_context(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """The evaluated stream starts after a line break: one ``<eos>`` of context, not scored."""
    return np.concatenate([[vocab.eos_id], np.asarray(ids, dtype=np.int64)])


def perplexity_report(lm: RetgenLM, ids: np.ndarray, vocab: Vocabulary, params: RetrievalParams,
                      retrieved: Optional[Retrieved] = None, progress: bool = False,
                      memory_found: Optional[tuple] = None) -> dict:
    """Score every token of ``ids`` (already under the convention) and summarize."""
    seq = prepend_context(ids, vocab)
    t0 = time.perf_counter()
    out = lm.score_stream(seq, params, start=1, retrieved=retrieved, progress=progress,
                          memory_found=memory_found)
    secs = time.perf_counter() - t0
    n = len(out["logp"])
    cov = out["p_ret"] > 0
    defined = out["retrieved_any"] & cov
    rep = {
        "perplexity": float(np.exp(-out["logp"].mean())),
        "tokens": int(n),
        "backoff_perplexity": float(np.exp(-out["log_kn"].mean())),
        "backoff_cache_perplexity": float(np.exp(-out["log_base"].mean())),
        "retrieval_coverage": float(cov.mean()),
        "retrieval_only_perplexity_where_defined": (
            float(np.exp(-np.log(out["p_ret"][defined]).mean())) if defined.any() else None),
        "retrieval_defined_share": float(defined.mean()),
        "retrieval_rate": float(np.mean(out["lam"] > 0)),
        "memory_rate": float(np.mean(out["lam_mem"] > 0)),
        "before_memory_perplexity": float(np.exp(-out.get("logp_before_memory", out["logp"]).mean())),
        "ms_per_token": 1000.0 * secs / max(n, 1),
        "unk_share": float(np.mean(np.asarray(ids) == vocab.unk_id)),
        "params": {"k": params.k, "temperature": params.temperature, "lam": params.lam,
                   "nprobe": params.nprobe, "use_policy": params.use_policy,
                   "memory": None if params.memory is None else vars(params.memory)},
    }
    log.info("perplexity %.2f (back-off %.2f) over %d tokens", rep["perplexity"],
             rep["backoff_perplexity"], n)
    return rep
