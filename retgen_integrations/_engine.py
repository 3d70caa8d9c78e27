"""Shared helpers for the LLM adapters: resolving an engine, generation arguments, traces."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import BaseModel, Field, PrivateAttr

from retgen_engine import GeneratedToken, RetgenEngine

log = logging.getLogger(__name__)

_CACHE: dict[str, RetgenEngine] = {}
_CACHE_LOCK = threading.Lock()

#: the generation arguments the adapters forward to :meth:`RetgenEngine.generate`.
GENERATION_ARGS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "budget")


def resolve_engine(engine: Optional[RetgenEngine], model_dir: Optional[str | os.PathLike]
                   ) -> RetgenEngine:
    """The engine instance given, or the model at ``model_dir`` (loaded once per process)."""
    if engine is not None:
        if not isinstance(engine, RetgenEngine):
            raise TypeError(f"engine must be a RetgenEngine, got {type(engine).__name__}")
        return engine
    if model_dir is None:
        raise ValueError("give either model_dir (a RETGEN model directory) or engine")
    key = str(Path(model_dir).resolve())
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
        elif k == "max_tokens":
            kw["max_new_tokens"] = v
    return kw


class GenerationFields(BaseModel):
    """The fields and helpers every LLM adapter shares (LangChain's chat model and LLM,
    LlamaIndex's LLM): where the model comes from and the per-call sampling defaults."""

    model_dir: Optional[str] = None
    engine: Optional[Any] = Field(default=None, exclude=True)
    temperature: Optional[float] = Field(None, ge=0.0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0)
    seed: Optional[int] = None
    #: with a trained policy: the share of tokens that encode and search (its skip stage);
    #: lower is faster. None: the model's trained default.
    budget: Optional[float] = Field(None, gt=0.0, le=1.0)
    stop: Optional[list[str]] = None
    _loaded: Optional[RetgenEngine] = PrivateAttr(default=None)

    def _engine(self) -> RetgenEngine:
        if self._loaded is None:
            self._loaded = resolve_engine(self.engine, self.model_dir)
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
