"""LangChain's standard retriever suite on a RetgenRetriever over the Milvus backend (the faiss
one runs in test_langchain_standard_models.py)."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from retgen_engine import HashingEncoder
from retgen_engine.docstore import DocumentStore
from retgen_integrations.langchain import RetgenEmbeddings, RetgenRetriever, RetgenVectorStore

TEXTS = [
    "The cat sat on the mat.", "Dogs are loyal animals.", "The stock market fell today.",
    "A recipe for apple pie.", "Cats and dogs can be friends.", "Rain is expected tomorrow.",
]


class TestRetgenRetrieverMilvusStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _db(self, milvus_db):
        type(self).db = milvus_db

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return RetgenRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        emb = RetgenEmbeddings(encoder=HashingEncoder(64))
        store = DocumentStore(backend="milvus", uri=self.db,
                              collection=f"r_{uuid.uuid4().hex[:12]}")
        return {"vectorstore": RetgenVectorStore.from_texts(TEXTS, emb, store=store)}

    @property
    def retriever_query_example(self) -> str:
        return "cats and dogs"
