"""Shared helpers for the LLM adapters: resolving an engine, generation arguments, traces,
and the document memory read from a framework's vector store (``memory=``)."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from retgen_engine import GeneratedToken, RetgenEngine
from retgen_engine.checks import ArgumentError

log = logging.getLogger(__name__)

_CACHE: dict[str, RetgenEngine] = {}
_CACHE_LOCK = threading.Lock()
_BIND_LOCK = threading.Lock()

#: the document memory's settings: fields of every LLM adapter and per-call arguments
#: (None: the model's config); the per-call ``memory=False`` leaves the memory out.
MEMORY_ARGS = ("memory_k", "memory_refresh", "memory_keys", "memory_temperature")
#: the generation arguments the adapters forward to :meth:`RetgenEngine.generate`.
GENERATION_ARGS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
                   "seed", "budget", *MEMORY_ARGS)


def resolve_engine(engine: Optional[RetgenEngine], model_dir: Optional[str | os.PathLike],
                   shared: bool = True) -> RetgenEngine:
    """The engine instance given, or the model at ``model_dir`` (loaded once per process;
    ``shared=False``: an instance of its own, for an adapter that gives it a memory)."""
    if engine is not None:
        if not isinstance(engine, RetgenEngine):
            raise TypeError(f"engine must be a RetgenEngine, got {type(engine).__name__}")
        return engine
    if model_dir is None:
        raise ValueError("give either model_dir (a RETGEN model directory) or engine")
    key = str(Path(model_dir).resolve())
    if not shared:
        log.info("loading RETGEN model from %s (an instance of its own)", key)
        return RetgenEngine.load(key)
    with _CACHE_LOCK:
        if key not in _CACHE:
            log.info("loading RETGEN model from %s", key)
            _CACHE[key] = RetgenEngine.load(key)
        return _CACHE[key]


def generation_kwargs(params: dict[str, Any], max_tokens: Optional[int],
                      stop: Optional[Iterable[str]], overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``engine.generate``/``engine.stream`` (None = model default)."""
    kw = {k: params.get(k) for k in GENERATION_ARGS}
    kw["max_new_tokens"] = max_tokens
    kw["stop"] = list(stop) if stop else None
    for k, v in overrides.items():
        if k in GENERATION_ARGS or k == "max_new_tokens":
            kw[k] = v
        elif k == "memory":
            if v is not None and not isinstance(v, bool):
                raise ArgumentError(f"memory={type(v).__name__}: per call, memory is True or "
                                    "False (leave the document memory in or out); the store "
                                    "it reads is set when the LLM is made (memory=<vector "
                                    "store>)")
            kw["memory"] = v
        elif k == "max_tokens":
            kw["max_new_tokens"] = v
    return kw


@dataclass(frozen=True)
class MemorySource:
    """What a framework's vector store gives the engine's document memory."""

    store: Any                   # the DocumentStore the vector store writes to
    embedding: str               # the embedding that made its vectors, as errors name it
    name: Optional[str] = None   # that embedding's encoder name, when it can be told
    dim: Optional[int] = None    # its dimension, when known without embedding anything
    hint: str = ""               # how to make a compatible vector store


def require_store(vector_store: Any, cls: type, what: str) -> None:
    """``memory=`` must be this framework's RETGEN vector store ``cls`` (``what`` says which)."""
    if not isinstance(vector_store, cls):
        kind = f"{type(vector_store).__module__}.{type(vector_store).__qualname__}"
        raise ArgumentError(f"memory is a {kind}; it must be a {cls.__module__.rsplit('.', 1)[0]}"
                            f".{cls.__name__} ({what}); for a bare DocumentStore call "
                            "engine.use_memory(store)")


def check_memory_source(engine: RetgenEngine, src: MemorySource) -> None:
    """Refuse a vector store whose vectors are not the engine encoder's: the memory finds
    passages by searching the store with that encoder (dense and fused keys)."""
    enc = engine.encoder
    dims = sorted({d for d in (src.dim, getattr(src.store, "dim", None)) if d is not None})
    bad_dim = [d for d in dims if d != enc.dim]
    bad_name = src.name is not None and src.name != enc.name
    if bad_dim or bad_name:
        theirs = ", ".join(x for x in (f"name {src.name!r}" if src.name else "",
                                       f"dim {'/'.join(map(str, dims))}" if dims else "") if x)
        raise ArgumentError(
            f"memory: the vector store's vectors come from {src.embedding}"
            f"{f' ({theirs})' if theirs else ''}, but the RETGEN model's encoder is "
            f"{enc.name!r} (dim {enc.dim}); the generator searches the memory with its own "
            f"encoder, so both must be the same model. {src.hint}".strip())
    if src.name is None:
        log.debug("memory: cannot tell whether %s is the encoder %r (dimension %s checked); "
                  "dense and fused memory keys need vectors from the same model",
                  src.embedding, enc.name, dims or "not yet known")


