"""The build pipeline: corpus -> token stream -> n-gram counts -> Kneser-Ney back-off and
multi-resolution patterns -> context embeddings -> faiss index -> document memory -> the
mixture's weights tuned on a held-out slice of the corpus (:mod:`retgen_engine.learn.tuning`)."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from .checks import ArgumentError
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
    config: Optional[RETGENConfig] = None  # the config, with the tuned values when tuned


#: the Milvus collection the memory's passages go to when a URI is given and no name
DEFAULT_MEMORY_COLLECTION = "retgen_memory"
_MILVUS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_MILVUS_SCHEMES = ("unix:", "http://", "https://", "tcp://")


def check_build_args(config: RETGENConfig, tune: bool = True, uri=None,
                     collection: Optional[str] = None, token: Optional[str] = None
                     ) -> Optional[dict]:
    """``tune`` and the memory store's arguments checked (an ArgumentError names the one
    refused); returns the Milvus store's keywords (None: the memory's default faiss store)."""
    if not isinstance(tune, (bool, np.bool_)):
        raise ArgumentError(f"tune={tune!r}: must be True or False")
    if uri is None:
        for name, v in (("memory_collection", collection), ("memory_token", token)):
            if v is not None:
                raise ArgumentError(f"{name}={v!r} needs memory_uri (the Milvus store the "
                                    "memory's passages go to)")
        return None
    uri = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
    if not isinstance(uri, str) or not uri.strip() or not (
            uri.startswith(_MILVUS_SCHEMES) or uri.endswith(".db")):
        raise ArgumentError(f"memory_uri={uri!r}: must be a Milvus Lite file ending in .db "
                            "(e.g. ./memory.db) or a server address starting with http://, "
                            "https://, tcp:// or unix:")
    collection = DEFAULT_MEMORY_COLLECTION if collection is None else collection
    if not isinstance(collection, str) or not _MILVUS_NAME.fullmatch(collection):
        raise ArgumentError(f"memory_collection={collection!r}: must start with a letter or "
                            "an underscore and hold only letters, digits and underscores "
                            "(at most 255 characters)")
    if token is not None and (not isinstance(token, str) or not token):
        raise ArgumentError(f"memory_token={token!r}: must be a non-empty string (or None: "
                            "no authentication)")
    if not config.memory.enabled:
        raise ArgumentError(f"memory_uri={uri!r}: the config builds no memory "
                            "(memory.enabled is false); enable it or leave memory_uri out")
    return {"uri": uri, "collection": collection, "token": token}


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
          progress: bool = True, vocab=None, tune: bool = True, memory_uri=None,
          memory_collection: Optional[str] = None, memory_token: Optional[str] = None
          ) -> BuiltModel:
    """``vocab``: a given vocabulary (words outside it read as ``<unk>``) instead of the corpus's.
    ``tune``: fit the mixture's weights on a held-out slice of the corpus (``config.tuning``)
    and return them in ``BuiltModel.config`` (``config`` itself is not changed).
    ``memory_uri``: keep the memory's passages in a Milvus store there (a Milvus Lite file
    ending in .db, or a server address), collection ``memory_collection`` (default
    ``retgen_memory``), authenticated with ``memory_token``."""
    store_kw = check_build_args(config, tune, memory_uri, memory_collection, memory_token)
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
        extra = {}
        if store_kw is not None:
            from .docstore.store import DocumentStore

            extra["store"] = DocumentStore(backend="milvus", dim=encoder.dim, **store_kw)
            stats["memory_store"] = {"backend": "milvus", "uri": store_kw["uri"],
                                     "collection": store_kw["collection"]}
        memory = PassageMemory.from_corpus(corpus.tokenizer, encoder, config.memory, corpus.ids,
                                           corpus.doc_offsets, corpus.doc_names, progress, **extra)
        stats["build_seconds_memory"] = time.perf_counter() - t
        stats["memory_passages"] = memory.passages
    if tune:
        from .assembly import ModelParts, assemble
        from .learn.tuning import tune as tune_mixture

        t = time.perf_counter()
        parts = ModelParts(corpus.tokenizer, encoder, backoff, patterns, index, corpus.ids,
                           corpus.doc_offsets, corpus.doc_names, memory=memory)
        config, stats["tuning"] = tune_mixture(assemble(parts, config).lm, config,
                                               corpus.doc_offsets, corpus.doc_names, progress)
        if memory is not None:
            memory.config = config.memory  # the memory reads (and saves) its own config
        stats["build_seconds_tune"] = time.perf_counter() - t
    stats["build_seconds_total"] = time.perf_counter() - t0
    log.info("built %d patterns, index %s, in %.1fs", len(patterns), index.spec,
             stats["build_seconds_total"])
    return BuiltModel(corpus, backoff, patterns, index, stats, kept, memory, config)
