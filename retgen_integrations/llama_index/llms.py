"""RETGEN as a LlamaIndex completion LLM (``is_chat_model=False``; chat goes through the
base class's messages-to-prompt path).

``CompletionResponse.additional_kwargs`` carries ``finish_reason``, ``prompt_tokens``,
``completion_tokens`` and ``retgen_trace`` (one dict per generated token with the corpus
sources behind it); streamed responses carry each token's entry as ``retgen_token``, and the
last one the whole ``retgen_trace``.

``memory=`` (a :class:`~retgen_integrations.llama_index.RetgenVectorStore`) makes the store an
index reads the store the generator copies from: nodes inserted (``index.insert``) or deleted
(``index.delete_ref_doc``) are read at the next call, and trace entries of kind ``"passage"``
name the node (``passage``) and its source document (``document``) each token was copied
from. Per call, ``memory=False`` leaves the memory out; ``memory_k``, ``memory_refresh``,
``memory_keys`` and ``memory_temperature`` override its settings (also fields).
"""
from __future__ import annotations

from typing import Any, Optional

from llama_index.core.base.llms.types import (CompletionResponse, CompletionResponseGen,
                                              LLMMetadata)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field


from .._engine import (GenerationFields, MemorySource, count_tokens, generation_kwargs, require_store,
                       stream_finish_reason, token_trace)
from .vector_store import RetgenVectorStore


class RetgenLLM(GenerationFields, CustomLLM):
    """Completion LLM over a RETGEN model directory (``model_dir``) or engine (``engine``)."""

    model_name: str = "retgen"
    context_window: int = Field(2048, gt=0, description="prompt tokens accepted (RETGEN "
                                "conditions on a short suffix, longer prompts are allowed)")
    max_new_tokens: int = Field(64, ge=0, description="tokens generated per call (num_output)")

    @classmethod
    def class_name(cls) -> str:
        return "RetgenLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.max_new_tokens,
                           is_chat_model=False, is_function_calling_model=False,
                           model_name=self.model_name)

    @classmethod
    def _memory_source(cls, vector_store: Any) -> MemorySource:
        require_store(vector_store, RetgenVectorStore, "the index's vector store")
        # nodes carry their vectors but not the model that made them: the dimension is checked
        return MemorySource(vector_store.client, "the nodes' embeddings (the index's embed_model)",
                            hint="Index the documents with embed_model=RetgenEmbedding("
                                 "engine.encoder).")

    def _kw(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return generation_kwargs(self._sampling(), self.max_new_tokens,
                                 kwargs.pop("stop", self.stop), kwargs)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the RETGEN model's own tokenizer."""
        return count_tokens(self._engine(), text)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                 ) -> CompletionResponse:
        res = self._engine().generate(prompt, **self._kw(kwargs))
        return CompletionResponse(text=res.text, raw=res.to_dict(), additional_kwargs={
            "finish_reason": res.finish_reason, "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens, "retgen_trace": token_trace(res.tokens)})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                        ) -> CompletionResponseGen:
        engine = self._engine()
        kw = self._kw(kwargs)

        def gen() -> CompletionResponseGen:
            text, trace = "", []
            for tok in engine.stream(prompt, **kw):
                text += tok.text
                trace.append(tok.to_dict())
                yield CompletionResponse(text=text, delta=tok.text,
                                         additional_kwargs={"retgen_token": trace[-1]})
            n = len(trace)
            yield CompletionResponse(text=text, delta="", additional_kwargs={
                "finish_reason": stream_finish_reason(engine, kw, n),
                "prompt_tokens": count_tokens(engine, prompt), "completion_tokens": n,
                "retgen_trace": trace})

        return gen()
