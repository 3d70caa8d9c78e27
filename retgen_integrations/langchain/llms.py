"""RETGEN as a LangChain (completion) LLM; same parameters as :class:`ChatRetgen`, the
document memory (``memory=<RetgenVectorStore>``, per-call ``memory=False`` and ``memory_*``)
included.

``generation_info`` carries ``finish_reason``, token usage and ``retgen_trace`` (one dict per
generated token, with its ``"passage"`` entries when it was copied from the memory);
streaming yields one chunk per generated token with its trace entry.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from .._engine import count_tokens, stream_finish_reason, token_trace
from .chat_models import _RetgenParams


class RetgenLLM(_RetgenParams, LLM):
    """Completion LLM over a RETGEN model directory (``model_dir``) or engine (``engine``)."""


    @property
    def _llm_type(self) -> str:
        return "retgen"


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
