"""The LLM adapters' document memory (``memory=<the framework's RETGEN vector store>``):
what a framework adds to its vector store, the generator copies from and traces; what it
deletes leaves no trace and no probability; incompatible stores are refused; persistence
keeps the memory's metadata. Over LangChain's chat model and LLM and LlamaIndex's LLM.

The tiny test model (word level, hashing encoder) knows none of the made-up words below, so a
greedy continuation of the phrase can only come from the memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core import Document, StorageContext, VectorStoreIndex
from pydantic import ValidationError

from retgen_engine import HashingEncoder, RetgenEngine
from retgen_engine.checks import ArgumentError
from retgen_engine.docstore import DocumentStore
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenLLM,
                                           RetgenVectorStore)
from retgen_integrations.llama_index import RetgenEmbedding
from retgen_integrations.llama_index import RetgenLLM as LIRetgenLLM
from retgen_integrations.llama_index import RetgenVectorStore as LIRetgenVectorStore

WORDS = ("zorblax quintar flemmed vantic oskarine pelumbra trisk gandolo "
         "miravesh tellurine obbly sprenk").split()
PHRASE = " ".join(WORDS)
PREFIX = " ".join(WORDS[:8])          # >= the memory's refresh interval (8 tokens)
CONTINUATION = " " + " ".join(WORDS[8:11])
# the phrase three times: its histories occur 3 times, enough for greedy decoding to prefer
# the memory's continuation over the back-off's best guess by a clear margin (about 1.3x)
DOC_TEXT = " . ".join([PHRASE] * 3) + " ."
DOC_ID = "doc-zorblax"
OTHERS = {"doc-cat": "The cat sat on the mat .", "doc-dog": "Dogs are loyal animals .",
          "doc-market": "The stock market fell today ."}


# -- one small driver per adapter: the same operations through each framework's own API ------
class _Chunks(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        self.seen.append(chunk)


class LangChainDriver:
    def __init__(self, llm_class: type, engine: RetgenEngine,
                 embedding: Optional[Any] = None) -> None:
        self.llm_class = llm_class
        self.vs = RetgenVectorStore(embedding or RetgenEmbeddings(encoder=engine.encoder))

    @property
    def store(self) -> DocumentStore:
        return self.vs.store

    def add(self, doc_id: str, text: str) -> None:
        assert self.vs.add_texts([text], ids=[doc_id]) == [doc_id]

    def delete(self, doc_id: str) -> None:
        self.vs.delete([doc_id])

    def llm(self, **kw: Any) -> Any:
        return self.llm_class(memory=self.vs, max_tokens=3, top_k=1, **kw)

    def generate(self, llm: Any, prompt: str, **kw: Any) -> tuple[str, list[dict]]:
        if self.llm_class is ChatRetgen:
            msg = llm.invoke(prompt, **kw)
            return msg.content, msg.response_metadata["retgen_trace"]
        gen = llm.generate([prompt], **kw).generations[0][0]
        return gen.text, gen.generation_info["retgen_trace"]

    def stream(self, llm: Any, prompt: str, **kw: Any) -> tuple[str, list[dict]]:
        text, trace = "", []
        if self.llm_class is ChatRetgen:
            for chunk in llm.stream(prompt, **kw):
                text += chunk.content
                trace += chunk.response_metadata.get("retgen_trace", [])
            return text, trace
        # LLM.stream yields text; each chunk's trace reaches the callbacks with the chunk
        chunks = _Chunks()
        text = "".join(llm.stream(prompt, config={"callbacks": [chunks]}, **kw))
        return text, [t for c in chunks.seen for t in c.generation_info.get("retgen_trace", [])]

    def persist(self, path: Path) -> None:
        self.vs.save_local(path)

    def reload(self, path: Path) -> Any:
        return RetgenVectorStore.load_local(path, self.vs.embedding)

    def passage_ids(self, doc_id: str) -> set[str]:
        return {r.id for r in self.store.get([doc_id])}


class LlamaIndexDriver:
    llm_class = LIRetgenLLM

    def __init__(self, engine: RetgenEngine, embed_model: Optional[Any] = None) -> None:
        self.vs = LIRetgenVectorStore()
        self.index = VectorStoreIndex(
            [], storage_context=StorageContext.from_defaults(vector_store=self.vs),
            embed_model=embed_model or RetgenEmbedding(engine.encoder))

    @property
    def store(self) -> DocumentStore:
        return self.vs.client

    def add(self, doc_id: str, text: str) -> None:
        self.index.insert(Document(text=text, id_=doc_id))

    def delete(self, doc_id: str) -> None:
        self.index.delete_ref_doc(doc_id)

    def llm(self, **kw: Any) -> Any:
        return LIRetgenLLM(memory=self.vs, max_new_tokens=3, top_k=1, **kw)

    def generate(self, llm: Any, prompt: str, **kw: Any) -> tuple[str, list[dict]]:
        r = llm.complete(prompt, **kw)
        return r.text, r.additional_kwargs["retgen_trace"]

    def stream(self, llm: Any, prompt: str, **kw: Any) -> tuple[str, list[dict]]:
        parts = list(llm.stream_complete(prompt, **kw))
        trace = [p.additional_kwargs["retgen_token"] for p in parts
                 if "retgen_token" in p.additional_kwargs]
        assert parts[-1].additional_kwargs["retgen_trace"] == trace
        return parts[-1].text, trace

    def persist(self, path: Path) -> None:
        self.vs.persist(str(path))

    def reload(self, path: Path) -> Any:
        return LIRetgenVectorStore.from_persist_path(path)

    def passage_ids(self, doc_id: str) -> set[str]:
        return {r.id for r in self.store.where({"ref_doc_id": doc_id})}


FRAMEWORKS = ["langchain-chat", "langchain-llm", "llama_index"]


def make_driver(framework: str, engine: RetgenEngine, **kw: Any) -> Any:
    if framework == "llama_index":
        return LlamaIndexDriver(engine, **kw)
    return LangChainDriver(ChatRetgen if framework == "langchain-chat" else RetgenLLM, engine,
                           **kw)


@pytest.fixture
def engine(tiny_model_dir) -> RetgenEngine:
    """An engine of its own per test (the memory and the vocabulary are engine state)."""
    return RetgenEngine.load(tiny_model_dir)


@pytest.fixture(params=FRAMEWORKS)
def fw(request, engine):
    d = make_driver(request.param, engine)
    for doc_id, text in OTHERS.items():
        d.add(doc_id, text)
    return d


def passage_entries(trace: list[dict]) -> list[dict]:
    return [e for t in trace for e in t["trace"] if e["kind"] == "passage"]


def from_doc(trace: list[dict], fw, doc_id: str) -> list[dict]:
    ids = fw.passage_ids(doc_id)
    return [e for e in passage_entries(trace) if e["document"] == doc_id or e["passage"] in ids]


# -- what the framework adds is copied and traced -------------------------------------------
def test_added_document_is_copied_with_passage_traces(fw, engine):
    llm = fw.llm(engine=engine)
    assert engine.memory.store is fw.store  # bound when made: the store the framework reads
    fw.add(DOC_ID, DOC_TEXT)  # after the LLM was made: read at the next call
    text, trace = fw.generate(llm, PREFIX)
    assert text == CONTINUATION
    assert len(trace) == 3
    ids = fw.passage_ids(DOC_ID)
    assert ids
    for tok in trace:  # every copied token names the passage and document it came from
        mine = [e for e in tok["trace"] if e["kind"] == "passage" and e["passage"] in ids]
        assert mine and mine[0]["document"] == DOC_ID, tok
        assert tok["token"] in mine[0]["snippet"] and 0 < mine[0]["weight"] <= 1
    # the same call with the memory left out: not the phrase, no passage in any trace
    text0, trace0 = fw.generate(llm, PREFIX, memory=False)
    assert text0 != CONTINUATION and not passage_entries(trace0)


def test_streamed_tokens_carry_passage_traces(fw, engine):
    fw.add(DOC_ID, DOC_TEXT)
    llm = fw.llm(engine=engine)
    text, trace = fw.stream(llm, PREFIX)
    assert text == CONTINUATION and len(trace) == 3
    assert all(from_doc([t], fw, DOC_ID) for t in trace)


# -- what the framework deletes is gone -------------------------------------------------------
@pytest.mark.parametrize("keys", ["lexical", "dense"])
def test_deleted_document_leaves_no_trace_and_no_probability(fw, engine, keys):
    llm = fw.llm(engine=engine, memory_keys=keys)
    params = engine.retrieval_params(memory_keys=keys)
    kn_before = engine.lm.backoff_for(params)  # the back-off counting the other documents only
    fw.add(DOC_ID, DOC_TEXT)
    text, trace = fw.generate(llm, PREFIX)
    assert text == CONTINUATION and from_doc(trace, fw, DOC_ID)
    nxt = engine.vocab.ids([WORDS[8]])[0]
    with_doc = engine.next_token_logprobs(PREFIX, memory_keys=keys)
    base = engine.next_token_logprobs(PREFIX, memory=False)
    assert np.exp(with_doc[nxt]) > 10 * np.exp(base[nxt])  # new words share p(<unk>) in the base

    fw.delete(DOC_ID)
    assert not fw.passage_ids(DOC_ID) and len(engine.memory) == len(OTHERS)
    text, trace = fw.generate(llm, PREFIX)
    assert text != CONTINUATION and not from_doc(trace, fw, DOC_ID)
    after = engine.next_token_logprobs(PREFIX, memory_keys=keys)
    assert np.isclose(np.exp(after).sum(), 1.0)
    # the back-off counts the other added documents again, not this one (lm/live_backoff.py)
    hist = [engine.vocab.eos_id] + engine.tokenizer.encode(PREFIX)
    bh = [t if t < engine.backoff.V else 0 for t in hist]
    assert np.array_equal(engine.lm.backoff_for(params).distribution(bh),
                          kn_before.distribution(bh))
    if keys == "lexical":  # no other document shares a word with the prefix: nothing is found
        lp, info = engine.lm.next_token_logprobs(hist, params)
        np.testing.assert_allclose(lp, after, rtol=0, atol=1e-12)
        assert info.lam_mem == 0.0
    else:  # dense keys always find the nearest documents, which hold none of the phrase
        assert passage_entries(trace)
        for w in WORDS[8:]:
            i = engine.vocab.ids([w])[0]
            assert after[i] <= base[i] + 1e-12


# -- parameters pass through like the sampling parameters -------------------------------------
@pytest.mark.parametrize("per_call", [False, True])
def test_memory_settings_pass_through(fw, engine, per_call):
    """A prompt shorter than the refresh interval (8 tokens, with the line break generation
    starts after) makes no memory query before its first token; memory_refresh=1 queries at
    every token, so the phrase is copied."""
    fw.add(DOC_ID, DOC_TEXT)
    short = " ".join(WORDS[2:8])
    text, _ = fw.generate(fw.llm(engine=engine), short)
    assert not text.startswith(" " + WORDS[8])
    if per_call:
        text, trace = fw.generate(fw.llm(engine=engine), short, memory_refresh=1)
    else:
        text, trace = fw.generate(fw.llm(engine=engine, memory_refresh=1), short)
    assert text == CONTINUATION and from_doc(trace, fw, DOC_ID)
    with pytest.raises(ValueError, match="memory_keys"):
        fw.generate(fw.llm(engine=engine), PREFIX, memory_keys="bogus")
    with pytest.raises(ArgumentError, match="per call, memory is True or False"):
        fw.generate(fw.llm(engine=engine), PREFIX, memory=fw.vs)


def test_memory_fields_are_validated(engine):
    d = make_driver("langchain-chat", engine)
    with pytest.raises(ValidationError, match="memory_k"):
        ChatRetgen(engine=engine, memory=d.vs, memory_k=0)
    with pytest.raises(ValidationError, match="memory_keys"):
        LIRetgenLLM(engine=engine, memory_keys="bm42")


# -- incompatible stores are refused, clearly --------------------------------------------------
class OtherEncoder(HashingEncoder):
    """Same dimension as the model's encoder, another model."""

    def __init__(self) -> None:
        super().__init__(64)
        self.name = "other-encoder"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrong_embedding_dimension_is_refused(engine, framework):
    enc = HashingEncoder(32)
    d = make_driver(framework, engine, **({"embed_model": RetgenEmbedding(enc)}
                                          if framework == "llama_index" else
                                          {"embedding": RetgenEmbeddings(encoder=enc)}))
    d.add(DOC_ID, DOC_TEXT)
    with pytest.raises(ValueError) as err:
        d.llm(engine=engine)
    msg = str(err.value)
    assert "dim 32" in msg and "'hashing:64' (dim 64)" in msg, msg
    assert engine.memory.store is not d.store  # nothing was bound


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_wrong_dimension_added_later_is_refused_at_the_call(engine, framework):
    """An empty store (with embeddings that do not tell their model) gives no dimension to
    check; the first call after 32-dimensional vectors arrived is refused."""
    emb = {"embed_model": RetgenEmbedding(HashingEncoder(32))} if framework == "llama_index" \
        else {"embedding": DeterministicFakeEmbedding(size=32)}
    d = make_driver(framework, engine, **emb)
    llm = d.llm(engine=engine)
    d.add(DOC_ID, DOC_TEXT)
    with pytest.raises(ValueError, match=r"dim 32.*'hashing:64' \(dim 64\)"):
        d.generate(llm, PREFIX)