def bind_memory(engine: RetgenEngine, src: MemorySource) -> None:
    """Make ``engine`` read its document memory from ``src.store`` (checked first; no-op when
    it already does), brought up to the store's records before the prompt is read."""
    check_memory_source(engine, src)
    with _BIND_LOCK:
        if engine.memory.store is not src.store:
            log.info("RETGEN memory: reading the vector store's documents (%d records)",
                     len(src.store))
            engine.use_memory(src.store)
        # the memory gives words new to the model their ids when it reads the records;
        # reading them now (cheap when the store is unchanged) lets the prompt use them
        engine.memory.sync()


class GenerationFields(BaseModel):
    """The fields and helpers every LLM adapter shares (LangChain's chat model and LLM,
    LlamaIndex's LLM): where the model comes from, the per-call sampling defaults and the
    document memory.

    ``memory``: the framework's RETGEN vector store. The engine then reads its document
    memory from that store (``engine.use_memory(store)``, when the LLM is made with
    ``engine=``, else at its first call): what the framework adds to or deletes from the
    store is what the generator copies from at the next call, and each generated token's
    trace names the passages (``kind == "passage"``) it came from. The store replaces the
    engine's own memory; with ``model_dir`` the LLM loads an engine instance of its own, so
    other adapters of the same model keep theirs. The vectors must be the model encoder's
    (same dimension, and same name where the embedding tells it)."""

    model_dir: Optional[str] = None
    engine: Optional[Any] = Field(default=None, exclude=True)
    temperature: Optional[float] = Field(None, ge=0.0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    #: keep tokens with at least this share of the likeliest one's probability (0: all)
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    #: locally typical sampling mass (1: all)
    typical_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0)
    seed: Optional[int] = None
    #: with a trained policy: the share of tokens that encode and search (its skip stage);
    #: lower is faster. None: the model's trained default.
    budget: Optional[float] = Field(None, gt=0.0, le=1.0)
    stop: Optional[list[str]] = None
    #: the framework's RETGEN vector store the generator copies from (see the class docs)
    memory: Optional[Any] = Field(default=None, exclude=True)
    #: memory passages retrieved per query (None: the model's config)
    memory_k: Optional[int] = Field(None, ge=1)
    #: the memory query is refreshed every ``memory_refresh`` tokens
    memory_refresh: Optional[int] = Field(None, ge=1)
    #: how memory passages are found: BM25, the encoder's vectors, or both fused
    memory_keys: Optional[Literal["lexical", "dense", "fused"]] = None
    #: the temperature of the memory passages' weights (lower: the best passages count more)
    memory_temperature: Optional[float] = Field(None, gt=0.0)
    _loaded: Optional[RetgenEngine] = PrivateAttr(default=None)

    @classmethod
    def _memory_source(cls, vector_store: Any) -> MemorySource:
        """The framework's hook: the document store behind ``vector_store`` and what is known
        of its embedding; raises for anything but that framework's RETGEN vector store."""
        raise NotImplementedError

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, v: Any) -> Any:
        if v is not None:
            cls._memory_source(v)
        return v

    @model_validator(mode="after")
    def _bind_memory_now(self) -> "GenerationFields":
        if self.memory is not None and self.engine is not None:
            self._engine()  # checks the store against the encoder and binds it
        return self

    def _engine(self) -> RetgenEngine:
        if self._loaded is None:
            self._loaded = resolve_engine(self.engine, self.model_dir,
                                          shared=self.memory is None)
        if self.memory is not None:
            bind_memory(self._loaded, self._memory_source(self.memory))
        return self._loaded

    def _sampling(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GENERATION_ARGS}


def token_trace(tokens: Iterable[GeneratedToken]) -> list[dict[str, Any]]:
    """The per-token trace as plain JSON-able dicts (token, id, text, logprob, sources)."""
    return [t.to_dict() for t in tokens]


def count_tokens(engine: RetgenEngine, text: str) -> int:
    return len(engine.tokenizer.split(text))


def stream_finish_reason(engine: RetgenEngine, kw: dict[str, Any], n_out: int) -> str:
    """"length" when the stream produced ``max_new_tokens`` tokens, else "stop" (a stop
    sequence ended it; one completed by the very last allowed token reads as "length")."""
    limit = kw.get("max_new_tokens")
    if limit is None:
        limit = engine.config.generation.max_new_tokens
    return "length" if n_out >= limit else "stop"
