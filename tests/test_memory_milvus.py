"""The document memory on Milvus (Milvus Lite in a temporary directory): the same distribution
as on faiss, live writes through the memory, through the store and through another client,
save + load reconnecting, damaged manifests, and what the stats say Milvus built."""
from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from retgen_engine import RetgenEngine  # noqa: E402
from retgen_engine.checks import ArgumentError  # noqa: E402
from retgen_engine.docstore import DocumentStore, MilvusStore  # noqa: E402
from retgen_engine.memory.memory import PassageMemory  # noqa: E402
from retgen_engine.persist.errors import ModelFormatError  # noqa: E402
from retgen_testutil import live  # noqa: E402

PHRASE = "the zorblaxian quillon vetch engine hums at midnight over the brass harbour"
PREFIX = "the zorblaxian quillon vetch engine hums at midnight over the"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    """One Milvus Lite database for the module (a collection per test)."""
    return str(tmp_path_factory.mktemp("milvus_memory") / "memory.db")


@pytest.fixture()
def faiss_engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)


def milvus_store(db: str, engine: RetgenEngine, **kw) -> MilvusStore:
    kw.setdefault("collection", f"m_{uuid.uuid4().hex[:12]}")
    kw.setdefault("dim", engine.encoder.dim)
    return DocumentStore(backend="milvus", uri=db, **kw)


def on_milvus(engine: RetgenEngine, store: MilvusStore) -> PassageMemory:
    """The corpus memory built into ``store`` (as ``retgen build --memory-uri`` does) and
    made the engine's memory."""
    mem = PassageMemory.from_corpus(engine.tokenizer, engine.encoder, engine.config.memory,
                                    engine.stream_ids, engine.doc_offsets, engine.doc_names,
                                    store=store)
    engine.use_memory(store)
    return mem


@pytest.fixture()
def milvus_engine(tiny_model_dir, db) -> RetgenEngine:
    """The tiny model with its memory on Milvus Lite (FLAT, the default index)."""
    eng = RetgenEngine.load(tiny_model_dir)
    store = milvus_store(db, eng)
    on_milvus(eng, store)
    yield eng
    store.clear()


def test_the_corpus_memory_on_milvus_holds_the_same_passages(faiss_engine, milvus_engine):
    f, m = faiss_engine.memory, milvus_engine.memory
    assert isinstance(m.store, MilvusStore) and m.passages == f.passages > 10
    assert m.ids() == f.ids() and m.documents() == f.documents()
    assert [r for _, r in m.store.items()] == [r for _, r in f.store.items()]


@pytest.mark.parametrize("keys", ["lexical", "fused"])
def test_lexical_keys_give_the_faiss_distribution(faiss_engine, milvus_engine, keys):
    """BM25 is computed here from the same passages; fused keys use the dense ranks only (FLAT:
    the same ranks as faiss), so both match faiss to 1e-9."""
    assert milvus_engine.memory.passages == faiss_engine.memory.passages
    ids = faiss_engine.stream_ids[300:360].astype(np.int64)
    seq = np.concatenate([[1], ids])
    pf = faiss_engine.retrieval_params(memory_refresh=4, memory_keys=keys, memory_k=16)
    pm = milvus_engine.retrieval_params(memory_refresh=4, memory_keys=keys, memory_k=16)
    a, b = faiss_engine.lm.score_stream(seq, pf), milvus_engine.lm.score_stream(seq, pm)
    assert (a["lam_mem"] > 0).mean() > 0.5
    assert np.abs(a["logp"] - b["logp"]).max() < 1e-9
    for i in range(1, len(seq), 11):
        lf, _ = faiss_engine.lm.next_token_logprobs(seq[:i].tolist(), pf)
        lm, _ = milvus_engine.lm.next_token_logprobs(seq[:i].tolist(), pm)
        assert np.abs(lf - lm).max() < 1e-9, i


def test_dense_keys_are_close_to_faiss_on_a_flat_index(faiss_engine, milvus_engine):
    """Dense keys are Milvus searches (FLAT: exact); relevance scores differ from faiss' only by
    float32 rounding, so passages are the same and log-probs agree closely."""
    ids = faiss_engine.stream_ids[300:360].astype(np.int64)
    seq = np.concatenate([[1], ids])
    params = dict(memory_refresh=4, memory_keys="dense", memory_k=8)
    pf, pm = faiss_engine.retrieval_params(**params), milvus_engine.retrieval_params(**params)
    _, _, queries = faiss_engine.memory.stream_queries(seq, np.arange(1, len(seq)), 4)
    Pf, Sf = faiss_engine.memory.find(queries, pf.memory)
    Pm, Sm = milvus_engine.memory.find(queries, pm.memory)
    assert np.abs(Sf - Sm).max() < 1e-5
    same = [set(a[a >= 0]) == set(b[b >= 0]) for a, b in zip(Pf, Pm)]
    assert np.mean(same) > 0.9  # a tie at the k-th score may order differently
    a, b = faiss_engine.lm.score_stream(seq, pf), milvus_engine.lm.score_stream(seq, pm)
    rows = np.array([s for s, q in zip(same, range(len(same))) for _ in range(4)][:len(seq) - 1])
    assert np.abs(a["logp"] - b["logp"])[rows].max() < 1e-4


