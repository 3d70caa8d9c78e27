"""LangChain's own conformance suite for vector stores (sync and async)."""
from __future__ import annotations

from typing import Generator

import pytest
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from retgen_integrations.langchain import RetgenVectorStore


class TestRetgenVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        store = RetgenVectorStore(embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.delete()
            assert len(store.store) == 0
