"""RetgenRetriever is a LangChain VectorStoreRetriever with an "energy" search type: fields and
search_kwargs, per-call overrides (sync and async), scores for every search type."""
from __future__ import annotations

import pytest
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import ValidationError

from retgen_engine import HashingEncoder
from retgen_engine.search.energy import EnergyModel
from retgen_integrations.langchain import RetgenEmbeddings, RetgenRetriever, RetgenVectorStore

TEXTS = [f"doc {i} about {a} and {b}" for i, (a, b) in enumerate(
    (a, b) for a in ["cats", "dogs", "stocks", "rain", "ships"] for b in ["mats", "news", "war"])]
SEARCH_TYPES = ["energy", "similarity", "mmr"]


@pytest.fixture
def vs():
    return RetgenVectorStore.from_texts(
        TEXTS, RetgenEmbeddings(encoder=HashingEncoder(64)),
        metadatas=[{"i": i, "g": i % 3, "freq": i % 4} for i in range(len(TEXTS))],
        ids=[f"id{i}" for i in range(len(TEXTS))])


def ids(docs):
    return [d.id for d in docs]


def test_is_a_vector_store_retriever_with_energy(vs):
    r = RetgenRetriever(vectorstore=vs)
    assert isinstance(r, VectorStoreRetriever) and r.search_type == "energy"
    assert set(RetgenRetriever.allowed_search_types) == {
        *VectorStoreRetriever.allowed_search_types, "energy"}
    with pytest.raises(ValidationError, match="search_type of bogus not allowed"):
        RetgenRetriever(vectorstore=vs, search_type="bogus")


def test_energy_is_the_store_energy_search(vs):
    r = RetgenRetriever(vectorstore=vs, k=3, fetch_k=8, w_div=2.0, w_freq=-0.3, tau=0.2)
    hits = vs.search_with_energy("cats news", 3, 8, None, EnergyModel(1.0, 2.0, -0.3), 0.2)
    docs = r.invoke("cats news")
    assert ids(docs) == [h.id for h in hits]
    for d, h in zip(docs, hits):
        assert d.metadata == {**h.metadata, "score": h.score, "energy": h.energy,
                              "weight": h.weight}


def test_similarity_and_mmr_scores_are_relevances(vs):
    rel = dict((d.id, s) for d, s in vs.similarity_search_with_score("ships war", k=15))
    sim = RetgenRetriever(vectorstore=vs, k=4, search_type="similarity").invoke("ships war")
    assert ids(sim) == ids(vs.similarity_search("ships war", k=4))
    mmr = RetgenRetriever(vectorstore=vs, k=4, fetch_k=10, lambda_mult=0.2,
                          search_type="mmr").invoke("ships war")
    assert ids(mmr) == ids(vs.max_marginal_relevance_search("ships war", 4, 10, 0.2))
    for d in sim + mmr:
        assert d.metadata["score"] == rel[d.id]
        assert d.metadata["energy"] is None and d.metadata["weight"] is None


def test_search_kwargs_same_as_fields(vs):
    params = {"k": 2, "fetch_k": 6, "filter": {"g": 1}, "lambda_mult": 0.3, "w_div": 3.0}
    for st in SEARCH_TYPES:
        a = RetgenRetriever(vectorstore=vs, search_type=st, **params).invoke("dogs mats")
        b = RetgenRetriever(vectorstore=vs, search_type=st,
                            search_kwargs=params).invoke("dogs mats")
        assert a == b and len(a) == 2 and all(d.metadata["g"] == 1 for d in a)
    with pytest.raises(ValidationError, match="given both as fields and in search_kwargs"):
        RetgenRetriever(vectorstore=vs, k=2, search_kwargs={"k": 3})
    assert RetgenRetriever(vectorstore=vs, k=2, search_kwargs={"k": 2}).k == 2
    with pytest.raises(ValidationError, match="unknown search_kwargs \\['top_k'\\]"):
        RetgenRetriever(vectorstore=vs, search_kwargs={"top_k": 3})


@pytest.mark.parametrize("search_type", SEARCH_TYPES)
async def test_per_call_overrides_sync_and_async(vs, search_type):
    r = RetgenRetriever(vectorstore=vs, k=4, search_type=search_type)
    assert len(r.invoke("rain")) == 4 and len(r.invoke("rain", k=None)) == 4
    two = r.invoke("rain", k=2, filter={"g": 2})
    assert len(two) == 2 and all(d.metadata["g"] == 2 for d in two)
    assert await r.ainvoke("rain", k=2, filter={"g": 2}) == two
    assert await r.ainvoke("rain") == r.invoke("rain")
    assert r.invoke("rain", k=2, filter={"g": 2}) == RetgenRetriever(
        vectorstore=vs, k=2, filter={"g": 2}, search_type=search_type).invoke("rain")


def test_score_threshold_search_type(vs):
    with pytest.raises(ValidationError, match="score_threshold"):
        RetgenRetriever(vectorstore=vs, search_type="similarity_score_threshold")
    r = RetgenRetriever(vectorstore=vs, k=15, search_type="similarity_score_threshold",
                        search_kwargs={"score_threshold": 0.75})
    docs = r.invoke("doc 0 about cats and mats")
    assert 1 <= len(docs) < 15 and all(d.metadata["score"] >= 0.75 for d in docs)
    assert len(r.invoke("doc 0 about cats and mats", score_threshold=0.9)) < len(docs)


def test_bad_queries_raise_like_the_store(vs):
    for st in SEARCH_TYPES:
        with pytest.raises(ValueError, match="query is empty"):
            RetgenRetriever(vectorstore=vs, search_type=st).invoke("  ")
