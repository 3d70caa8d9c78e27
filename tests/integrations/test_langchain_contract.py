"""RETGEN's LangChain adapters beyond the standard suites: filters, scores, MMR, persistence,
energy metadata, streaming traces, usage, stop sequences and token counting. The vector-store
tests run on both document store backends (faiss, Milvus Lite)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage

from retgen_engine import HashingEncoder
from retgen_engine.persist.commit import resolve as live
from retgen_engine.docstore import CallableFilterError
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenEnergyCompressor,
                                           RetgenLLM, RetgenRetriever, RetgenVectorStore)

DOCS = [
    Document(page_content="the cat sat on the mat", metadata={"kind": "pet", "year": 2001}),
    Document(page_content="the cat sat on a mat", metadata={"kind": "pet", "year": 2002}),
    Document(page_content="dogs chase the cat", metadata={"kind": "pet", "year": 2010}),
    Document(page_content="stocks fell sharply today", metadata={"kind": "news", "year": 2020}),
    Document(page_content="rain is expected tomorrow", metadata={"kind": "news"}),
]


@pytest.fixture
def emb():
    return RetgenEmbeddings(encoder=HashingEncoder(64))


@pytest.fixture(params=["faiss", "milvus"])
def vs(request, emb, make_store):
    kw = {} if request.param == "faiss" else {"store": make_store(request.param)}
    return RetgenVectorStore.from_documents(DOCS, emb, ids=[f"id{i}" for i in range(5)], **kw)


def _backend(vs) -> str:
    return getattr(vs.store, "backend", "faiss")


def test_embeddings_are_unit_vectors(emb):
    v = np.array(emb.embed_documents(["a b", "c"]))
    assert v.shape == (2, 64) and np.allclose(np.linalg.norm(v, axis=1), 1)
    assert np.allclose(emb.embed_query("a b"), v[0])
    with pytest.raises(TypeError, match="retgen_engine.Encoder"):
        RetgenEmbeddings(encoder="minilm")


def test_relevance_scores_follow_the_one_convention(vs, emb):
    res = vs.similarity_search_with_score("the cat sat on the mat", k=5)
    assert res[0][0].id == "id0" and res[0][1] == pytest.approx(1.0, abs=1e-5)
    q = np.array(emb.embed_query("the cat sat on the mat"))
    for doc, score in res:
        cos = float(np.array(emb.embed_query(doc.page_content)) @ q)
        assert score == pytest.approx((1 + cos) / 2, abs=1e-5)
    rel = vs.similarity_search_with_relevance_scores("the cat sat on the mat", k=5)
    assert [s for _, s in rel] == [s for _, s in res]
    thr = vs.similarity_search_with_relevance_scores("the cat sat on the mat", k=5,
                                                     score_threshold=0.9)
    assert 1 <= len(thr) < 5 and all(s >= 0.9 for _, s in thr)


def test_filters(vs):
    assert {d.id for d in vs.similarity_search("cat", k=5, filter={"kind": "news"})} == \
        {"id3", "id4"}
    got = vs.similarity_search("cat", k=5, filter={"year": {"$gte": 2002, "$lt": 2020}})
    assert {d.id for d in got} == {"id1", "id2"}
    got = vs.similarity_search("cat", k=5, filter={"$or": [{"year": 2001}, {"kind": "news"}]})
    assert {d.id for d in got} == {"id0", "id3", "id4"}
    got = vs.similarity_search("cat", k=5, filter={"$not": {"kind": "pet"}})
    assert {d.id for d in got} == {"id3", "id4"}
    if _backend(vs) == "faiss":
        got = vs.similarity_search("cat", k=5, filter=lambda md: "year" not in md)
    else:  # Milvus evaluates filters in the engine: no callables, the dict form instead
        with pytest.raises(CallableFilterError, match="cannot run inside Milvus"):
            vs.similarity_search("cat", k=5, filter=lambda md: "year" not in md)
        got = vs.similarity_search("cat", k=5, filter={"year": {"$empty": True}})
    assert [d.id for d in got] == ["id4"]
    assert vs.similarity_search("cat", k=5, filter={"year": {"$nin": [2001]}, "kind": "news"}) \
        == [Document(id="id3", page_content="stocks fell sharply today",
                     metadata={"kind": "news", "year": 2020})]
    assert vs.similarity_search("cat", k=3, filter={"color": "red"}) == []
    with pytest.raises(ValueError, match="unknown filter operator '\\$contains'"):
        vs.similarity_search("cat", filter={"kind": {"$contains": "p"}})


def test_search_by_vector_and_mmr(vs, emb):
    q = emb.embed_query("the cat sat on the mat")
    assert vs.similarity_search_by_vector(q, k=1)[0].id == "id0"
    plain = [d.id for d in vs.similarity_search("the cat sat on the mat", k=2)]
    mmr = [d.id for d in vs.max_marginal_relevance_search("the cat sat on the mat", k=2,
                                                          fetch_k=5, lambda_mult=0.1)]
    assert plain == ["id0", "id1"] and mmr[0] == "id0" and mmr[1] != "id1"
    assert len(vs.max_marginal_relevance_search("cat", k=2, filter={"kind": "news"})) == 2


async def test_async_paths(vs):
    docs = await vs.asimilarity_search("stocks fell", k=1, filter={"kind": "news"})
    assert docs[0].id == "id3"
    await vs.adelete(["id3"])
    assert await vs.aget_by_ids(["id3"]) == []
    mmr = await vs.amax_marginal_relevance_search("cat", k=2)
    assert len(mmr) == 2


def test_bad_input(vs, emb):
    with pytest.raises(ValueError, match="query is empty"):
        vs.similarity_search("   ")
    with pytest.raises(TypeError, match="id 0 is 7 \\(int\\); ids must be strings"):
        vs.add_texts(["x"], ids=[7])
    with pytest.raises(ValueError, match="embedding dimension mismatch"):
        vs.similarity_search_by_vector([0.1] * 8)
    other = RetgenEmbeddings(encoder=HashingEncoder(32))
    with pytest.raises(ValueError, match="have dimension 32, the store holds dimension 64"):
        RetgenVectorStore(other, vs.store).add_texts(["x"])
    assert len(vs.similarity_search("cat", k=100)) == 5
    vs.delete(["nope", "id0"])  # unknown ids are ignored
    assert len(vs.store) == 4


def test_save_and_load_local_without_pickle(vs, emb, tmp_path):
    path = live(vs.save_local(tmp_path / "lc"))  # the committed version's files
    names = sorted(p.name for p in path.iterdir())
    assert names == (["docs.sqlite", "index.faiss", "int_ids.npy", "manifest.json",
                      "vectors.npy"] if _backend(vs) == "faiss" else
                     ["manifest.json"])  # Milvus owns the data (its database beside the versions)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["extra"]["embedding"]["name"] == "hashing:64"
    loaded = RetgenVectorStore.load_local(tmp_path / "lc", emb)
    assert loaded.similarity_search_with_score("rain tomorrow", k=2) == \
        vs.similarity_search_with_score("rain tomorrow", k=2)
    assert loaded.get_by_ids(["id2"]) == vs.get_by_ids(["id2"])
    loaded.add_documents([Document(page_content="new one")], ids=["id9"])
    assert loaded.get_by_ids(["id9"])[0].page_content == "new one"


@pytest.mark.parametrize("search_type", ["energy", "similarity", "mmr"])
def test_retriever_metadata(vs, search_type):
    r = RetgenRetriever(vectorstore=vs, k=3, search_type=search_type)
    docs = r.invoke("the cat sat on the mat")
    assert len(docs) == 3 and docs[0].id == "id0"
    for d in docs:
        assert 0 <= d.metadata["score"] <= 1 and "kind" in d.metadata
        if search_type == "energy":
            assert isinstance(d.metadata["energy"], float) and 0 < d.metadata["weight"] <= 1
        else:
            assert d.metadata["energy"] is None
    assert vs.store.get(["id0"])[0].metadata == {"kind": "pet", "year": 2001}  # not mutated
    assert all(d.metadata["kind"] == "news" for d in r.invoke("cat", filter={"kind": "news"}))


def test_energy_retriever_demotes_near_duplicates(vs):
    sim = RetgenRetriever(vectorstore=vs, k=2, search_type="similarity")
    energy = RetgenRetriever(vectorstore=vs, k=2, search_type="energy", w_div=10.0)
    assert [d.id for d in sim.invoke("the cat sat on the mat")] == ["id0", "id1"]
    assert [d.id for d in energy.invoke("the cat sat on the mat")][1] != "id1"


def test_energy_compressor_over_any_documents(emb):
    comp = RetgenEnergyCompressor(embeddings=emb, top_n=2)
    docs = [Document(page_content=d.page_content, metadata=dict(d.metadata)) for d in DOCS]
    out = comp.compress_documents(list(reversed(docs)), "stocks fell today")
    assert len(out) == 2 and out[0].page_content == "stocks fell sharply today"
    assert all({"score", "energy", "weight"} <= set(d.metadata) for d in out)
    assert out[0].metadata["energy"] <= out[1].metadata["energy"]
    prior = [Document(page_content="rain is expected tomorrow", metadata={"freq": 1000})]
    boosted = RetgenEnergyCompressor(embeddings=emb, top_n=1, w_freq=-1.0)
    assert boosted.compress_documents(docs[:3] + prior, "stocks fell")[0].metadata["freq"] == 1000
    assert comp.compress_documents([], "x") == []


def test_chat_invoke_usage_and_trace(tiny_model_dir):
    chat = ChatRetgen(model_dir=str(tiny_model_dir), max_tokens=12, seed=1)
    msg = chat.invoke([SystemMessage("history"), HumanMessage("The city of")])
    assert msg.content and msg.usage_metadata["output_tokens"] == 12
    assert msg.usage_metadata["input_tokens"] == chat.get_num_tokens("history\nThe city of")
    trace = msg.response_metadata["retgen_trace"]
    assert len(trace) == 12 and "".join(t["text"] for t in trace) == msg.content
    assert all(t["trace"] and t["trace"][0]["document"] for t in trace)
    assert msg.response_metadata["finish_reason"] == "length"


def test_chat_streams_token_by_token(tiny_engine):
    chat = ChatRetgen(engine=tiny_engine, max_tokens=8, seed=3)
    chunks = list(chat.stream("The game"))
    assert len(chunks) == 9 and chunks[-1].chunk_position == "last"
    assert all(len(c.response_metadata["retgen_trace"]) == 1 for c in chunks[:-1])
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert isinstance(full, AIMessageChunk)
    assert full.usage_metadata["output_tokens"] == 8
    assert full.content == chat.invoke("The game").content  # same seed: same text


def test_chat_stop_sequences_and_batch(tiny_engine):
    chat = ChatRetgen(engine=tiny_engine, max_tokens=40, seed=0)
    free = chat.invoke("The").content
    word = free.split()[2]
    stopped = chat.invoke("The", stop=[word])
    assert word not in stopped.content and stopped.response_metadata["finish_reason"] == "stop"
    streamed = list(chat.stream("The", stop=[word]))
    assert streamed[-1].response_metadata["finish_reason"] == "stop"
    assert "".join(c.content for c in streamed) == stopped.content
    outs = chat.batch(["The", "A"], max_tokens=5)
    assert len(outs) == 2 and all(o.usage_metadata["output_tokens"] == 5 for o in outs)


def test_get_num_tokens_uses_the_engine_tokenizer(tiny_engine):
    chat = ChatRetgen(engine=tiny_engine)
    text = "The cat , the dog ."
    assert chat.get_num_tokens(text) == len(tiny_engine.tokenizer.split(text)) > 0
    assert RetgenLLM(engine=tiny_engine).get_num_tokens(text) == chat.get_num_tokens(text)


def test_chat_needs_a_model():
    with pytest.raises(ValueError, match="give either model_dir"):
        ChatRetgen().invoke("x")
    with pytest.raises(TypeError, match="engine must be a RetgenEngine"):
        ChatRetgen(engine="nope").invoke("x")


def test_llm_invoke_stream_batch(tiny_model_dir):
    llm = RetgenLLM(model_dir=str(tiny_model_dir), max_tokens=6, seed=2)
    text = llm.invoke("The river")
    chunks = list(llm.stream("The river"))
    assert "".join(chunks) == text and len(chunks) == 7
    res = llm.generate(["The river", "A"])
    assert res.llm_output["token_usage"]["completion_tokens"] == 12
    info = res.generations[0][0].generation_info
    assert len(info["retgen_trace"]) == 6 and info["finish_reason"] == "length"
    assert llm.batch(["A", "B"], max_tokens=3) and llm._llm_type == "retgen"


def test_budget_reaches_the_engine(tiny_engine):
    # the per-call retrieval budget (the policy's skip stage) is forwarded to the engine: this
    # model has no trained policy, so the engine refuses it by name
    with pytest.raises(ValueError, match="budget=0.5 needs the learned policy"):
        ChatRetgen(engine=tiny_engine, max_tokens=4, budget=0.5).invoke("the cat")
    with pytest.raises(ValueError, match="budget=0.5 needs the learned policy"):
        RetgenLLM(engine=tiny_engine, max_tokens=4).invoke("the cat", budget=0.5)
    with pytest.raises(ValueError):
        ChatRetgen(engine=tiny_engine, budget=1.5)
