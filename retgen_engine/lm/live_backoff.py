"""The back-off re-estimated with the documents added to the memory: the generator learns their
n-grams at once, without a rebuild.

Documents added after the build (:func:`~retgen_engine.memory.documents.added_documents`) are
read by the memory's passages and, with ``MemoryConfig.update_backoff`` (the default), counted
by the back-off as well: the interpolated modified Kneser-Ney model is estimated afresh from the
training stream followed by each added document (an ``<eos>`` before each), the estimate a
rebuild on the corpus plus the documents would make for the back-off (the patterns are not
rebuilt: they need the encoder). Counting is cheap next to encoding (2.2 s for WikiText-2's
2.1M tokens in ``benchmarks/memory_update.py``'s run), so it is redone whenever the memory's documents change,
at the first call after the change, and kept until the next one; with no added document the
build's back-off itself is read, so deleting them all gives back the build's distribution
exactly. Words the training vocabulary lacks are read as ``<unk>``, as everywhere in the
back-off. A call with ``memory=False`` reads the build's back-off.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from ..memory.documents import added_documents, document_tokens
from ..ngram.counts import build_levels
from ..ngram.kneser_ney import KneserNeyLM

log = logging.getLogger(__name__)


class LiveBackoff:
    """The build's back-off ``base`` over training stream ``stream``, with the memory's added
    documents counted (:meth:`current`)."""

    def __init__(self, base: KneserNeyLM, stream: np.ndarray):
        self.base, self.stream = base, stream
        self._lock = threading.Lock()
        self._key: Optional[tuple] = None
        self._kn: KneserNeyLM = base
        self.last_seconds = 0.0  # how long the last re-estimation took

    def current(self, memory: Any) -> KneserNeyLM:
        """The back-off with the added documents of ``memory`` (synced) counted."""
        key = (id(memory.store), memory.revision)
        with self._lock:
            if key != self._key:
                self._kn = self._estimate(memory)
                self._key = key
            return self._kn

    def without(self, memory: Any, exclude: Sequence[str]) -> KneserNeyLM:
        """The back-off with every added document but ``exclude`` counted (not kept): what
        held-out documents are scored with when the memory is tuned on them."""
        return self._estimate(memory, exclude)

    def _estimate(self, memory: Any, exclude: Sequence[str] = ()) -> KneserNeyLM:
        """The back-off with the added documents of ``memory`` except ``exclude`` counted."""
        ex = set(exclude)
        docs = [d for d in added_documents(memory) if d not in ex]
        if not docs:
            return self.base
        t = time.perf_counter()
        V, eos = self.base.V, np.array([memory.tokenizer.vocab.eos_id], np.int64)
        parts = [np.asarray(self.stream, dtype=np.int64)]
        for d in docs:
            x = document_tokens(memory, d)
            parts += [eos, np.where(x >= V, 0, x)]
        seq = np.concatenate(parts)
        kn = KneserNeyLM.from_levels(build_levels(seq, V, self.base.order), self.base.order, V)
        self.last_seconds = time.perf_counter() - t
        log.info("back-off re-estimated with %d added documents (%d tokens) in %.1fs", len(docs),
                 len(seq) - len(self.stream), self.last_seconds)
        return kn
