"""Contract tests for the LlamaIndex adapters against real indexes (LlamaIndex has no
conformance suite). Our embedding and LLM are always passed explicitly (never OpenAI). The
vector-store tests run on both document store backends (faiss, Milvus Lite); the adapter
passes compiled predicates, so its Milvus store evaluates callables here
(``callable_filters="client"``)."""
from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import (NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo,
                                     TextNode)
from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,
                                                  MetadataFilters, VectorStoreQuery,
                                                  VectorStoreQueryMode)

from retgen_engine import HashingEncoder
from retgen_integrations.llama_index import (RetgenEmbedding, RetgenEnergyRerank, RetgenLLM,
                                             RetgenVectorStore)

TEXTS = [("the cat sat on the mat", {"kind": "pet", "year": 2001, "tags": ["a", "b"]}),
         ("the cat sat on a mat", {"kind": "pet", "year": 2002, "tags": ["b"]}),
         ("dogs chase the cat", {"kind": "pet", "year": 2010, "tags": []}),
         ("stocks fell sharply today", {"kind": "news", "year": 2020, "tags": ["c"]}),
         ("rain is expected tomorrow", {"kind": "news", "title": "Weather Report"})]


@pytest.fixture
def embed():
    return RetgenEmbedding(HashingEncoder(64))


@pytest.fixture(params=["faiss", "milvus"])
def backend(request):
    return request.param


@pytest.fixture
def new_store(backend, make_store):
    """``new_store()``: an empty adapter store on the test's backend."""
    def make():
        if backend == "faiss":
            return RetgenVectorStore()
        return RetgenVectorStore(store=make_store(backend, callable_filters="client"))
    return make


@pytest.fixture
def store(embed, new_store):
    s = new_store()
    nodes = [TextNode(id_=f"n{i}", text=t, metadata=md,
                      embedding=embed.get_text_embedding(t)) for i, (t, md) in enumerate(TEXTS)]
    for i, n in enumerate(nodes):
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 2}")
    assert s.add(nodes) == [f"n{i}" for i in range(5)]
    return s


def _q(embed, text, k=5, **kw):
    return VectorStoreQuery(query_embedding=embed.get_query_embedding(text), similarity_top_k=k,
                            **kw)


def _ids(res):
    return [n.node_id for n in res.nodes]


def _f(key, op, value):
    return MetadataFilters(filters=[MetadataFilter(key=key, operator=op, value=value)])


def test_query_returns_nodes_with_relevance(store, embed):
    res = store.query(_q(embed, "the cat sat on the mat", k=3))
    assert res.ids == _ids(res) and res.ids[0] == "n0"
    assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert res.similarities == sorted(res.similarities, reverse=True)
    assert res.nodes[0].get_content() == "the cat sat on the mat"
    assert res.nodes[0].metadata == TEXTS[0][1] and res.nodes[0].ref_doc_id == "doc0"
    assert len(store.query(_q(embed, "cat", k=50)).nodes) == 5


@pytest.mark.parametrize("op, key, value, expected", [
    (FilterOperator.EQ, "kind", "news", {"n3", "n4"}),
    (FilterOperator.NE, "kind", "news", {"n0", "n1", "n2"}),
    (FilterOperator.GT, "year", 2002, {"n2", "n3"}),
    (FilterOperator.GTE, "year", 2002, {"n1", "n2", "n3"}),
    (FilterOperator.LT, "year", 2002, {"n0"}),
    (FilterOperator.LTE, "year", 2002, {"n0", "n1"}),
    (FilterOperator.IN, "year", [2001, 2020], {"n0", "n3"}),
    (FilterOperator.NIN, "year", [2001, 2020], {"n1", "n2"}),
    (FilterOperator.TEXT_MATCH, "title", "Weather", {"n4"}),
    (FilterOperator.TEXT_MATCH, "title", "weather", set()),
    (FilterOperator.TEXT_MATCH_INSENSITIVE, "title", "weather", {"n4"}),
    (FilterOperator.CONTAINS, "tags", "b", {"n0", "n1"}),
    (FilterOperator.ANY, "tags", ["a", "c"], {"n0", "n3"}),
    (FilterOperator.ALL, "tags", ["a", "b"], {"n0"}),
    (FilterOperator.IS_EMPTY, "tags", None, {"n2", "n4"}),
    (FilterOperator.EQ, "color", "red", set()),
])
def test_filter_operators(store, embed, op, key, value, expected):
    assert set(store.query(_q(embed, "cat", filters=_f(key, op, value))).ids) == expected