def test_same_dimension_other_encoder_is_refused(engine):
    d = make_driver("langchain-chat", engine,
                    embedding=RetgenEmbeddings(encoder=OtherEncoder()))
    with pytest.raises(ValueError, match=r"name 'other-encoder', dim 64.*'hashing:64' \(dim 64\)"):
        d.llm(engine=engine)


def test_another_frameworks_store_is_refused(engine):
    li, lc = make_driver("llama_index", engine), make_driver("langchain-chat", engine)
    with pytest.raises(ValidationError, match="must be a retgen_integrations.langchain"):
        ChatRetgen(engine=engine, memory=li.vs)
    with pytest.raises(ValidationError, match="must be a retgen_integrations.llama_index"):
        LIRetgenLLM(engine=engine, memory=lc.vs)
    with pytest.raises(ValidationError, match="engine.use_memory"):
        RetgenLLM(engine=engine, memory=DocumentStore())


# -- engines: one of its own per model directory; a shared engine follows each LLM's store ----
def test_model_dir_with_memory_gets_an_engine_of_its_own(tiny_model_dir, engine):
    d = make_driver("langchain-chat", engine)
    d.add(DOC_ID, DOC_TEXT)
    plain = ChatRetgen(model_dir=str(tiny_model_dir), max_tokens=3, top_k=1)
    with_memory = ChatRetgen(model_dir=str(tiny_model_dir), memory=d.vs, max_tokens=3, top_k=1)
    assert with_memory.invoke(PREFIX).content == CONTINUATION
    assert with_memory._engine() is not plain._engine()
    assert plain._engine().memory.store is not d.store  # the shared engine keeps its memory
    trace = plain.invoke(PREFIX).response_metadata["retgen_trace"]
    assert not [e for t in trace for e in t["trace"] if e["document"] == DOC_ID]


