"""Assembly: from a model's parts to a ready language model, and back to disk.

:class:`ModelParts` is what a built or loaded model consists of (tokenizer, encoder, back-off,
patterns, index, the training stream, learned parts). :func:`assemble` is the one place that
decides which energy model, lambda gate, context cache and policy the LM runs with, following
the config and a :class:`Variant`. :func:`save_parts` / :func:`load_parts` write and read a
model directory; each part describes its own manifest entry.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import CacheConfig, RETGENConfig
from .lm.generator import Generator, SourceText
from .lm.mixture import RetgenLM, RetrievalParams
from .ngram.cache import ContextCache
from .ngram.kneser_ney import KneserNeyLM
from .ngram.patterns import PatternTable
from .persist.commit import resolve
from .persist.modeldir import (ModelFormatError, ModelWriter, load_arrays, read_manifest, safe_path,
                               verify_files)
from .search.encoder import Encoder, load_encoder_from_config
from .search.energy import EnergyModel
from .search.index import FaissIndex
from .search.retrieval import PatternRetriever
from .text.tokenizer import Tokenizer, Vocabulary

log = logging.getLogger(__name__)

INDEX_FILE = "patterns.faiss"
MEMORY_DIR = "memory"  # the document memory: its own committed directory inside the model
LEARNED = ("reranker", "policy")


@dataclass
class ModelParts:
    """Everything a model is made of; shared (never copied) between variants."""

    tokenizer: Tokenizer
    encoder: Encoder
    backoff: KneserNeyLM
    patterns: PatternTable
    index: FaissIndex
    stream: np.ndarray          # the training corpus as token ids
    doc_offsets: np.ndarray     # where each document starts in ``stream``
    doc_names: list[str]
    vectors: Optional[np.ndarray] = None  # float16 context embeddings (index.keep_vectors)
    reranker: Any = None        # learned EnergyReranker (or None: fixed energy weights)
    policy: Any = None          # learned RetrievalPolicy (or None)
    memory: Any = None          # the document memory (memory.PassageMemory, or None)


@dataclass(frozen=True)
class Variant:
    """Which parts an engine runs with: the one documented way to compare variants of a model
    (``engine.variant(...)``) without touching its attributes.

    reranker: use the learned energy reranker if the model has one (False: the config's
        fixed energy weights, ``config.energy``, and the config's temperature and lambda);
    gate: with the reranker, also its per-query lambda gate;
    policy: use the learned retrieval policy if the model has one;
    cache: another context cache (a ``CacheConfig`` or a ``ContextCache``; None: the config's);
    energy: an explicit energy model (overrides the reranker's and the config's weights);
    index: another index over the same patterns (same ids), e.g. another faiss spec;
    memory: read the document memory (False: the model as without one).
    """

    reranker: bool = True
    gate: bool = True
    policy: bool = True
    cache: CacheConfig | ContextCache | None = None
    energy: Optional[EnergyModel] = None
    index: Optional[FaissIndex] = None
    memory: bool = True


@dataclass
class Assembled:
    retriever: PatternRetriever
    lm: RetgenLM
    sources: SourceText
    generator: Generator


def assemble(parts: ModelParts, config: RETGENConfig, variant: Variant = Variant()) -> Assembled:
    r = config.retrieval
    reranker = parts.reranker if variant.reranker else None
    energy = variant.energy or (reranker.energy_model() if reranker is not None
                                else EnergyModel.from_config(config.energy))
    gate = reranker if reranker is not None and reranker.gate and variant.gate else None
    cache = variant.cache if isinstance(variant.cache, ContextCache) else \
        ContextCache.from_config(variant.cache or config.cache)
    qlen = r.query_length or max(config.patterns.lengths)
    index = variant.index or parts.index
    retriever = PatternRetriever(parts.patterns, index, parts.encoder, parts.tokenizer,
                                 parts.stream, parts.backoff.V, qlen, energy)
    # per-call defaults: a trained reranker brings the temperature and lambda it was fitted with
    defaults = RetrievalParams(k=r.k, temperature=reranker.tau if reranker is not None else r.temperature,
                               lam=reranker.lam if reranker is not None else r.lam,
                               nprobe=index.default_nprobe if index.nlist else None,
                               budget=r.budget)
    lm = RetgenLM(parts.backoff, retriever, parts.policy if variant.policy else None, cache,
                  gate=gate, defaults=defaults, memory=parts.memory if variant.memory else None,
                  vocab=parts.tokenizer.vocab)
    sources = SourceText(parts.stream, parts.doc_offsets, parts.doc_names, parts.tokenizer,
                         config.patterns.snippet_tokens)
    return Assembled(retriever, lm, sources,
                     Generator(lm, parts.tokenizer, sources, config.generation.trace_top))


# -- model directories ---------------------------------------------------------------------
def save_parts(parts: ModelParts, config: RETGENConfig, out, overwrite: bool = False,
               extra: Optional[dict] = None) -> Path:
    """Write a model directory (arrays, index, JSON, learned parts, checksummed manifest), then
    its document memory (``memory/``, committed on its own: :meth:`PassageMemory.save`)."""
    path = _save_model(parts, config, out, overwrite, extra)
    if parts.memory is not None:
        parts.memory.save(path / MEMORY_DIR)
    return path


def _save_model(parts: ModelParts, config: RETGENConfig, out, overwrite: bool,
                extra: Optional[dict]) -> Path:
    extra = dict(extra or {})
    with ModelWriter(out, overwrite=overwrite) as w:
        w.add_array("corpus_ids", parts.stream)
        w.add_array("doc_offsets", parts.doc_offsets)
        for name, arr in {**parts.backoff.arrays, **parts.patterns.arrays()}.items():
            w.add_array(name, arr)
        if parts.vectors is not None:
            w.add_array("vectors", parts.vectors)
        w.add_json("docs.json", parts.doc_names)
        # the training vocabulary only: words the memory added are saved with the memory
        w.add_text("vocab.json", json.dumps(parts.tokenizer.vocab.itos[:parts.backoff.V],
                                            ensure_ascii=False))
        w.add_text("config.json", config.to_json())
        parts.index.save(w.path(INDEX_FILE))
        learned = {}
        for name in LEARNED:  # learned parts travel with the model
            module = getattr(parts, name)
            if module is not None:
                module.write_into(w.path(name))
                learned[name] = name
        if learned:
            extra["learned"] = learned
        else:
            extra.pop("learned", None)
        return w.commit({
            "encoder": parts.encoder.info(),
            "tokenizer": {"mode": parts.tokenizer.mode, "vocab_size": parts.backoff.V},
            "backoff": parts.backoff.describe(),
            "index": parts.index.describe(INDEX_FILE),
            "patterns": parts.patterns.describe(),
            **extra,
        })


def load_parts(d: Path, encoder: Optional[Encoder] = None, verify: bool = True,
               mmap: bool = True) -> tuple[RETGENConfig, ModelParts, dict]:
    """(config, parts, manifest) of a model directory written by :func:`save_parts`; any
    missing or malformed entry is a ModelFormatError naming the model."""
    try:
        return _load_parts(Path(d), encoder, verify, mmap)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ModelFormatError(f"model {str(d)!r}: a manifest or config entry is missing or "
                               f"malformed ({e!r})") from None


def _load_parts(d: Path, encoder: Optional[Encoder], verify: bool, mmap: bool
                ) -> tuple[RETGENConfig, ModelParts, dict]:
    m = read_manifest(d)
    if verify:
        verify_files(d, m)
    v = resolve(d)  # the live version's files
    try:
        config = RETGENConfig.from_json((v / "config.json").read_text(encoding="utf-8"))
        vocab = Vocabulary.from_json((v / "vocab.json").read_text(encoding="utf-8"))
        doc_names = json.loads((v / "docs.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"model {str(d)!r}: {e}") from None
    enc_info = m["encoder"]
    if encoder is None:
        encoder = load_encoder_from_config(config.encoder)
    if encoder.dim != enc_info["dim"] or encoder.name != enc_info["name"]:
        raise ModelFormatError(
            f"model {str(d)!r} was built with encoder {enc_info['name']!r} (dim "
            f"{enc_info['dim']}); the encoder given is {encoder.name!r} (dim {encoder.dim})")
    arrays = load_arrays(d, m, mmap=mmap)
    _check_consistent(d, m, config, vocab, arrays)
    ix = m["index"]
    index = FaissIndex.load(safe_path(v, ix["file"], "index"), ix["spec"],
                            default_nprobe=min(config.index.nprobe, ix["nlist"] or config.index.nprobe),
                            mmap=mmap, precomputed_table=config.index.precomputed_table,
                            ip_scan=config.index.ip_scan)
    if index.dim != enc_info["dim"] or index.ntotal != ix["ntotal"]:
        raise ModelFormatError(f"index file of {str(d)!r} does not match its manifest")
    learned = m.get("learned", {})
    modules = {}
    if "reranker" in learned:
        from .learn.reranker import EnergyReranker

        modules["reranker"] = EnergyReranker.load(safe_path(v, learned["reranker"], "reranker"))
    if "policy" in learned:
        from .learn.policy import RetrievalPolicy

        modules["policy"] = RetrievalPolicy.load(safe_path(v, learned["policy"], "policy"))
    tokenizer = Tokenizer(m["tokenizer"]["mode"], vocab)
    backoff = KneserNeyLM.from_saved(arrays, m["backoff"], len(vocab))  # before the vocab grows
    if (d / MEMORY_DIR).exists():
        from .memory.memory import PassageMemory

        modules["memory"] = PassageMemory.load(d / MEMORY_DIR, tokenizer, encoder, backoff.V,
                                               verify=verify)
    else:
        log.info("model %s has no document memory; give it one with `retgen memory add --model "
                 "%s --corpus FILE` or engine.memory.add(texts)", d, d)
    parts = ModelParts(tokenizer, encoder, backoff, PatternTable.from_arrays(arrays), index, arrays["corpus_ids"],
                       arrays["doc_offsets"], doc_names, arrays.get("vectors"), **modules)
    return config, parts, m


def _check_consistent(d: Path, m: dict, config: RETGENConfig, vocab: Vocabulary,
                      arrays: dict[str, np.ndarray]) -> None:
    """The manifest, the config and the arrays describe the same model (a manifest edited and
    re-sealed, or a writer's bug, must not load as a silently different model)."""
    def bad(what: str) -> ModelFormatError:
        return ModelFormatError(f"model {str(d)!r} is inconsistent: {what}")

    try:
        order, tok, pats = int(m["backoff"]["order"]), m["tokenizer"], m["patterns"]
        if order != config.backoff.order:
            raise bad(f"back-off order {order} in the manifest, {config.backoff.order} in config.json")
        want = {f"kn_{n}_{k}" for k in range(1, order + 1) for n in ("counts", "first")}
        want |= {f"kn_keys_{k}" for k in range(2, order + 1)}
        want |= {f"kn_{n}_{k}" for k in range(1, order) for n in ("total", "gnum")}
        want |= {"kn_discounts", "kn_p1"}
        have = {k for k in arrays if k.startswith("kn_")}
        if have != want:
            raise bad(f"back-off arrays {sorted(have ^ want)[:4]} do not fit order {order}")
        if tok["vocab_size"] != len(vocab) or tok["mode"] not in ("words", "text"):
            raise bad(f"tokenizer {tok} against a vocabulary of {len(vocab)}")
        if len(arrays["kn_p1"]) != len(vocab) or arrays["kn_discounts"].shape != (order, 3):
            raise bad("back-off arrays do not fit the vocabulary")
        if pats["count"] != len(arrays["pat_length"]) or m["index"]["ntotal"] != pats["count"]:
            raise bad(f"{pats['count']} patterns, {len(arrays['pat_length'])} stored, "
                      f"{m['index']['ntotal']} indexed")
        ids, offs = arrays["corpus_ids"], arrays["doc_offsets"]
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab)):
            raise bad("corpus token ids outside the vocabulary")
        if len(offs) and (offs[0] != 0 or np.any(np.diff(offs) < 0) or offs[-1] > len(ids)):
            raise bad("document offsets do not fit the corpus")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ModelFormatError):
            raise
        raise bad(f"manifest entry missing or malformed ({e!r})") from None
