"""``RetgenEngine``: the facade that composes tokenizer, encoder, back-off, patterns, index,
retriever and generator. It holds no modelling logic of its own."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .builder import BuiltModel, build
from .ngram.cache import ContextCache
from .config import RETGENConfig
from .text.corpus import CorpusSource, read_eval_tokens
from .search.encoder import Encoder, load_encoder
from .search.energy import EnergyModel
from .lm.evaluation import perplexity_report
from .lm.generator import GeneratedToken, GenerationResult, Generator, SourceText
from .search.index import FaissIndex, table_bytes
from .ngram.kneser_ney import KneserNeyLM
from .lm.mixture import RetgenLM, RetrievalParams
from .ngram.patterns import PatternTable
from .search.retrieval import PatternRetriever
from .lm.sampling import SamplingParams
from .persist.modeldir import ModelFormatError, ModelWriter, load_arrays, read_manifest, verify_files
from .text.tokenizer import Tokenizer, Vocabulary

log = logging.getLogger(__name__)

INDEX_FILE = "patterns.faiss"
#: the bundled sample corpus (23 WikiText-2 articles, CC BY-SA 3.0; in a source checkout)
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "examples" / "data" / "wikitext2_sample.tokens"


class RetgenEngine:
    def __init__(self, config: RETGENConfig, tokenizer: Tokenizer, encoder: Encoder,
                 backoff: KneserNeyLM, patterns: PatternTable, index: FaissIndex,
                 stream: np.ndarray, doc_offsets: np.ndarray, doc_names: list[str],
                 manifest: Optional[dict] = None, model_dir: Optional[Path] = None,
                 reranker=None, policy=None, vectors: Optional[np.ndarray] = None):
        self.config = config
        self.vectors = vectors  # float16 context embeddings, only with index.keep_vectors
        self.tokenizer = tokenizer
        self.vocab: Vocabulary = tokenizer.vocab
        self.encoder = encoder
        self.backoff = backoff
        self.patterns = patterns
        self.index = index
        self.stream_ids = stream
        self.doc_offsets = doc_offsets
        self.doc_names = doc_names
        self.manifest = manifest or {}
        self.model_dir = model_dir
        r = config.retrieval
        qlen = r.query_length or max(config.patterns.lengths)
        self.reranker = reranker  # learned EnergyReranker (or None: fixed energy weights)
        self.policy = policy      # learned RetrievalPolicy (or None)
        energy = reranker.energy_model() if reranker is not None else EnergyModel.from_config(config.energy)
        self.retriever = PatternRetriever(patterns, index, encoder, tokenizer, stream,
                                          len(self.vocab), qlen, energy)
        c = config.cache
        gate = reranker if reranker is not None and reranker.gate else None
        self.lm = RetgenLM(backoff, self.retriever, policy,
                           ContextCache(c.window, c.unigram, c.bigram, c.trigram, c.decay,
                                        c.kappa), gate=gate)
        self.sources = SourceText(stream, doc_offsets, doc_names, tokenizer,
                                  config.patterns.snippet_tokens)
        self.generator = Generator(self.lm, tokenizer, self.sources, config.generation.trace_top)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
              out: str | os.PathLike | None = None, config: RETGENConfig | None = None,
              encoder: Encoder | None = None, dataset: Any = None, text_column: str = "text",
              split_paragraphs: bool = False, encoding_errors: str = "strict",
              overwrite: bool = False, progress: bool = True) -> "RetgenEngine":
        """Build a model from files (and/or a ``datasets`` dataset); save it to ``out`` if given."""
        config = config or RETGENConfig()
        paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus or [])
        if out is not None:  # fail before the expensive work, not after
            o = Path(out)
            if o.exists() and (not o.is_dir() or any(o.iterdir())) and not overwrite:
                raise FileExistsError(f"output {str(o)!r} exists and is not empty; choose another "
                                      "path or pass overwrite=True (--overwrite)")
        source = CorpusSource(paths, dataset=dataset, text_column=text_column,
                              split_paragraphs=split_paragraphs, encoding_errors=encoding_errors)
        encoder = encoder or load_encoder(config.encoder.name, config.encoder.dtype)
        built: BuiltModel = build(source, config, encoder, progress=progress)
        c = built.corpus
        engine = cls(config, c.tokenizer, encoder, built.backoff, built.patterns, built.index,
                     c.ids, c.doc_offsets, c.doc_names, manifest={"build_stats": built.stats},
                     vectors=built.vectors)
        if out is not None:
            engine.save(out, overwrite=overwrite)
        return engine

    @classmethod
    def sample(cls, encoder: Encoder | None = None, config: RETGENConfig | None = None,
               out: str | os.PathLike | None = None, overwrite: bool = False,
               progress: bool = False) -> "RetgenEngine":
        """A model over the bundled sample corpus, what the examples and ``retgen demo`` build.

        Without ``config``: 2- and 3-token patterns seen at least 3 times (seconds to encode).
        Kept in memory unless ``out`` is given, so nothing is left on disk."""
        if not SAMPLE_CORPUS.is_file():
            raise FileNotFoundError(f"sample corpus {str(SAMPLE_CORPUS)!r} not found (it ships "
                                    "with a source checkout, under examples/data)")
        if config is None:
            config = RETGENConfig()
            config.patterns.lengths, config.patterns.min_counts = [2, 3], [3, 3]
        return cls.build(SAMPLE_CORPUS, out=out, config=config, encoder=encoder,
                         overwrite=overwrite, progress=progress)

    def save(self, out: str | os.PathLike, overwrite: bool = False) -> Path:
        with ModelWriter(out, overwrite=overwrite) as w:
            w.add_array("corpus_ids", self.stream_ids)
            w.add_array("doc_offsets", self.doc_offsets)
            for name, arr in self.backoff.arrays.items():
                w.add_array(name, arr)
            for name, arr in self.patterns.arrays().items():
                w.add_array(name, arr)
            if self.vectors is not None:
                w.add_array("vectors", self.vectors)
            w.add_json("docs.json", self.doc_names)
            w.add_text("vocab.json", self.vocab.to_json())
            w.add_text("config.json", self.config.to_json())
            self.index.save(w.path(INDEX_FILE))
            path = w.commit({
                "encoder": self.encoder.info(),
                "tokenizer": {"mode": self.tokenizer.mode, "vocab_size": len(self.vocab)},
                "backoff": {"kind": "interpolated-modified-kneser-ney", "order": self.backoff.order},
                "index": {"file": INDEX_FILE, "spec": self.index.spec, "metric": "L2",
                          "ntotal": self.index.ntotal, "dim": self.index.dim,
                          "nlist": self.index.nlist},
                "patterns": {"count": len(self.patterns),
                             "lengths": sorted(set(int(x) for x in np.unique(self.patterns.length)))},
                "build_stats": self.manifest.get("build_stats", {}),
            })
        self.model_dir = path
        self.manifest = read_manifest(path)
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike, encoder: Encoder | None = None,
             verify: bool = True, mmap: bool = True) -> "RetgenEngine":
        d = Path(model_dir)
        m = read_manifest(d)
        if verify:
            verify_files(d, m)
        try:
            config = RETGENConfig.from_json((d / "config.json").read_text(encoding="utf-8"))
            vocab = Vocabulary.from_json((d / "vocab.json").read_text(encoding="utf-8"))
            import json

            doc_names = json.loads((d / "docs.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"model {str(d)!r}: {e}") from None
        enc_info = m["encoder"]
        if encoder is None:
            encoder = load_encoder(config.encoder.name, config.encoder.dtype)
        if encoder.dim != enc_info["dim"] or encoder.name != enc_info["name"]:
            raise ModelFormatError(
                f"model {str(d)!r} was built with encoder {enc_info['name']!r} (dim "
                f"{enc_info['dim']}); the encoder given is {encoder.name!r} (dim {encoder.dim})")
        arrays = load_arrays(d, m, mmap=mmap)
        backoff = KneserNeyLM(m["backoff"]["order"], len(vocab),
                              {k: v for k, v in arrays.items() if k.startswith("kn_")})
        patterns = PatternTable.from_arrays(arrays)
        index = FaissIndex.load(d / m["index"]["file"], m["index"]["spec"],
                                default_nprobe=min(config.index.nprobe, m["index"]["nlist"] or
                                                   config.index.nprobe), mmap=mmap,
                                precomputed_table=config.index.precomputed_table,
                                ip_scan=config.index.ip_scan)
        if index.dim != enc_info["dim"] or index.ntotal != m["index"]["ntotal"]:
            raise ModelFormatError(f"index file of {str(d)!r} does not match its manifest")
        tok = Tokenizer(m["tokenizer"]["mode"], vocab)
        learned = m.get("learned", {})
        reranker = policy = None
        if "reranker" in learned:
            from .learn.reranker import EnergyReranker

            reranker = EnergyReranker.load(d / learned["reranker"])
        if "policy" in learned:
            from .learn.policy import RetrievalPolicy

            policy = RetrievalPolicy.load(d / learned["policy"])
        return cls(config, tok, encoder, backoff, patterns, index, arrays["corpus_ids"],
                   arrays["doc_offsets"], doc_names, manifest=m, model_dir=d,
                   reranker=reranker, policy=policy, vectors=arrays.get("vectors"))

    # -- parameters --------------------------------------------------------------------
    def retrieval_params(self, k: Optional[int] = None, temperature: Optional[float] = None,
                         lam: Optional[float] = None, nprobe: Optional[int] = None,
                         policy: Optional[bool] = None, budget: Optional[float] = None
                         ) -> RetrievalParams:
        """Per-call parameters. With a trained policy and no explicit k/temperature/lam, the
        policy chooses them per query (``policy=False`` turns it off) and its skip stage lets
        only a ``budget`` share of the tokens encode and search (None: the trained default;
        1: all); with a trained reranker the defaults are the temperature and lam it was
        fitted with."""
        r = self.config.retrieval
        nprobe = nprobe if nprobe is not None else self.index.default_nprobe
        if self.index.nlist and not 1 <= nprobe <= self.index.nlist:
            raise ValueError(f"nprobe={nprobe} is outside [1, nlist={self.index.nlist}]")
        if policy and self.policy is None:
            raise ValueError("policy=True but this model has no trained policy (run `retgen train`)")
        explicit = k is not None or temperature is not None or lam is not None
        use_policy = self.policy is not None and (policy if policy is not None else not explicit)
        if budget is not None and not (use_policy and self.policy.skip_ready):
            raise ValueError(f"budget={budget} needs the learned policy with a trained skip stage "
                             "(run `retgen train`; do not pass k, temperature or lam, or "
                             "policy=False)")
        d_tau = self.reranker.tau if self.reranker is not None else r.temperature
        d_lam = self.reranker.lam if self.reranker is not None else r.lam
        return RetrievalParams(k=r.k if k is None else k,
                               temperature=d_tau if temperature is None else temperature,
                               lam=d_lam if lam is None else lam,
                               nprobe=nprobe if self.index.nlist else None, use_policy=use_policy,
                               budget=budget)

    def sampling_params(self, temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                        allow_unk=None) -> SamplingParams:
        g = self.config.generation
        pick = lambda v, d: d if v is None else v  # noqa: E731
        return SamplingParams(pick(temperature, g.temperature), pick(top_k, g.top_k),
                              pick(top_p, g.top_p), pick(repetition_penalty, g.repetition_penalty),
                              pick(allow_unk, g.allow_unk))

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
        ids = self.generator.prompt_ids(context)[0] if isinstance(context, str) else list(context)
        logp, _ = self.lm.next_token_logprobs(ids, self.retrieval_params(**retrieval))
        return logp

    def perplexity(self, data: str | os.PathLike | np.ndarray, progress: bool = False,
                   **retrieval: Any) -> dict:
        """Perplexity report for an evaluation file (standard word-level convention in
        ``words`` mode) or an array of token ids."""
        ids = data if isinstance(data, np.ndarray) else read_eval_tokens(data, self.tokenizer)
        return perplexity_report(self.lm, ids, self.vocab, self.retrieval_params(**retrieval),
                                 progress=progress)

    # -- generation --------------------------------------------------------------------
    def _gen_kwargs(self, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop,
                    seed, trace, retrieval) -> dict:
        g = self.config.generation
        return dict(max_new_tokens=g.max_new_tokens if max_new_tokens is None else max_new_tokens,
                    sampling=self.sampling_params(temperature, top_k, top_p, repetition_penalty),
                    retrieval=self.retrieval_params(**retrieval),
                    stop=[stop] if isinstance(stop, str) else stop, seed=seed, trace=trace)

    def stream(self, prompt: str, max_new_tokens: Optional[int] = None,
               temperature: Optional[float] = None, top_k: Optional[int] = None,
               top_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
               stop: str | Sequence[str] | None = None, seed: Optional[int] = None,
               trace: bool = True, **retrieval: Any) -> Iterator[GeneratedToken]:
        kw = self._gen_kwargs(max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                              stop, seed, trace, retrieval)
        return self.generator.stream(prompt, **kw)

    def generate(self, prompt: str, max_new_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
                 stop: str | Sequence[str] | None = None, seed: Optional[int] = None,
                 trace: bool = True, **retrieval: Any) -> GenerationResult:
        kw = self._gen_kwargs(max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                              stop, seed, trace, retrieval)
        return self.generator.generate(prompt, **kw)

    # -- description -------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "vocab_size": len(self.vocab),
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
