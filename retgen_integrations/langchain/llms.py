"""RETGEN as a LangChain (completion) LLM; same parameters as :class:`ChatRetgen`.

``generation_info`` carries ``finish_reason``, token usage and ``retgen_trace`` (one dict per
generated token); streaming yields one chunk per generated token with its trace entry.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field, PrivateAttr

from retgen_engine import RetgenEngine

from .._engine import count_tokens, stream_finish_reason, token_trace
from .chat_models import _RetgenParams


class RetgenLLM(_RetgenParams, LLM):
    """Completion LLM over a RETGEN model directory (``model_dir``) or engine (``engine``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_dir: Optional[str] = None
    engine: Optional[Any] = Field(default=None, exclude=True)
    model_name: str = Field("retgen", alias="model")
    temperature: Optional[float] = Field(None, ge=0.0)
    max_tokens: Optional[int] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0)
    seed: Optional[int] = None
    stop: Optional[list[str]] = None
    _loaded: Optional[RetgenEngine] = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "retgen"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_dir": self.model_dir,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "seed": self.seed}

    def _generate(self, prompts: list[str], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None,
                  **kwargs: Any) -> LLMResult:
        engine = self._engine()
        gens = []
        n_in = n_out = 0
        for prompt in prompts:
            res = engine.generate(prompt, **self._kw(stop, kwargs))
            n_in += res.prompt_tokens
            n_out += res.completion_tokens
            gens.append([Generation(text=res.text, generation_info={
                "finish_reason": res.finish_reason, "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens,
                "retgen_trace": token_trace(res.tokens)})])
        usage = {"prompt_tokens": n_in, "completion_tokens": n_out,
                 "total_tokens": n_in + n_out}
        return LLMResult(generations=gens,
                         llm_output={"token_usage": usage, "model_name": self.model_name})

    def _call(self, prompt: str, stop: Optional[list[str]] = None,
              run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> str:
        return self._engine().generate(prompt, **self._kw(stop, kwargs)).text

    def _stream(self, prompt: str, stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        engine = self._engine()
        kw = self._kw(stop, kwargs)
        n_out = 0
        for tok in engine.stream(prompt, **kw):
            n_out += 1
            chunk = GenerationChunk(text=tok.text,
                                    generation_info={"retgen_trace": token_trace([tok])})
            if run_manager:
                run_manager.on_llm_new_token(tok.text, chunk=chunk)
            yield chunk
        yield GenerationChunk(text="", generation_info={
            "finish_reason": stream_finish_reason(engine, kw, n_out),
            "prompt_tokens": count_tokens(engine, prompt), "completion_tokens": n_out})
