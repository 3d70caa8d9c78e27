"""Configuration: one pydantic model per stage, composed into :class:`RETGENConfig`.

Every field is validated on construction and on assignment; an invalid value raises
``pydantic.ValidationError`` whose message names the field and the allowed range.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from functools import lru_cache
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

_STRICT = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


@lru_cache(maxsize=None)
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    fi = model.model_fields[name]
    return TypeAdapter(Annotated[fi.annotation, fi])


def check_fields(model: type[BaseModel], **values: Any) -> dict[str, Any]:
    """Validate per-call ``values`` against the bounds of the same-named fields of a config
    ``model`` (the one place each bound lives); returns them coerced (numpy scalars become
    Python numbers). A ValueError names the argument, the value and what is allowed."""
    out = {}
    for name, v in values.items():
        try:
            out[name] = _field_adapter(model, name).validate_python(v)
        except ValidationError as e:
            raise ValueError(f"{name}={v!r}: {e.errors()[0]['msg'].lower()}") from None
    return out


class EncoderConfig(BaseModel):
    model_config = _STRICT
    #: "minilm" (the bundled all-MiniLM-L6-v2), "hashing:<dim>" (tests only) or a local
    #: sentence-transformers model directory.
    name: str = "minilm"
    #: how the encoder runs: "torch", "onnx" (ONNX Runtime, exported once from the local
    #: weights and cached under ~/.cache/retgen/onnx) or "auto" (picked for this CPU by
    #: ``retgen_engine.search.encoders_select.RANKING``: bf16 only where the CPU has it
    #: natively, ONNX float32 where that measured faster). A runtime choice: a model built
    #: with one backend loads with any other.
    backend: Literal["auto", "torch", "onnx"] = "auto"
    #: "auto" (see ``backend``), "float32", "bfloat16" (torch only) or "int8" (onnx only:
    #: dynamic quantization, the fastest, vectors slightly off float32).
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = "auto"
    batch_size: int = Field(256, ge=1, le=65536)

    @model_validator(mode="after")
    def _check_backend(self) -> "EncoderConfig":
        from .search.encoders_select import validate

        validate(self.backend, self.dtype)  # ValueError naming the impossible value
        return self


class TokenizerConfig(BaseModel):
    model_config = _STRICT
    #: "words": whitespace tokens, one ``<eos>`` per line (WikiText/PTB ``.tokens`` files);
    #: "text": lossless raw-text tokenizer; "auto": "words" when any corpus file ends in
    #: ``.tokens``, else "text".
    mode: Literal["auto", "words", "text"] = "auto"
    #: words seen fewer times than this in the corpus map to ``<unk>``.
    min_count: int = Field(1, ge=1)


class PatternConfig(BaseModel):
    model_config = _STRICT
    #: context lengths (in tokens) extracted at every position.
    lengths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    #: per length, the minimum number of occurrences a context needs to be stored.
    min_counts: list[int] = Field(default_factory=lambda: [1, 1, 2, 2])
    #: tokens of source text shown in a trace's snippet (ending with the traced token).
    snippet_tokens: int = Field(12, ge=1, le=256)

    @model_validator(mode="after")
    def _check(self) -> "PatternConfig":
        if not self.lengths:
            raise ValueError("patterns.lengths must name at least one context length")
        if any(n < 1 or n > 64 for n in self.lengths):
            raise ValueError(f"patterns.lengths={self.lengths}: each length must be in [1, 64]")
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"patterns.lengths={self.lengths}: lengths must be distinct")
        if len(self.min_counts) != len(self.lengths):
            raise ValueError(
                f"patterns.min_counts={self.min_counts} must have one entry per length "
                f"(patterns.lengths={self.lengths})")
        if any(c < 1 for c in self.min_counts):
            raise ValueError(f"patterns.min_counts={self.min_counts}: each count must be >= 1")
        return self


class IndexConfig(BaseModel):
    model_config = _STRICT
    #: "auto" picks by size; or any faiss index_factory string (e.g. "IVF1024,PQ48np").
    spec: str = "auto"
    #: below this many vectors the index is exact (Flat).
    exact_threshold: int = Field(4096, ge=1)
    #: below this many vectors (and above exact_threshold) the index is IVF-Flat.
    pq_threshold: int = Field(65536, ge=1)
    #: number of IVF lists; None = about 4*sqrt(N).
    nlist: Optional[int] = Field(None, ge=1)
    nprobe: int = Field(16, ge=1)
    pq_nsplits: int = Field(48, ge=1)
    pq_nbits: int = Field(8, ge=1, le=16)
    #: use faiss' 4-bit fast-scan IVF-PQ codes ("IVF..,PQ{m}x4fs"); forces pq_nbits=4.
    fast_scan: bool = False
    #: IVF-PQ (L2, residual codes): keep faiss' precomputed distance table in RAM (nlist * M *
    #: 2^nbits floats, rebuilt on load). Counted by ``FaissIndex.nbytes()``. Off by default:
    #: the same results, and for the LM indexes (PQ48, nprobe 16) no slower
    #: (``benchmarks/results/lm_index_scan_*.md``), at 4x less index RAM.
    precomputed_table: bool = False
    #: IVF-PQ over unit vectors: rank a list's codes by the inner product with the query (one
    #: query table for all lists) instead of L2 (a table per probed list when
    #: ``precomputed_table`` is off). Same codes and lists; distances come back as
    #: ``|q|^2 + 1 - 2 <q, x>`` (exact for unit ``x``); faiss' L2 table is then dropped.
    #: Measured in ``benchmarks/results/lm_index_scan_*.md`` and ``vectorstore.md``.
    ip_scan: bool = False
    #: vectors used to train IVF/PQ (sampled); None = faiss' own default cap.
    train_size: Optional[int] = Field(200_000, ge=1)
    seed: int = 1234
    #: also store the context embeddings (float16 ``vectors.npy``) in the model directory, so
    #: other index specs can be built later without re-encoding (benchmarks, ablations).
    keep_vectors: bool = False


class BackoffConfig(BaseModel):
    model_config = _STRICT
    #: interpolated modified Kneser-Ney order.
    order: int = Field(5, ge=1, le=10)


class RetrievalConfig(BaseModel):
    model_config = _STRICT
    k: int = Field(32, ge=1, le=4096)
    #: softmax temperature over -distance (tau).
    temperature: float = Field(0.05, gt=0)
    #: mixing weight of the retrieval distribution (lambda); 0 = back-off only; < 1, so the
    #: back-off keeps every token's probability above 0.
    lam: float = Field(0.25, ge=0.0, lt=1.0)
    #: tokens of context embedded for a query; None = the longest pattern length.
    query_length: Optional[int] = Field(None, ge=1, le=64)
    #: with a learned policy's skip stage: the share of queries that retrieve; None = the
    #: default it was trained with (a per-call ``budget`` overrides it).
    budget: Optional[float] = Field(None, gt=0.0, le=1.0)


class CacheConfig(BaseModel):
    model_config = _STRICT
    #: tokens of the current text (prompt + output, or evaluation text so far) kept.
    window: int = Field(2000, ge=1)
    #: weights of the context's unigram, bigram and trigram distributions in the base
    #: distribution (all 0 disable the cache).
    unigram: float = Field(0.1, ge=0.0, lt=1.0)
    bigram: float = Field(0.1, ge=0.0, lt=1.0)
    trigram: float = Field(0.1, ge=0.0, lt=1.0)
    #: the unigram part weighs a token exp(-distance / decay); 0 = all tokens alike.
    decay: float = Field(200.0, ge=0.0)
    #: bigram/trigram weights scale by n / (n + kappa), n = how often the history occurred.
    kappa: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> "CacheConfig":
        if self.unigram + self.bigram + self.trigram >= 1:
            raise ValueError(f"cache weights unigram={self.unigram}, bigram={self.bigram}, "
                             f"trigram={self.trigram}: each >= 0 and their sum < 1")
        return self


class MemoryConfig(BaseModel):
    """The document memory (:mod:`retgen_engine.memory`): passages of the training corpus and of
    documents added later, found by the long preceding context; the n-gram statistics of the
    passages found are mixed into the language model. Defaults: lexical keys (no query to
    encode, the fastest), the per-order weights of a fit on WikiText-2 valid on top of KN-5 +
    cache; ``benchmarks/lm_benchmark.py`` tunes keys, temperature and weights per corpus on
    valid (its results record them as ``memory.chosen``)."""

    model_config = _STRICT
    #: cut the training corpus into passages at build time (False: start with an empty memory)
    enabled: bool = True
    #: tokens per passage; a longer document is split into several
    passage_length: int = Field(128, ge=8, le=4096)
    #: tokens between passage starts (None: the passage length, no overlap)
    stride: Optional[int] = Field(None, ge=1, le=4096)
    #: how passages are found: "lexical" (BM25, bm25s), "dense" (MiniLM vectors in the
    #: document store) or "fused" (reciprocal-rank fusion of both)
    keys: Literal["lexical", "dense", "fused"] = "lexical"
    #: passages retrieved per query
    k: int = Field(128, ge=1, le=4096)
    #: the query is refreshed every ``refresh`` tokens (from past tokens only)
    refresh: int = Field(8, ge=1, le=4096)
    #: tokens before the refresh point that make the query
    query_length: int = Field(64, ge=1, le=4096)
    #: passage weights: softmax((score / best score - 1) / temperature)
    temperature: float = Field(0.2, gt=0.0)
    #: n-gram orders read from the passages (1..order)
    order: int = Field(5, ge=1, le=10)
    #: weight of each order's distribution (sum < 1); scaled by n / (n + kappa), n the times
    #: the history occurs in the passages found
    weights: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.05, 0.11, 0.03, 0.06, 0.12])
    kappa: list[Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=lambda: [0.4, 7.4, 0.2, 6.0, 0.06])
    #: the constant of reciprocal-rank fusion, 1 / (rrf_k + rank)
    rrf_k: float = Field(60.0, gt=0.0)
    #: documents added after the build also enter the back-off's n-gram counts (re-estimated
    #: when the documents change, :mod:`retgen_engine.lm.live_backoff`); False: only the
    #: passages read them
    update_backoff: bool = True
    #: the learned gate on the memory's weight (:mod:`retgen_engine.memory.gate`): one weight
    #: per feature and a bias, fitted by build-time tuning and ``tune_memory`` ([]: no gate)
    gate: list[float] = Field(default_factory=list)
    #: the gate's feature standardization (z - center) / scale, one value per feature
    gate_center: list[float] = Field(default_factory=list)
    gate_scale: list[Annotated[float, Field(gt=0.0)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "MemoryConfig":
        if len(self.weights) != self.order or len(self.kappa) != self.order:
            raise ValueError(f"memory weights ({len(self.weights)}) and kappa "
                             f"({len(self.kappa)}) need one value per order (order={self.order})")
        if sum(self.weights) >= 1:
            raise ValueError(f"memory weights {self.weights}: each >= 0 and their sum < 1")
        G = 3 + self.order  # memory.gate.gate_dim
        if self.gate and (len(self.gate) != G + 1 or len(self.gate_center) != G
                          or len(self.gate_scale) != G):
            raise ValueError(f"memory gate: {G} weights and a bias, and {G} gate_center and "
                             f"gate_scale values, at order={self.order} (got {len(self.gate)}, "
                             f"{len(self.gate_center)}, {len(self.gate_scale)})")
        if not self.gate and (self.gate_center or self.gate_scale):
            raise ValueError("memory gate_center/gate_scale given without gate weights")
        if self.stride is not None and self.stride > self.passage_length:
            raise ValueError(f"memory stride={self.stride} exceeds passage_length="
                             f"{self.passage_length}: text between passages would be skipped")
        return self


class EnergyConfig(BaseModel):
    model_config = _STRICT
    #: temperature of softmax(-E / T) over the retrieved patterns.
    energy_temperature: float = Field(1.0, gt=0)
    w_sim: float = 1.0
    w_div: float = 0.0
    w_freq: float = 0.0


class PolicyConfig(BaseModel):
    """The learned parts' search grids: the policy's discrete choices of k, tau and lambda
    (``retgen train`` also picks the best fixed triple from them)."""

    model_config = _STRICT
    policy_hidden_dim: int = Field(64, ge=1, le=4096)
    k_choices: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [8, 16, 32, 64], min_length=1)
    tau_choices: list[Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2], min_length=1)
    lam_choices: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3], min_length=1)


class GenerationConfig(BaseModel):
    model_config = _STRICT
    max_new_tokens: int = Field(50, ge=0, le=100_000)
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    #: never sample ``<unk>`` (it still has probability for perplexity).
    allow_unk: bool = False
    trace_top: int = Field(3, ge=0, le=64)
    #: keep the tokens with at least ``min_p`` times the likeliest one's probability (0: all)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    #: locally typical sampling: the smallest set of tokens whose surprisal is closest to the
    #: entropy, with at least this mass (1: all). 0.95 (with temperature 1, no other
    #: truncation) is the decoding whose text sits closest to human text in
    #: ``benchmarks/results/generation_quality_refine.md`` (WikiText-2; top-p 0.95 and 0.9 are
    #: within noise of it, pure sampling and greedy clearly farther)
    typical_p: float = Field(0.95, gt=0.0, le=1.0)


class TuningConfig(BaseModel):
    """Build-time tuning (:mod:`retgen_engine.learn.tuning`): the mixture's weights fitted on a
    held-out slice of the training stream (its counts removed, as training does)."""

    model_config = _STRICT
    #: share of the training stream held out (before the bounds below)
    fraction: float = Field(0.05, gt=0.0, le=0.25)
    #: at most this many held-out tokens (bounds the tuning's time: one query each)
    max_tokens: int = Field(20000, ge=100, le=10_000_000)
    #: at least this many; a corpus under 4x this many tokens is not tuned
    min_tokens: int = Field(1000, ge=100, le=10_000_000)
    #: which document end closes the slice (the last document's end: seed 0 on one document)
    seed: int = Field(0, ge=0)
    #: fit the memory's learned gate with its weights (False: the per-order weights only)
    memory_gate: bool = True

    @model_validator(mode="after")
    def _check(self) -> "TuningConfig":
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"tuning min_tokens={self.min_tokens} exceeds "
                             f"max_tokens={self.max_tokens}")
        return self


class RETGENConfig(BaseModel):
    """The whole configuration; JSON round trip with :meth:`to_json`/:meth:`from_json`."""

    model_config = _STRICT
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    patterns: PatternConfig = Field(default_factory=PatternConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)

    # The paper's production fields, as flat read-only views.
    @property
    def nlist(self) -> Optional[int]:
        return self.index.nlist

    @property
    def nprobe(self) -> int:
        return self.index.nprobe

    @property
    def pq_nbits(self) -> int:
        return self.index.pq_nbits

    @property
    def pq_nsplits(self) -> int:
        return self.index.pq_nsplits

    @property
    def energy_temperature(self) -> float:
        return self.energy.energy_temperature

    @property
    def policy_hidden_dim(self) -> int:
        return self.policy.policy_hidden_dim

    @model_validator(mode="after")
    def _check(self) -> "RETGENConfig":
        if self.index.nlist is not None and self.index.nprobe > self.index.nlist:
            raise ValueError(
                f"index.nprobe={self.index.nprobe} exceeds index.nlist={self.index.nlist}; "
                "nprobe must be in [1, nlist]")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RETGENConfig":
        return cls.model_validate_json(text)

    def save(self, path: str | os.PathLike) -> None:
        from .persist.modeldir import atomic_write_text

        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RETGENConfig":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise FileNotFoundError(f"cannot read config file {str(path)!r}: {e}") from e
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {e}") from e
        return cls.from_json(text)