def test_nested_filters_and_conditions(store, embed):
    pets_or_2020 = MetadataFilters(filters=[
        MetadataFilter(key="kind", value="pet"),
        MetadataFilters(filters=[MetadataFilter(key="year", value=2020),
                                 MetadataFilter(key="kind", value="news")],
                        condition=FilterCondition.AND)], condition=FilterCondition.OR)
    assert set(store.query(_q(embed, "cat", filters=pets_or_2020)).ids) == \
        {"n0", "n1", "n2", "n3"}
    not_pet = MetadataFilters(filters=[MetadataFilter(key="kind", value="pet")],
                              condition=FilterCondition.NOT)
    assert set(store.query(_q(embed, "cat", filters=not_pet)).ids) == {"n3", "n4"}


def test_doc_ids_node_ids_and_mmr(store, embed):
    assert set(store.query(_q(embed, "cat", doc_ids=["doc1"])).ids) == {"n1", "n3"}
    assert set(store.query(_q(embed, "cat", node_ids=["n4", "n2"])).ids) == {"n4", "n2"}
    assert store.query(_q(embed, "cat", node_ids=["n4"], doc_ids=["doc1"])).ids == []
    plain = store.query(_q(embed, "the cat sat on the mat", k=2)).ids
    mmr = store.query(_q(embed, "the cat sat on the mat", k=2, mode=VectorStoreQueryMode.MMR,
                         mmr_threshold=0.1)).ids
    assert plain == ["n0", "n1"] and mmr[0] == "n0" and mmr[1] != "n1"
    with pytest.raises(ValueError, match="query mode 'sparse' is not supported"):
        store.query(_q(embed, "cat", mode=VectorStoreQueryMode.SPARSE))
    with pytest.raises(ValueError, match="needs query.query_embedding"):
        store.query(VectorStoreQuery(query_str="cat"))


def test_get_delete_clear(store):
    assert [n.node_id for n in store.get_nodes(["n3", "zz", "n0"])] == ["n3", "n0"]
    assert len(store.get_nodes()) == 5
    assert {n.node_id for n in store.get_nodes(filters=_f("kind", FilterOperator.EQ,
                                                          "news"))} == {"n3", "n4"}
    store.delete("doc0")  # n0, n2, n4
    assert {n.node_id for n in store.get_nodes()} == {"n1", "n3"}
    store.delete("no-such-doc")
    store.delete_nodes(["n1", "unknown"])
    assert [n.node_id for n in store.get_nodes()] == ["n3"]
    store.delete_nodes(filters=_f("kind", FilterOperator.EQ, "pet"))
    assert len(store.get_nodes()) == 1
    store.clear()
    assert store.get_nodes() == []


async def test_async_variants(store, embed):
    res = await store.aquery(_q(embed, "stocks", k=1))
    assert res.ids == ["n3"]
    await store.adelete("doc1")
    await store.adelete_nodes(["n0"])
    assert {n.node_id for n in await store.aget_nodes()} == {"n2", "n4"}
    await store.async_add([TextNode(id_="x", text="x y", embedding=embed.get_text_embedding("x y"))])
    assert len(await store.aget_nodes(["x"])) == 1
    await store.aclear()
    assert await store.aget_nodes() == []


def test_add_rejects_nodes_without_embeddings():
    with pytest.raises(ValueError, match="nodes without an embedding: \\['bare'\\]"):
        RetgenVectorStore().add([TextNode(id_="bare", text="t")])


def _index(embed, new_store):
    docs = [Document(text=t, metadata=md, id_=f"doc{i}") for i, (t, md) in enumerate(TEXTS)]
    store = new_store()
    ctx = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=embed), store


