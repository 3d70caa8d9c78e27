"""The RETGEN language model: retrieval distribution mixed with the Kneser-Ney back-off.

log p(w) = logsumexp(log(1 - lam) + log p_kn(w), log(lam) + log p_ret(w))

Both parts are normalized over the whole vocabulary and p_kn(w) > 0 for every w, so the
mixture is a proper distribution with p(w) > 0 everywhere. Where retrieval finds nothing
(lam is then 0) the back-off answers alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .kneser_ney import KneserNeyLM
from .retrieval import PatternRetriever, Retrieved


@dataclass(frozen=True)
class RetrievalParams:
    """Per-call retrieval parameters (what the policy chooses)."""

    k: int = 32
    temperature: float = 0.05
    lam: float = 0.25
    nprobe: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.k, (int, np.integer)) or self.k <= 0:
            raise ValueError(f"k={self.k!r}: the number of retrieved patterns must be an int >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r}: must be > 0")
        if not 0.0 <= self.lam < 1.0:
            raise ValueError(f"lam={self.lam!r}: the retrieval weight must be in [0, 1)")
        if self.nprobe is not None and self.nprobe < 1:
            raise ValueError(f"nprobe={self.nprobe!r}: must be >= 1")


def mix_logprobs(log_kn: np.ndarray, p_ret: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """Log-space interpolation (as kNN-LM's combine_knn_and_vocab_probs)."""
    lam = np.asarray(lam, dtype=np.float64)
    with np.errstate(divide="ignore"):
        a = np.log1p(-lam) + log_kn
        b = np.where(lam > 0, np.log(lam), -np.inf) + np.log(p_ret)
    return np.logaddexp(a, b)


@dataclass
class StepInfo:
    """What one next-token distribution was made of (for traces)."""

    history: list[int]
    retrieved: Retrieved
    weights: np.ndarray
    lam: float
    params: RetrievalParams
    p_kn: np.ndarray = field(repr=False)
    p_ret: np.ndarray = field(repr=False)


class RetgenLM:
    def __init__(self, backoff: KneserNeyLM, retriever: Optional[PatternRetriever]):
        self.backoff = backoff
        self.retriever = retriever
        self.V = backoff.V

    def next_token_logprobs(self, history: Sequence[int], params: RetrievalParams,
                            query_vector: Optional[np.ndarray] = None) -> tuple[np.ndarray, StepInfo]:
        history = [int(t) for t in history]
        p_kn = self.backoff.distribution(history)
        r = Retrieved(np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64))
        w = np.zeros((1, 0))
        p_ret = np.zeros(self.V)
        lam = 0.0
        if self.retriever is not None and params.lam > 0:
            text = self.retriever.context_text(history)
            r = self.retriever.search_texts([text], params.k, nprobe=params.nprobe)
            if r.valid.any():
                w = self.retriever.weights(r, params.temperature)
                p_ret = self.retriever.dense(r, params.temperature, weights=w)
                lam = params.lam
        logp = mix_logprobs(np.log(p_kn), p_ret, lam)
        return logp, StepInfo(history, r, w, lam, params, p_kn, p_ret)

    def score_stream(self, seq: np.ndarray, params: RetrievalParams, start: int = 1,
                     retrieved: Optional[Retrieved] = None, progress: bool = False) -> dict:
        """Per-position log-probs of seq[i] given seq[:i], i >= start, with their parts."""
        seq = np.asarray(seq, dtype=np.int64)
        log_kn = self.backoff.stream_logprobs(seq, start=start)
        targets = seq[start:]
        if self.retriever is None or params.lam == 0:
            return {"logp": log_kn, "log_kn": log_kn, "p_ret": np.zeros(len(targets)),
                    "retrieved_any": np.zeros(len(targets), bool)}
        if retrieved is None:
            retrieved = self.retriever.search_stream(seq, params.k, nprobe=params.nprobe,
                                                     start=start, progress=progress)
        r = retrieved.top(params.k)
        p_ret = self.retriever.target_probs(r, targets, params.temperature)
        any_ = r.valid.any(axis=1)
        lam = np.where(any_, params.lam, 0.0)
        return {"logp": mix_logprobs(log_kn, p_ret, lam), "log_kn": log_kn, "p_ret": p_ret,
                "retrieved_any": any_}
