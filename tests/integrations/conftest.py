"""Shared fixtures: one tiny RETGEN model per session (hashing encoder, a few seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
from retgen_tiny_model import tiny_model_path

from retgen_engine import HashingEncoder, RetgenEngine

@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder(64)


# -- the document store on both backends (faiss in process; Milvus Lite, one database per
# session and one collection per store, dropped afterwards) -------------------------------
BACKENDS = ["faiss", "milvus"]


@pytest.fixture(scope="session")
def milvus_db(tmp_path_factory) -> str:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return str(tmp_path_factory.mktemp("milvus") / "retgen_test.db")


@pytest.fixture
def make_store(request):
    """``make_store(backend, **kwargs)``: a fresh empty DocumentStore on ``backend``."""
    made = []

    def make(backend: str = "faiss", **kwargs):
        from retgen_engine.docstore import DocumentStore

        if backend == "faiss":
            return DocumentStore(**kwargs)
        import uuid

        db = request.getfixturevalue("milvus_db")
        kwargs.setdefault("uri", db)
        kwargs.setdefault("collection", f"t_{uuid.uuid4().hex[:12]}")
        s = DocumentStore(backend="milvus", **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.clear()