def test_vector_store_index_round_trip(embed, tiny_model_dir, tmp_path, new_store):
    index, store = _index(embed, new_store)
    retriever = index.as_retriever(similarity_top_k=2)
    got = retriever.retrieve("stocks fell sharply")
    assert got[0].node.get_content() == "stocks fell sharply today"
    assert got[0].score > got[1].score and 0 <= got[1].score <= 1
    filtered = index.as_retriever(similarity_top_k=5, filters=_f("kind", FilterOperator.EQ,
                                                                  "news")).retrieve("cat")
    assert {n.node.metadata["kind"] for n in filtered} == {"news"}
    assert index.as_retriever(filters=_f("kind", FilterOperator.EQ, "x")).retrieve("cat") == []
    index.delete_ref_doc("doc3")
    assert all(n.node.ref_doc_id != "doc3" for n in index.as_retriever(
        similarity_top_k=5).retrieve("stocks"))
    # persistence through StorageContext and back with from_vector_store
    index.storage_context.persist(persist_dir=str(tmp_path / "p"))
    loaded = RetgenVectorStore.from_persist_dir(tmp_path / "p")
    again = VectorStoreIndex.from_vector_store(loaded, embed_model=embed)
    assert [n.node.node_id for n in again.as_retriever(similarity_top_k=3).retrieve("cat mat")] \
        == [n.node.node_id for n in index.as_retriever(similarity_top_k=3).retrieve("cat mat")]
    assert loaded.query(_q(embed, "x", filters=_f("kind", FilterOperator.EQ, "zzz"))).ids == []
    store.persist(str(tmp_path / "direct"))
    assert len(RetgenVectorStore.from_persist_path(tmp_path / "direct").get_nodes()) == 4
    # a query engine with our LLM (no OpenAI anywhere)
    llm = RetgenLLM(model_dir=str(tiny_model_dir), max_new_tokens=8, seed=0)
    qe = again.as_query_engine(llm=llm, similarity_top_k=2,
                               node_postprocessors=[RetgenEnergyRerank(embed_model=embed,
                                                                       top_n=1)])
    resp = qe.query("cat")
    assert isinstance(resp.response, str) and len(resp.source_nodes) == 1
    assert "retgen_energy" in resp.source_nodes[0].node.metadata


def test_energy_rerank(embed):
    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t, metadata={"kind": md["kind"]},
                                         excluded_embed_metadata_keys=["kind"]), score=0.0)
             for i, (t, md) in enumerate(TEXTS)]
    rr = RetgenEnergyRerank(embed_model=embed, top_n=2, w_div=10.0)
    out = rr.postprocess_nodes(list(reversed(nodes)), QueryBundle("the cat sat on the mat"))
    assert [n.node.node_id for n in out][0] == "n0" and out[1].node.node_id != "n1"
    assert out[0].score == pytest.approx(1.0, abs=1e-5)
    meta = out[0].node.metadata
    assert meta["retgen_energy"] <= out[1].node.metadata["retgen_energy"]
    assert "retgen_energy" in out[0].node.excluded_llm_metadata_keys
    assert "retgen_energy" not in nodes[0].node.metadata  # inputs untouched
    assert rr.postprocess_nodes([], QueryBundle("x")) == []


def test_llm_complete_stream_and_metadata(tiny_model_dir):
    llm = RetgenLLM(model_dir=str(tiny_model_dir), max_new_tokens=10, seed=4, model_name="tiny")
    md = llm.metadata
    assert (md.is_chat_model, md.num_output, md.model_name, md.context_window) == \
        (False, 10, "tiny", 2048)
    r = llm.complete("The city")
    assert r.text and len(r.additional_kwargs["retgen_trace"]) == 10
    assert r.additional_kwargs["prompt_tokens"] == llm.count_tokens("The city") == 2
    parts = list(llm.stream_complete("The city"))
    assert len(parts) == 11 and parts[-1].text == r.text
    assert "".join(p.delta for p in parts) == r.text
    assert parts[0].additional_kwargs["retgen_token"]["trace"]
    word = r.text.split()[1]
    stopped = llm.complete("The city", stop=[word])
    assert word not in stopped.text and stopped.additional_kwargs["finish_reason"] == "stop"
    chat = llm.chat([ChatMessage(role="user", content="The city")])
    assert isinstance(chat.message.content, str)


def test_embedding(embed):
    v = np.array(embed.get_text_embedding_batch(["a b", "c"]))
    assert v.shape == (2, 64) and np.allclose(np.linalg.norm(v, axis=1), 1)
    assert embed.model_name == "hashing:64"
    with pytest.raises(TypeError, match="retgen_engine.Encoder"):
        RetgenEmbedding("minilm")