def test_add_and_delete_through_the_memory_are_read_at_the_next_call(milvus_engine):
    eng = milvus_engine
    for w in eng.tokenizer.split(PHRASE):  # the vocabulary as it will be after the add
        eng.vocab.add(w)
    ref = eng.next_token_logprobs(PREFIX)
    eng.memory.add([PHRASE + " ."], ids=["doc-z"], metadatas=[{"kind": "test"}])
    lp = eng.next_token_logprobs(PREFIX)
    assert np.exp(lp[eng.vocab.stoi["brass"]]) > 0.1 > 10 * np.exp(ref[eng.vocab.stoi["brass"]])
    res = eng.generate(PREFIX, max_new_tokens=1, temperature=0.0, seed=0)
    assert res.tokens[0].token == "brass"
    passage = [e for e in res.tokens[0].trace if e.kind == "passage"]
    assert passage and passage[0].document == "doc-z" and passage[0].passage == "doc-z#0"
    assert eng.memory.store.get(["doc-z#0"])[0].metadata["kind"] == "test"
    assert eng.memory.delete(["doc-z", "never-there"]) == 1
    assert np.abs(eng.next_token_logprobs(PREFIX) - ref).max() < 1e-12
    assert "doc-z" not in eng.memory.ids() and eng.memory.store.get(["doc-z#0"]) == []


def test_a_unique_phrase_deleted_leaves_no_trace(milvus_engine):
    eng = milvus_engine
    for w in eng.tokenizer.split(PHRASE):
        eng.vocab.add(w)
    ref = eng.next_token_logprobs(PREFIX)
    n = eng.memory.passages
    eng.memory.add([PHRASE], ids=["gone"])
    assert np.abs(eng.next_token_logprobs(PREFIX) - ref).max() > 0.5
    assert eng.memory.delete(["gone"]) == 1
    assert eng.memory.passages == n
    assert np.abs(eng.next_token_logprobs(PREFIX) - ref).max() < 1e-12
    for keys in ("lexical", "dense", "fused"):
        res = eng.generate(PREFIX, max_new_tokens=4, seed=0, memory_keys=keys)
        assert not [e for t in res.tokens for e in t.trace if e.document == "gone"]
    assert not eng.memory.store.search(eng.encoder.encode([PHRASE])[0], k=3,
                                       filter={"doc_id": "gone"})


def test_writes_straight_into_the_store_are_read_at_the_next_call(milvus_engine):
    """As an adapter writes: records into the same MilvusStore, no memory call in between."""
    eng = milvus_engine
    store = eng.memory.store
    for w in eng.tokenizer.split(PHRASE + " a plain replacement text ."):
        eng.vocab.add(w)  # the vocabulary as it will be after the writes
    ref = eng.next_token_logprobs(PREFIX)
    v = eng.encoder.encode([PHRASE])
    store.upsert(["ad#0"], [PHRASE], v, [{"doc_id": "ad", "part": 0, "offset": 0}])
    assert "ad" in eng.memory.ids()
    lp = eng.next_token_logprobs(PREFIX)
    assert np.exp(lp[eng.vocab.stoi["brass"]]) > 0.1
    pid = store.int_id("ad#0")
    assert pid is not None and eng.memory.record_of(pid)[0] == "ad#0"
    store.upsert(["ad#0"], ["a plain replacement text ."], eng.encoder.encode(["a plain ."]),
                 [{"doc_id": "ad"}])  # a replacement: a new int id, the old one gone
    eng.next_token_logprobs(PREFIX)
    assert store.int_id("ad#0") != pid and eng.memory.record_of(pid) is None
    assert store.delete(["ad#0"]) == 1
    assert "ad" not in eng.memory.ids()
    assert np.abs(eng.next_token_logprobs(PREFIX) - ref).max() < 1e-12


