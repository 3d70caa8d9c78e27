"""RETGEN as a LangChain chat model.

RETGEN is a plain (non-chat) language model: the messages' texts are joined with newlines
into one prompt and the model continues it. Tool calling and structured output are not
supported (the base class raises for ``bind_tools``).

``response_metadata`` carries ``finish_reason``, ``model_name`` and ``retgen_trace``: one
dict per generated token (token, token_id, text, logprob and the corpus sources that carried
its probability). Streaming yields one chunk per generated token, each with that token's
trace entry; ``usage_metadata`` counts prompt and generated tokens with the engine's
tokenizer.

``memory=`` (a :class:`~retgen_integrations.langchain.RetgenVectorStore`) makes the store a
retriever reads the store the generator copies from: documents added with ``add_texts`` (or
deleted) are read at the next call, and the trace entries of kind ``"passage"`` name the
document (``passage``: its id) each token was copied from. Per call, ``memory=False`` leaves
the memory out; ``memory_k``, ``memory_refresh``, ``memory_keys`` and ``memory_temperature``
override its settings (also fields, like the sampling parameters).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field


from .._engine import (GenerationFields, MemorySource, count_tokens, generation_kwargs, require_store,
                       stream_finish_reason, token_trace)
from .embeddings import RetgenEmbeddings
from .vectorstores import RetgenVectorStore


def messages_to_prompt(messages: list[BaseMessage]) -> str:
    """The texts of the messages, one per line (roles are not part of RETGEN's corpus)."""
    return "\n".join(m.text for m in messages if m.text)


class _RetgenParams(GenerationFields):
    """Fields and helpers shared by :class:`ChatRetgen` and :class:`RetgenLLM`."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field("retgen", alias="model")
    max_tokens: Optional[int] = Field(None, ge=0)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_dir": self.model_dir,
                "max_tokens": self.max_tokens, **self._sampling()}

    @classmethod
    def _memory_source(cls, vector_store: Any) -> MemorySource:
        require_store(vector_store, RetgenVectorStore, "the store the retriever reads")
        emb = vector_store.embedding
        enc = emb.encoder if isinstance(emb, RetgenEmbeddings) else None
        return MemorySource(
            vector_store.store, f"the embeddings {type(emb).__name__}",
            name=enc.name if enc is not None else None,
            dim=enc.dim if enc is not None else None,
            hint="Build the vector store with RetgenEmbeddings(encoder=engine.encoder).")

    def _kw(self, stop: Optional[list[str]], kwargs: dict[str, Any]) -> dict[str, Any]:
        return generation_kwargs(self._sampling(), self.max_tokens, stop or self.stop, kwargs)

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
        return UsageMetadata(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                             total_tokens=prompt_tokens + completion_tokens)

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the RETGEN model's own tokenizer."""
        return count_tokens(self._engine(), text)


class ChatRetgen(_RetgenParams, BaseChatModel):
    """Chat model over a RETGEN model directory (``model_dir``) or engine (``engine``)."""


    @property
    def _llm_type(self) -> str:
        return "retgen-chat"


    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None,
                  **kwargs: Any) -> ChatResult:
        res = self._engine().generate(messages_to_prompt(messages), **self._kw(stop, kwargs))
        msg = AIMessage(
            content=res.text,
            usage_metadata=self._usage(res.prompt_tokens, res.completion_tokens),
            response_metadata={"finish_reason": res.finish_reason,
                               "model_name": self.model_name,
                               "model_provider": "retgen",
                               "unknown_prompt_words": res.unknown_prompt_words,
                               "retgen_trace": token_trace(res.tokens)})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        engine = self._engine()
        prompt = messages_to_prompt(messages)
        kw = self._kw(stop, kwargs)
        n_prompt = count_tokens(engine, prompt)
        n_out = 0
        for tok in engine.stream(prompt, **kw):
            n_out += 1
            chunk = ChatGenerationChunk(message=AIMessageChunk(
                content=tok.text, response_metadata={"retgen_trace": token_trace([tok])}))
            if run_manager:
                run_manager.on_llm_new_token(tok.text, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", chunk_position="last",
            usage_metadata=self._usage(n_prompt, n_out),
            response_metadata={"finish_reason": stream_finish_reason(engine, kw, n_out),
                               "model_name": self.model_name,
                               "model_provider": "retgen"}))
