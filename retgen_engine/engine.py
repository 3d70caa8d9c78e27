"""``RetgenEngine``: the facade over a model's parts (:mod:`retgen_engine.assembly`): build,
load, save, score and generate. It composes; the modelling lives in the subpackages."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from .assembly import MEMORY_DIR, ModelParts, Variant, assemble, load_parts, save_parts
from .docstore.store import DocumentStore
from .memory.memory import PassageMemory
from .builder import BuiltModel, build, check_build_args
from .checks import int_arg, optional, str_list_arg, token_ids_arg
from .config import GenerationConfig, RETGENConfig
from .lm.evaluation import perplexity_report
from .lm.generator import GeneratedToken, GenerationResult
from .lm.mixture import RetrievalParams
from .lm.sampling import SamplingParams
from .persist.modeldir import read_manifest
from .search.encoder import Encoder, load_encoder_from_config
from .search.index import table_bytes
from .text.corpus import CorpusSource, read_eval_tokens
from .text.tokenizer import Vocabulary

if TYPE_CHECKING:
    from .docstore.milvus import MilvusStore

log = logging.getLogger(__name__)

#: the most tokens one generate/stream call makes (the config's bound)
MAX_NEW_TOKENS = GenerationConfig.model_fields["max_new_tokens"].metadata[-1].le

#: the bundled sample corpus (23 WikiText-2 articles, CC BY-SA 3.0; in a source checkout)
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "examples" / "data" / "wikitext2_sample.tokens"


class RetgenEngine:
    def __init__(self, config: RETGENConfig, parts: ModelParts, manifest: Optional[dict] = None,
                 model_dir: Optional[Path] = None, variant: Variant = Variant()):
        self.config = config
        self.parts = parts
        self.manifest = manifest or {}
        self.model_dir = model_dir
        self.variant_of = variant
        # the parts, by name (shared with every variant of this engine)
        self.tokenizer, self.encoder = parts.tokenizer, parts.encoder
        self.vocab = parts.tokenizer.vocab
        self.backoff, self.patterns, self.index = parts.backoff, parts.patterns, parts.index
        self.stream_ids, self.doc_offsets, self.doc_names = parts.stream, parts.doc_offsets, parts.doc_names
        self.vectors = parts.vectors      # float16 context embeddings, only with index.keep_vectors
        self.reranker, self.policy = parts.reranker, parts.policy  # learned parts (or None)
        a = assemble(parts, config, variant)
        self.retriever, self.lm, self.sources, self.generator = a.retriever, a.lm, a.sources, a.generator

    def variant(self, **kw: Any) -> "RetgenEngine":
        """The same model with other parts in force (see :class:`~retgen_engine.assembly.Variant`:
        ``reranker``, ``gate``, ``policy``, ``cache``, ``energy``, ``index``), sharing every
        array; the context cache in force is kept unless ``cache`` is given. The one way
        ablations and benchmarks switch parts."""
        kw.setdefault("cache", self.lm.cache)
        return RetgenEngine(self.config, self.parts, self.manifest, self.model_dir, Variant(**kw))

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
              out: str | os.PathLike | None = None, config: RETGENConfig | None = None,
              encoder: Encoder | None = None, dataset: Any = None, text_column: str = "text",
              split_paragraphs: bool = False, encoding_errors: str = "strict",
              overwrite: bool = False, progress: bool = True,
              vocabulary: Optional[Vocabulary] = None, tune: bool = True,
              memory_uri: str | os.PathLike | None = None,
              memory_collection: Optional[str] = None,
              memory_token: Optional[str] = None) -> "RetgenEngine":
        """Build a model from files (and/or a ``datasets`` dataset); save it to ``out`` if given.
        ``vocabulary``: use this vocabulary instead of the corpus's (e.g. to compare models built
        on parts of a corpus); words outside it read as ``<unk>``.

        ``tune`` (default True): fit the mixture's weights (context cache, pattern retrieval,
        document memory) on a held-out slice of the corpus, as described by
        ``config.tuning`` (:mod:`retgen_engine.learn.tuning`); the tuned values are the
        model's config and the report is ``manifest["build_stats"]["tuning"]``. False keeps
        ``config``'s values. ``memory_uri``: keep the memory's passages in a Milvus store (a
        Milvus Lite file ending in .db, or a server address), collection
        ``memory_collection`` (default ``retgen_memory``), token ``memory_token``."""
        config = config or RETGENConfig()
        paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus or [])
        if out is not None:  # fail before the expensive work, not after
            o = Path(out)
            if o.exists() and (not o.is_dir() or any(o.iterdir())) and not overwrite:
                raise FileExistsError(f"output {str(o)!r} exists and is not empty; choose another "
                                      "path or pass overwrite=True (--overwrite)")
        check_build_args(config, tune, memory_uri, memory_collection, memory_token)  # early
        source = CorpusSource(paths, dataset=dataset, text_column=text_column,
                              split_paragraphs=split_paragraphs, encoding_errors=encoding_errors)
        encoder = encoder or load_encoder_from_config(config.encoder)
        if vocabulary is not None and not isinstance(vocabulary, Vocabulary):
            raise TypeError(f"vocabulary is a {type(vocabulary).__name__}, expected a Vocabulary")
        built: BuiltModel = build(source, config, encoder, progress=progress,
                                  vocab=None if vocabulary is None else Vocabulary(vocabulary.itos),
                                  tune=tune, memory_uri=memory_uri,
                                  memory_collection=memory_collection, memory_token=memory_token)
        config = built.config or config
        c = built.corpus
        parts = ModelParts(c.tokenizer, encoder, built.backoff, built.patterns, built.index,
                           c.ids, c.doc_offsets, c.doc_names, built.vectors, memory=built.memory)
        engine = cls(config, parts, manifest={"build_stats": built.stats})
        if out is not None:
            engine.save(out, overwrite=overwrite)
        return engine

    @classmethod
    def sample(cls, encoder: Encoder | None = None, config: RETGENConfig | None = None,
               out: str | os.PathLike | None = None, overwrite: bool = False,
               progress: bool = False, tune: bool = True) -> "RetgenEngine":
        """A model over the bundled sample corpus, what the examples and ``retgen demo`` build.

        Without ``config``: 2- and 3-token patterns seen at least 3 times (seconds to encode).
        Kept in memory unless ``out`` is given, so nothing is left on disk."""
        if not SAMPLE_CORPUS.is_file():
            raise FileNotFoundError(f"sample corpus {str(SAMPLE_CORPUS)!r} not found (it ships "
                                    "with a source checkout, under examples/data)")
        if config is None:
            config = RETGENConfig()
            config.patterns = type(config.patterns)(lengths=[2, 3], min_counts=[3, 3])
        return cls.build(SAMPLE_CORPUS, out=out, config=config, encoder=encoder,
                         overwrite=overwrite, progress=progress, tune=tune)

    def save(self, out: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model (its learned parts included) to ``out``."""
        extra = {k: self.manifest[k] for k in ("build_stats", "training") if k in self.manifest}
        extra.setdefault("build_stats", {})
        path = save_parts(self.parts, self.config, out, overwrite=overwrite, extra=extra)
        self.model_dir = path
        self.manifest = read_manifest(path)
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike, encoder: Encoder | None = None,
             verify: bool = True, mmap: bool = True) -> "RetgenEngine":
        d = Path(model_dir)
        config, parts, manifest = load_parts(d, encoder, verify=verify, mmap=mmap)
        return cls(config, parts, manifest=manifest, model_dir=d)

    # -- the document memory -----------------------------------------------------------
    @property
    def memory(self) -> PassageMemory:
        """The document memory (:class:`~retgen_engine.memory.memory.PassageMemory`):
        ``add(texts, ids=None, metadatas=None)``, ``delete(ids)``, ``len()``. A model without
        one gets an empty memory here, read from the next call on."""
        if self.parts.memory is None:
            self.use_memory(None)
        return self.parts.memory

    def use_memory(self, store: Optional["DocumentStore | MilvusStore"] = None) -> PassageMemory:
        """Read the memory from ``store`` (a document store shared with an adapter: what the
        framework adds, the generator copies from); None: a new, empty memory."""
        mem = PassageMemory(self.tokenizer, self.encoder, self.config.memory,
                            self.backoff.V, store)
        self.parts.memory = self.lm.memory = mem
        return mem

    def tune_memory(self, ids: Optional[Sequence[str]] = None, max_tokens: int = 20000,
                    seed: int = 0, progress: bool = True,
                    params: Optional[RetrievalParams] = None, gate: bool = True) -> dict:
        """Refit the memory's weights on documents added to it, some held out as new text
        (:func:`~retgen_engine.learn.memory_tuning.tune_on_documents`; ``ids``: the documents
        to draw from, default every one added after the build; ``params``: the retrieval
        parameters the memory is mixed on top of, default the model's; ``gate``: fit the
        memory's learned gate too). In force at once;
        saved with the memory by :meth:`save_memory`. Returns the report."""
        from .learn.memory_tuning import tune_on_documents

        base = (self.retrieval_params(memory=False) if params is None
                else dataclasses.replace(params, memory=None))
        cfg, report = tune_on_documents(self.lm, base, ids, max_tokens=max_tokens, seed=seed,
                                        progress=progress, gate=gate)
        self.memory.config = cfg
        self.config.memory = cfg
        return report

    def save_memory(self) -> Path:
        """Commit the memory into the model directory (``<model>/memory``)."""
        if self.model_dir is None:
            raise ValueError("this engine has no model directory; use save(out) first")
        return self.memory.save(Path(self.model_dir) / MEMORY_DIR)

    # -- parameters --------------------------------------------------------------------
    def retrieval_params(self, k: Optional[int] = None, temperature: Optional[float] = None,
                         lam: Optional[float] = None, nprobe: Optional[int] = None,
                         policy: Optional[bool] = None, budget: Optional[float] = None,
                         memory: Optional[bool] = None, memory_k: Optional[int] = None,
                         memory_refresh: Optional[int] = None, memory_keys: Optional[str] = None,
                         memory_temperature: Optional[float] = None) -> RetrievalParams:
        """Per-call retrieval parameters (see :meth:`RetgenLM.params
        <retgen_engine.lm.mixture.RetgenLM.params>`); ``memory=False`` leaves the document
        memory out, ``memory_k``/``memory_refresh``/``memory_keys``/``memory_temperature``
        override its config for this call."""
        return self.lm.params(k=k, temperature=temperature, lam=lam, nprobe=nprobe,
                              policy=policy, budget=budget, memory=memory, memory_k=memory_k,
                              memory_refresh=memory_refresh, memory_keys=memory_keys,
                              memory_temperature=memory_temperature)

    def sampling_params(self, temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                        allow_unk=None, min_p=None, typical_p=None) -> SamplingParams:
        """Per-call sampling settings (see :mod:`retgen_engine.lm.sampling`); None keeps the
        model's config (``config.generation``)."""
        return SamplingParams.from_config(self.config.generation, temperature=temperature,
                                          top_k=top_k, top_p=top_p,
                                          repetition_penalty=repetition_penalty,
                                          allow_unk=allow_unk, min_p=min_p, typical_p=typical_p)

    def set_cache(self, window: Optional[int] = None, unigram: Optional[float] = None,
                  bigram: Optional[float] = None, trigram: Optional[float] = None,
                  decay: Optional[float] = None, kappa: Optional[float] = None) -> None:
        """Change the context cache for this engine instance (not the saved model); None
        keeps a setting as it is."""
        given = dict(window=window, unigram=unigram, bigram=bigram, trigram=trigram,
                     decay=decay, kappa=kappa)
        self.lm.cache = dataclasses.replace(self.lm.cache,
                                            **{k: v for k, v in given.items() if v is not None})

    # -- language model ----------------------------------------------------------------
    def next_token_logprobs(self, context: str | Sequence[int], **retrieval: Any) -> np.ndarray:
        """log p(. | context) over the whole vocabulary (natural log; exp sums to 1)."""
        if self.parts.memory is not None:
            self.parts.memory.sync()  # before reading the context: it may grow the vocabulary
        ids = (self.generator.prompt_ids(context)[0] if isinstance(context, str) else
               token_ids_arg("context", context, len(self.vocab), allow_empty=True).tolist())
        logp, _ = self.lm.next_token_logprobs(ids, self.retrieval_params(**retrieval))
        return logp

    def perplexity(self, data: str | os.PathLike | np.ndarray, progress: bool = False,
                   **retrieval: Any) -> dict:
        """Perplexity report for an evaluation file (standard word-level convention in
        ``words`` mode) or an array of token ids."""
        if self.parts.memory is not None:
            self.parts.memory.sync()
        if isinstance(data, (str, os.PathLike)):
            ids = read_eval_tokens(data, self.tokenizer)
        else:
            ids = token_ids_arg("data", data, len(self.vocab))
        return perplexity_report(self.lm, ids, self.vocab, self.retrieval_params(**retrieval),
                                 progress=progress)

    # -- generation --------------------------------------------------------------------
    def _gen_kwargs(self, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop,
                    seed, trace, retrieval, min_p=None, typical_p=None) -> dict:
        g = self.config.generation
        n = g.max_new_tokens if max_new_tokens is None else int_arg("max_new_tokens", max_new_tokens, 0,
                                                                    MAX_NEW_TOKENS)
        return dict(max_new_tokens=n,
                    sampling=self.sampling_params(temperature, top_k, top_p, repetition_penalty,
                                                  min_p=min_p, typical_p=typical_p),
                    retrieval=self.retrieval_params(**retrieval),
                    stop=optional(str_list_arg, "stop", stop, allow_one=True),
                    seed=optional(int_arg, "seed", seed, 0), trace=bool(trace))

    def stream(self, prompt: str, max_new_tokens: Optional[int] = None,
               temperature: Optional[float] = None, top_k: Optional[int] = None,
               top_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
               stop: str | Sequence[str] | None = None, seed: Optional[int] = None,
               trace: bool = True, min_p: Optional[float] = None,
               typical_p: Optional[float] = None, **retrieval: Any) -> Iterator[GeneratedToken]:
        """Generate token by token (see :meth:`generate`)."""
        kw = self._gen_kwargs(max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                              stop, seed, trace, retrieval, min_p, typical_p)
        return self.generator.stream(prompt, **kw)

    def generate(self, prompt: str, max_new_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
                 stop: str | Sequence[str] | None = None, seed: Optional[int] = None,
                 trace: bool = True, min_p: Optional[float] = None,
                 typical_p: Optional[float] = None, **retrieval: Any) -> GenerationResult:
        """Continue ``prompt``. Sampling (None: ``config.generation``; see
        :mod:`retgen_engine.lm.sampling`): ``temperature`` (0: greedy), ``top_k``, ``top_p``,
        ``typical_p``, ``min_p``, ``repetition_penalty``; ``seed`` makes it repeatable.
        ``retrieval``: per-call retrieval and memory settings (:meth:`retrieval_params`)."""
        kw = self._gen_kwargs(max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                              stop, seed, trace, retrieval, min_p, typical_p)
        return self.generator.generate(prompt, **kw)

    # -- description -------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "vocab_size": len(self.vocab),
            "training_vocab_size": self.backoff.V,
            "memory": self.parts.memory.stats() if self.parts.memory is not None else None,
            "tokenizer_mode": self.tokenizer.mode,
            "corpus_tokens": int(len(self.stream_ids)),
            "documents": len(self.doc_names),
            "num_patterns": len(self.patterns),
            "pattern_lengths": sorted(set(int(x) for x in np.unique(self.patterns.length))),
            "backoff_order": self.backoff.order,
            "index_spec": self.index.spec,
            "index_ntotal": self.index.ntotal,
            "index_nlist": self.index.nlist,
            # RAM: the index (file size when memory-mapped) plus faiss' precomputed IVF-PQ
            # table (config.index.precomputed_table=False frees it: same results, slower)
            "index_bytes": self.index.nbytes(),
            "index_table_bytes": table_bytes(self.index.index),
            "flat_float32_bytes": self.index.ntotal * self.index.dim * 4,
            "encoder": self.encoder.info(),
            "config": self.config.model_dump(),
            "build_stats": self.manifest.get("build_stats", {}),
            "learned": sorted(self.manifest.get("learned", {})),
            "training": self.manifest.get("training"),
            "versions": self.manifest.get("versions", {}),
        }