def test_the_change_log_gives_net_changes_and_gives_up_after_an_outside_write(db, faiss_engine):
    eng = faiss_engine
    s = milvus_store(db, eng, revision_check_s=None)
    try:
        v = eng.encoder.encode(["one", "two", "three"])
        r0 = s.revision
        s.upsert(["a", "b"], ["one", "two"], v[:2])
        s.upsert(["b", "c"], ["two again", "three"], v[1:])
        s.delete(["a"])
        rev, added, removed = s.changes(r0)
        assert rev == s.revision == r0 + 3
        assert sorted(r.id for _, r in added) == ["b", "c"]  # a: added and removed in the window
        assert [r.text for _, r in added if r.id == "b"] == ["two again"]
        assert {s.int_id(x) for x in "bc"} == {i for i, _ in added}
        assert s.changes(rev) == (rev, [], [])
        other = DocumentStore(backend="milvus", uri=db, collection=s.collection)
        other.upsert(["x"], ["from another client"], v[:1])
        assert s.revision == rev  # never checked (revision_check_s=None)
        assert s.check_external() and s.revision == rev + 1
        assert s.changes(rev) is None  # only a rescan can say now
        assert [r.id for _, r in s.items()] == ["b", "c", "x"]
        assert s.changes(s.revision) == (s.revision, [], [])
        assert not s.check_external()
    finally:
        s.clear()


def test_another_client_writes_are_seen_by_the_check_or_a_forced_sync(milvus_engine, db):
    eng = milvus_engine
    mine = eng.memory.store
    other = DocumentStore(backend="milvus", uri=db, collection=mine.collection)
    v = eng.encoder.encode([PHRASE])
    mine.revision_check_s = None  # never asks the server: only a forced sync sees it
    assert "far" not in eng.memory.ids()  # synced
    other.upsert(["far#0"], [PHRASE], v, [{"doc_id": "far"}])
    assert "far" not in eng.memory.ids()
    eng.memory.sync(force=True)
    assert "far" in eng.memory.ids()
    mine.revision_check_s = 0.0  # asks at every read: seen at the next call
    other.delete(["far#0"])
    assert "far" not in eng.memory.ids()
    other.upsert(["far#0"], [PHRASE], v, [{"doc_id": "far"}])
    lp = eng.next_token_logprobs(PREFIX)
    assert np.exp(lp[eng.vocab.stoi["brass"]]) > 0.1


def test_saved_and_loaded_with_the_model_reconnects(milvus_engine, tmp_path):
    eng = milvus_engine
    eng.memory.add([PHRASE], ids=["z"])
    out = eng.save(tmp_path / "m")
    lp = eng.next_token_logprobs(PREFIX)
    mf = json.loads((live(out / "memory") / "manifest.json").read_text())
    assert mf["format"] == "retgen-docstore-milvus" and mf["uri"] is None
    assert (out / "memory" / mf["db_file"]).is_dir()  # Milvus Lite: the database inside
    again = RetgenEngine.load(out)
    st = again.memory.store
    assert isinstance(st, MilvusStore) and st.collection == eng.memory.store.collection
    assert st.lite.startswith(str(out / "memory"))
    assert again.vocab.itos == eng.vocab.itos
    assert np.abs(again.next_token_logprobs(PREFIX) - lp).max() < 1e-12
    assert again.memory.ids() == eng.memory.ids()
    again.memory.delete(["z"])
    again.save_memory()  # the database already in the directory: only the manifest is written
    assert sorted(p.name for p in (out / "memory").glob("milvus*.db")) == [mf["db_file"]]
    third = RetgenEngine.load(out)
    assert "z" not in third.memory.ids() and "z" in eng.memory.ids()  # the build's db apart
    assert third.memory.stats()["store"]["backend"] == "milvus"


@pytest.mark.parametrize("damage", ["checksum", "truncated", "format", "db gone", "entry"])
def test_a_damaged_milvus_memory_is_a_model_format_error(milvus_engine, tmp_path, damage):
    out = milvus_engine.save(tmp_path / "m")
    mf = live(out / "memory") / "manifest.json"
    m = json.loads(mf.read_text())
    if damage == "checksum":
        m["collection"] = "someone_elses"
        mf.write_text(json.dumps(m))
    elif damage == "truncated":
        mf.write_text(mf.read_text()[:120])
    elif damage == "format":
        mf.write_text(mf.read_text().replace("retgen-docstore-milvus", "retgen-docstore-milvuz"))
    elif damage == "db gone":
        shutil.rmtree(out / "memory" / m["db_file"])
    else:  # a consistent manifest (re-sealed) with an entry missing
        from retgen_engine.docstore.milvus_persist import _digest

        body = {k: v for k, v in m.items() if k not in ("sha256", "collection")}
        mf.write_text(json.dumps({**body, "sha256": _digest(body)}))
    with pytest.raises(ModelFormatError, match="memory|docstore|Milvus|manifest"):
        RetgenEngine.load(out)