def test_llms_sharing_an_engine_each_read_their_own_store(engine):
    a, b = make_driver("langchain-chat", engine), make_driver("llama_index", engine)
    a.add(DOC_ID, DOC_TEXT)
    b.add("doc-other", "the zorblax quintar flemmed vantic oskarine pelumbra trisk gandolo "
                       "sprenk obbly . " * 3)
    llm_a, llm_b = a.llm(engine=engine), b.llm(engine=engine)
    assert a.generate(llm_a, PREFIX)[0] == CONTINUATION
    text, trace = b.generate(llm_b, PREFIX)
    assert text.startswith(" sprenk obbly") and from_doc(trace, b, "doc-other")
    assert not from_doc(trace, b, DOC_ID)
    assert a.generate(llm_a, PREFIX)[0] == CONTINUATION


# -- persistence keeps the memory's metadata; a reloaded store is a working memory ------------
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_persisting_keeps_the_memory_metadata(tmp_path, engine, tiny_model_dir, framework):
    d = make_driver(framework, engine)
    d.add(DOC_ID, DOC_TEXT)
    d.llm(engine=engine)
    engine.memory.save(tmp_path / "memory")  # writes extra["memory"] into the shared store
    d.store.extra["owner"] = "test"
    assert d.store.extra["memory"]["format"] == "retgen-memory"
    d.persist(tmp_path / "vs")
    extra = DocumentStore.load(tmp_path / "vs").extra
    assert extra["memory"] == d.store.extra["memory"] and extra["owner"] == "test"
    assert extra["adapter"] == ("llama_index" if framework == "llama_index" else "langchain")
    if framework != "llama_index":
        assert extra["embedding"]["name"] == "hashing:64"
    # the reloaded vector store gives a fresh engine the same memory
    fresh = RetgenEngine.load(tiny_model_dir)
    llm = d.llm_class(engine=fresh, memory=d.reload(tmp_path / "vs"),
                      **({"max_new_tokens": 3} if framework == "llama_index" else
                         {"max_tokens": 3}), top_k=1)
    text, trace = d.generate(llm, PREFIX)
    assert text == CONTINUATION and from_doc(trace, d, DOC_ID)
