"""LangChain's own conformance suites for the RETGEN chat model and retriever."""
from __future__ import annotations

from typing import Any

from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import (ChatModelIntegrationTests,
                                               RetrieversIntegrationTests)
from langchain_tests.unit_tests import ChatModelUnitTests

from retgen_engine import HashingEncoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

from retgen_tiny_model import tiny_model_path

TEXTS = [
    "The cat sat on the mat.", "Dogs are loyal animals.", "The stock market fell today.",
    "A recipe for apple pie.", "Cats and dogs can be friends.", "Rain is expected tomorrow.",
]


class _ChatParams:
    @property
    def chat_model_class(self) -> type[ChatRetgen]:
        return ChatRetgen

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model_dir": str(tiny_model_path()), "seed": 0}

    # honest capability flags: RETGEN has no tool calling or structured output
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False


class TestChatRetgenUnit(_ChatParams, ChatModelUnitTests):
    pass


class TestChatRetgenIntegration(_ChatParams, ChatModelIntegrationTests):
    pass


class TestRetgenRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return RetgenRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        emb = RetgenEmbeddings(encoder=HashingEncoder(64))
        return {"vectorstore": RetgenVectorStore.from_texts(TEXTS, emb)}

    @property
    def retriever_query_example(self) -> str:
        return "cats and dogs"
