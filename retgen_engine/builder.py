"""The build pipeline: corpus -> token stream -> n-gram counts -> Kneser-Ney back-off and
multi-resolution patterns -> context embeddings -> faiss index."""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from .config import RETGENConfig
from .text.corpus import CorpusSource, TokenizedCorpus, tokenize_corpus
from .search.encoder import Encoder
from .search.index import FaissIndex
from .ngram.kneser_ney import KneserNeyLM
from .ngram.counts import build_levels
from .ngram.patterns import PatternTable, extract_patterns

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    corpus: TokenizedCorpus
    backoff: KneserNeyLM
    patterns: PatternTable
    index: FaissIndex
    stats: dict = field(default_factory=dict)
    vectors: Optional[np.ndarray] = None  # float16 [P, dim] when index.keep_vectors
    memory: object = None  # the document memory of the corpus (memory.PassageMemory)


def encode_patterns(patterns: PatternTable, corpus: TokenizedCorpus, encoder: Encoder,
                    batch_size: int, out: np.ndarray, progress: bool = True) -> None:
    """Embed every pattern's context text into ``out`` [P, dim] (chunked, length-bucketed)."""
    itos = corpus.vocab.itos
    tok = corpus.tokenizer
    bar = tqdm(total=len(patterns), desc="encoding contexts", unit="ctx", disable=not progress,
               smoothing=0.05)
    for start, ctxs in patterns.iter_contexts(corpus.ids):
        texts = [tok.context_text([itos[t] for t in c.tolist()]) for c in ctxs]
        if isinstance(encoder, Encoder):  # the bar advances per encoded batch, not per chunk
            out[start:start + len(texts)] = encoder.encode(texts, batch_size=batch_size,
                                                           on_batch=bar.update)
        else:  # a duck-typed encoder: per chunk
            out[start:start + len(texts)] = encoder.encode(texts, batch_size=batch_size)
            bar.update(len(texts))
    bar.close()


def build(source: CorpusSource, config: RETGENConfig, encoder: Encoder,
          progress: bool = True, vocab=None) -> BuiltModel:
    """``vocab``: a given vocabulary (words outside it read as ``<unk>``) instead of the corpus's."""
    stats: dict = {}
    t0 = time.perf_counter()
    mode = config.tokenizer.mode if config.tokenizer.mode != "auto" else source.default_mode()
    corpus = tokenize_corpus(source, mode, min_count=config.tokenizer.min_count, vocab=vocab,
                             progress=progress)
    V = len(corpus.vocab)
    stats["tokenizer_mode"] = mode
    stats["corpus_tokens"] = int(len(corpus.ids))
    stats["documents"] = len(corpus.doc_names)
    stats["build_seconds_tokenize"] = time.perf_counter() - t0

    t = time.perf_counter()
    max_order = max(config.backoff.order, max(config.patterns.lengths) + 1)
    levels = build_levels(corpus.ids, V, max_order, progress=progress)
    backoff = KneserNeyLM.from_levels(levels, config.backoff.order, V)
    patterns = extract_patterns(levels, V, config.patterns.lengths, config.patterns.min_counts)
    del levels
    stats["build_seconds_count"] = time.perf_counter() - t
    stats["num_patterns"] = len(patterns)
    stats["num_continuations"] = int(len(patterns.cont_tokens))

    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retgen-vectors-") as tmp:
        # Vectors live in a memory-mapped scratch file, not in the model: the index keeps codes.
        vecs = np.lib.format.open_memmap(f"{tmp}/vectors.npy", mode="w+", dtype=np.float32,
                                         shape=(len(patterns), encoder.dim))
        encode_patterns(patterns, corpus, encoder, config.encoder.batch_size, vecs, progress)
        stats["build_seconds_encode"] = time.perf_counter() - t
        t = time.perf_counter()
        index = FaissIndex.build(vecs, np.arange(len(patterns), dtype=np.int64), config.index,
                                 progress=progress)
        stats["build_seconds_index"] = time.perf_counter() - t
        kept = np.asarray(vecs, dtype=np.float16) if config.index.keep_vectors else None
    stats["index_spec"] = index.spec
    memory = None
    if config.memory.enabled:
        from .memory.memory import PassageMemory

        t = time.perf_counter()
        memory = PassageMemory.from_corpus(corpus.tokenizer, encoder, config.memory, corpus.ids,
                                           corpus.doc_offsets, corpus.doc_names, progress)
        stats["build_seconds_memory"] = time.perf_counter() - t
        stats["memory_passages"] = memory.passages
    stats["build_seconds_total"] = time.perf_counter() - t0
    log.info("built %d patterns, index %s, in %.1fs", len(patterns), index.spec,
             stats["build_seconds_total"])
    return BuiltModel(corpus, backoff, patterns, index, stats, kept, memory)
