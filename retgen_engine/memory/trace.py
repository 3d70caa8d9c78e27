"""Traces: which memory passages gave a generated token its probability."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .mixture import order_weights


def contributions(mem: "PassageMemory", history: Sequence[int], step: "StepMemory", token: int,
                  top: int = 3) -> list[dict]:
    """The passages that gave ``token`` its memory probability after ``history``, largest share
    first: record id, document id, offset, snippet and share (of lam_mem * p_mem(token), which
    the shares of all passages sum to)."""
    if step.lam <= 0 or not len(step.pids):
        return []
    history = list(history[-(mem.config.order - 1):]) if mem.config.order > 1 else []
    seq = np.asarray(history + [token], dtype=np.int64)
    F = step.counts.passage_counts(token, step.weights)  # what the step read: no second lookup
    mus = order_weights(step.C, step.H, mem.config.weights, mem.config.kappa)
    share = (mus[:, None] * F / np.maximum(step.H, 1e-300)[:, None]).sum(0)
    itos = mem.tokenizer.vocab.itos
    out = []
    for j in np.argsort(-share)[:top]:
        rec = mem.record_of(int(step.pids[j]))
        if share[j] <= 0 or rec is None:
            continue
        rid, meta, toks = rec
        at = _where(toks, seq, len(history), token, F[:, j])
        snip = mem.tokenizer.detokenize([itos[t] for t in toks[max(0, at - 11):at + 1]])
        out.append({"record": rid, "doc_id": str(meta.get("doc_id", rid)),
                    "offset": int(meta.get("offset", 0)) + at, "snippet": snip.strip(),
                    "share": float(share[j])})
    return out


def _where(toks: np.ndarray, seq: np.ndarray, pos: int, token: int, f: np.ndarray) -> int:
    """The position in the passage where ``token`` follows the longest history matched."""
    n = int(np.flatnonzero(f > 0).max()) + 1 if (f > 0).any() else 1
    hist = seq[pos - n + 1:pos]
    hits = np.flatnonzero(toks == token)
    for t in hits:
        if t >= n - 1 and np.array_equal(toks[t - n + 1:t], hist):
            return int(t)
    return int(hits[0]) if len(hits) else 0