def test_stats_say_the_backend_and_what_milvus_built(faiss_engine, milvus_engine, db, caplog):
    f = faiss_engine.memory.stats()
    assert f["store"]["backend"] == "faiss" and f["store_bytes"] > 0
    s = milvus_engine.memory.stats()
    assert s["store"]["backend"] == "milvus" and s["store"]["lite"] is True
    assert s["store"]["records"] == s["passages"] == f["passages"]
    assert s["store"]["index"]["built"] == "FLAT" and s["store"]["index"]["honoured"]
    assert s["store_bytes"] is None and s["table_bytes"] == f["table_bytes"]
    eng = RetgenEngine.load(faiss_engine.model_dir)
    with caplog.at_level(logging.WARNING):
        pq = milvus_store(db, eng, index_type="IVF_PQ", index_params={"nlist": 4, "m": 8})
        on_milvus(eng, pq)
    try:
        idx = eng.memory.stats()["store"]["index"]
        assert idx["requested"] == "IVF_PQ" and idx["built"] == "BRUTE_FORCE"
        assert idx["honoured"] is False and "brute force" in idx["warning"]
        assert "brute force" in caplog.text
        assert np.isfinite(eng.next_token_logprobs(PREFIX, memory_keys="dense")).all()
    finally:
        pq.clear()


def test_from_corpus_and_the_memory_refuse_a_wrong_store(faiss_engine, db):
    eng = faiss_engine
    s = milvus_store(db, eng)
    try:
        s.upsert(["x"], ["something already here"], eng.encoder.encode(["x"]))
        with pytest.raises(ArgumentError, match="already holds 1 records"):
            PassageMemory.from_corpus(eng.tokenizer, eng.encoder, eng.config.memory,
                                      eng.stream_ids, eng.doc_offsets, eng.doc_names, store=s)
    finally:
        s.clear()
    with pytest.raises(ArgumentError, match="store=dict"):
        PassageMemory(eng.tokenizer, eng.encoder, eng.config.memory, eng.backoff.V, {})
    wrong = milvus_store(db, eng, dim=eng.encoder.dim + 1)
    with pytest.raises(ArgumentError, match="dimensional"):
        PassageMemory(eng.tokenizer, eng.encoder, eng.config.memory, eng.backoff.V, wrong)
    for bad in (-1.0, float("nan"), "5", True):
        with pytest.raises(ArgumentError, match="revision_check_s"):
            milvus_store(db, eng, revision_check_s=bad)


def test_concurrent_reads_while_an_adapter_writes(milvus_engine):
    """Generation threads read the memory while another thread writes into its store."""
    eng = milvus_engine
    store = eng.memory.store
    for w in eng.tokenizer.split(PHRASE):
        eng.vocab.add(w)
    v = eng.encoder.encode([PHRASE])
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                lp = eng.next_token_logprobs(PREFIX)
                assert np.isclose(np.exp(lp).sum(), 1.0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(6):
            store.upsert([f"wr{i}#0"], [PHRASE], v, [{"doc_id": f"wr{i}"}])
            if i % 2:
                store.delete([f"wr{i - 1}#0"])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:1]
    assert sorted(d for d in eng.memory.ids() if d.startswith("wr")) == ["wr1", "wr3", "wr5"]
    assert eng.memory.passages == len(store)


def test_retgen_build_with_memory_uri_builds_the_memory_on_milvus(tmp_path, sample_corpus,
                                                                    capsys):
    """``retgen build --memory-uri``: the corpus's passages go to Milvus Lite, the model loads
    with its memory reconnected, and building again into the same collection is refused."""
    from retgen_engine.cli import main
    from retgen_testutil import hashing_config

    cfg = tmp_path / "cfg.json"
    hashing_config().save(cfg)
    uri = str(tmp_path / "passages.db")
    args = ["build", "--corpus", str(sample_corpus), "--config", str(cfg), "--quiet", "--no-tune",
            "--memory-uri", uri, "--memory-collection", "wiki_passages"]
    assert main(args + ["--out", str(tmp_path / "m")]) == 0
    faiss_built = RetgenEngine.build(sample_corpus, config=type(hashing_config()).load(cfg),
                                     progress=False, tune=False)
    eng = RetgenEngine.load(tmp_path / "m")
    st = eng.memory.stats()
    assert st["store"]["backend"] == "milvus" and st["store"]["collection"] == "wiki_passages"
    assert eng.memory.passages == faiss_built.memory.passages > 0
    ctx = "the game was"
    np.testing.assert_allclose(eng.next_token_logprobs(ctx, memory_keys="lexical"),
                               faiss_built.next_token_logprobs(ctx, memory_keys="lexical"),
                               atol=1e-9)
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert "wiki_passages" in err and "already holds" in err
