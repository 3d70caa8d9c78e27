"""LangChain's own conformance suite for vector stores (sync and async), on both document
store backends (faiss in process, Milvus Lite), parametrized as langchain-chroma's
test_standard.py parametrizes its fixtures."""
from __future__ import annotations

from typing import Generator

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from retgen_integrations.langchain import RetgenVectorStore

BACKENDS = ["faiss", "milvus"]


class TestRetgenVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture(params=BACKENDS)
    def vectorstore(self, request, make_store  # type: ignore[override]
                    ) -> Generator[VectorStore, None, None]:
        store = (RetgenVectorStore(embedding=self.get_embeddings()) if request.param == "faiss"
                 else RetgenVectorStore(self.get_embeddings(), make_store(request.param)))
        try:
            yield store
        finally:
            store.delete()
            assert len(store.store) == 0
