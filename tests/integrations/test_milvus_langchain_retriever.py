"""LangChain's standard retriever suite on a RetgenRetriever over the Milvus backend: the faiss
suite of test_langchain_standard_models.py with the store on Milvus Lite."""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from retgen_engine import HashingEncoder
from retgen_engine.docstore import DocumentStore
from retgen_integrations.langchain import RetgenEmbeddings, RetgenVectorStore
from test_langchain_standard_models import TEXTS
from test_langchain_standard_models import TestRetgenRetrieverStandard as _FaissSuite


class TestRetgenRetrieverMilvusStandard(_FaissSuite):
    @pytest.fixture(autouse=True)
    def _db(self, milvus_db):
        type(self).db = milvus_db

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        emb = RetgenEmbeddings(encoder=HashingEncoder(64))
        store = DocumentStore(backend="milvus", uri=self.db,
                              collection=f"r_{uuid.uuid4().hex[:12]}")
        return {"vectorstore": RetgenVectorStore.from_texts(TEXTS, emb, store=store)}
