"""The document memory: passages whose n-gram statistics are mixed into the LM."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from retgen_engine import HashingEncoder, RetgenEngine
from retgen_engine.checks import ArgumentError
from retgen_engine.memory.memory import PassageMemory
from retgen_engine.memory.ngrams import NGramTable
from retgen_engine.persist.errors import ModelFormatError
from retgen_testutil import hashing_config

PHRASE = "the zorblaxian quillon vetch engine hums at midnight over the brass harbour"
PREFIX = "the zorblaxian quillon vetch engine hums at midnight over the"


@pytest.fixture()
def engine(tiny_model_dir) -> RetgenEngine:
    """A fresh engine per test (its memory is mutated)."""
    return RetgenEngine.load(tiny_model_dir)


def brute_counts(passages, weights, history, token):
    """sum_j w_j c_j(h, token), sum_j w_j c_j(h), sum_j c_j(h) by scanning every passage."""
    n = len(history)
    F = H = C = 0.0
    for x, w in zip(passages, weights):
        for t in range(n, len(x)):
            if list(x[t - n:t]) == list(history):
                H += w
                C += 1
                F += w * (x[t] == token)
    return F, H, C


def test_ngram_table_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    passages = [rng.integers(0, 6, size=rng.integers(5, 40)) for _ in range(12)]
    tab = NGramTable(4)
    tab.add(list(enumerate(passages[:7])))
    tab.add([(i + 7, p) for i, p in enumerate(passages[7:])])  # two segments
    seq = rng.integers(0, 6, size=60)
    pos = np.arange(1, 60)
    pids = np.tile(np.array([0, 3, 8, 11, -1]), (len(pos), 1))
    w = np.tile(np.array([0.4, 0.3, 0.2, 0.1, 0.0]), (len(pos), 1))
    F, H, C = tab.target_counts(seq, pos, pids, w, seq[pos])
    for i, p in enumerate(pos):
        for m in range(4):
            if p < m:
                continue
            ref = brute_counts([passages[j] for j in (0, 3, 8, 11)], [0.4, 0.3, 0.2, 0.1],
                               seq[p - m:p], seq[p])
            assert np.allclose((F[m, i], H[m, i], C[m, i]), ref), (p, m)
        Fd, Hd, Cd = tab.dense_counts(seq, int(p), pids[0], w[0], 6)
        assert np.allclose(Fd[:, seq[p]], F[:, i]) and np.allclose(Hd, H[:, i])
        assert np.allclose(Fd.sum(1), Hd)  # each order's continuations sum to its history count
    tab.remove([3])
    tab.compact()
    assert len(tab) == 11 and 3 not in tab.pids()


def test_step_counts_give_each_passage_the_counts_a_second_lookup_would():
    """A generation step keeps what it read (tokens and passage of each entry, per order), so
    its trace needs no second lookup: every passage's weighted count of any token equals
    target_counts' per-passage F, with the order-1 part reused from an earlier step."""
    rng = np.random.default_rng(5)
    passages = [rng.integers(0, 7, size=rng.integers(2, 45)) for _ in range(15)]
    tab = NGramTable(5)
    tab.add(list(enumerate(passages[:9])))
    tab.add([(i + 9, p) for i, p in enumerate(passages[9:])])  # two segments
    pids = np.array([0, 4, 9, 14, 2, -1, 11])
    w = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.0, 0.15])
    seq = rng.integers(0, 7, size=50)
    first = None
    for p in range(1, 50):
        s = tab.step_counts(seq, p, pids, w, 7, unigram=first)
        ref = tab.step_counts(seq, p, pids, w, 7)
        assert np.array_equal(s.F, ref.F) and np.array_equal(s.C, ref.C)
        first = first or s
        for token in range(7):
            F = tab.target_counts(seq[:p].tolist() + [token], np.array([p]), pids[None, :],
                                  w[None, :], np.array([token]), per_passage=True)[0][:, 0]
            assert np.allclose(s.passage_counts(token, w), F), (p, token)
            assert np.allclose(s.F[:, token], F.sum(1))


def test_passages_shorter_than_the_order_are_counted():
    """A document's last passage may hold fewer tokens than the tables' order (a 2-token tail
    at order 7 once stopped `memory.add`): its n-grams still count, longer ones do not exist."""
    rng = np.random.default_rng(2)
    passages = [rng.integers(0, 4, size=n) for n in (1, 2, 3, 6, 9, 30)]
    tab = NGramTable(7)
    tab.add(list(enumerate(passages)))
    seq = rng.integers(0, 4, size=40)
    pos = np.arange(1, 40)
    pids = np.tile(np.arange(len(passages)), (len(pos), 1))
    w = np.full(pids.shape, 1.0 / len(passages))
    F, H, C = tab.target_counts(seq, pos, pids, w, seq[pos])
    for i, p in enumerate(pos):
        for m in range(min(7, p + 1)):
            ref = brute_counts(passages, w[0], seq[p - m:p], seq[p])
            assert np.allclose((F[m, i], H[m, i], C[m, i]), ref), (p, m)


def test_memory_is_built_with_the_model_and_changes_the_distribution(engine):
    assert engine.memory.passages > 10 and len(engine.memory) >= 1
    text = engine.tokenizer.decode(engine.stream_ids[:200].tolist())
    lp = engine.next_token_logprobs(text)
    lp0 = engine.next_token_logprobs(text, memory=False)
    assert np.isclose(np.exp(lp).sum(), 1.0) and lp.max() <= 0 and np.isfinite(lp).all()
    assert np.abs(lp - lp0).max() > 1e-3


@pytest.mark.parametrize("keys", ["lexical", "dense", "fused"])
def test_stream_and_step_agree_exactly(engine, keys):
    ids = engine.stream_ids[300:380].astype(np.int64)
    seq = np.concatenate([[1], ids])
    params = engine.retrieval_params(memory_refresh=4, memory_keys=keys, memory_k=16)
    out = engine.lm.score_stream(seq, params)
    assert (out["lam_mem"] > 0).mean() > 0.5
    for i in range(1, len(seq), 7):
        lp, info = engine.lm.next_token_logprobs(seq[:i].tolist(), params)
        assert abs(lp[seq[i]] - out["logp"][i - 1]) < 1e-9, i
        assert abs(info.lam_mem - out["lam_mem"][i - 1]) < 1e-12
        assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-9) and (lp > -np.inf).all()


def test_added_document_is_read_at_once_and_its_new_words_get_ids(engine):
    V0 = len(engine.vocab)
    before = engine.next_token_logprobs(PREFIX)
    ids = engine.memory.add([PHRASE + " .", "another short document about harbours ."],
                            ids=["doc-z", "doc-h"], metadatas=[{"kind": "test"}, None])
    assert ids == ["doc-z", "doc-h"] and len(engine.vocab) > V0
    new = engine.vocab.stoi["brass"] if "brass" not in engine.vocab.itos[:V0] else None
    lp = engine.next_token_logprobs(PREFIX)
    assert len(lp) == len(engine.vocab) and np.isclose(np.exp(lp).sum(), 1.0)
    assert (lp > -np.inf).all()
    target = engine.vocab.stoi["brass"]
    assert np.exp(lp[target]) > 0.1 > 10 * np.exp(before[target] if target < len(before) else -np.inf)
    if new is not None:
        assert new >= V0
    res = engine.generate(PREFIX, max_new_tokens=2, temperature=0.0, seed=0)
    assert res.tokens[0].token == "brass"
    passage = [e for e in res.tokens[0].trace if e.kind == "passage"]
    assert passage and passage[0].document == "doc-z" and passage[0].passage == "doc-z#0"
    assert "brass" in passage[0].snippet
    assert sum(e.weight for e in passage) > 0.3  # most of the token's probability


def test_a_new_word_is_scored_in_stream_and_step_alike(engine):
    engine.memory.add([PHRASE], ids=["z"])
    ids = engine.tokenizer.encode(PHRASE)
    assert max(ids) >= engine.backoff.V  # words the training corpus did not have
    seq = np.array([1] + ids * 2, dtype=np.int64)
    params = engine.retrieval_params(memory_refresh=3)
    out = engine.lm.score_stream(seq, params)
    for i in range(1, len(seq)):
        lp, _ = engine.lm.next_token_logprobs(seq[:i].tolist(), params)
        assert abs(lp[seq[i]] - out["logp"][i - 1]) < 1e-9
        assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-9)
    rep = engine.perplexity(seq[1:])
    assert np.isfinite(rep["perplexity"])


def test_delete_removes_every_trace_and_all_mass(engine):
    for w in engine.tokenizer.split(PHRASE):  # the vocabulary as it will be after the add
        engine.vocab.add(w)
    ref = engine.next_token_logprobs(PREFIX)
    engine.memory.add([PHRASE], ids=["gone"])
    assert np.abs(engine.next_token_logprobs(PREFIX) - ref).max() > 0.5
    assert engine.memory.delete(["gone", "never-there"]) == 1
    assert np.abs(engine.next_token_logprobs(PREFIX) - ref).max() < 1e-12
    res = engine.generate(PREFIX, max_new_tokens=5, seed=0)
    assert not [e for t in res.tokens for e in t.trace if e.document == "gone"]
    assert "gone" not in engine.memory.ids()


def test_memory_false_per_call_and_variant(engine):
    engine.memory.add([PHRASE], ids=["z"])
    off = engine.next_token_logprobs(PREFIX, memory=False)
    assert np.allclose(off, engine.variant(memory=False).next_token_logprobs(PREFIX))
    res = engine.generate(PREFIX, max_new_tokens=3, seed=0, memory=False)
    assert not [e for t in res.tokens for e in t.trace if e.kind == "passage"]


def test_long_document_is_split_into_passages(engine):
    L = engine.memory.config.passage_length
    words = " ".join(f"w{i % 50}" for i in range(int(L * 2.5)))
    n0 = engine.memory.passages
    engine.memory.add([words], ids=["long"])
    assert engine.memory.passages - n0 == 3
    doc = [d for d in engine.memory.documents() if d["id"] == "long"][0]
    assert doc["passages"] == 3 and doc["tokens"] == int(L * 2.5)
    engine.memory.add(["short now"], ids=["long"])  # re-adding an id replaces the document
    assert engine.memory.passages - n0 == 1


def test_saved_and_loaded_with_the_model(engine, tmp_path):
    engine.memory.add([PHRASE], ids=["z"])
    out = engine.save(tmp_path / "m")
    lp = engine.next_token_logprobs(PREFIX)
    again = RetgenEngine.load(out)
    assert again.vocab.itos == engine.vocab.itos
    assert np.abs(again.next_token_logprobs(PREFIX) - lp).max() < 1e-12
    assert "z" in again.memory.ids()
    again.memory.delete(["z"])
    again.save_memory()
    assert "z" not in RetgenEngine.load(out).memory.ids()


def test_model_without_memory_loads_and_says_how_to_add_one(tiny_model_dir, tmp_path, caplog):
    d = tmp_path / "old"
    shutil.copytree(tiny_model_dir, d)
    shutil.rmtree(d / "memory")
    with caplog.at_level(logging.INFO):
        eng = RetgenEngine.load(d)
    assert "retgen memory add" in caplog.text
    assert eng.parts.memory is None
    lp = eng.next_token_logprobs(PREFIX)
    eng.memory.add([PHRASE], ids=["z"])
    assert len(eng.memory) == 1
    assert np.abs(eng.next_token_logprobs(PREFIX)[:len(lp)] - lp).max() > 0.1
    eng.save_memory()
    assert RetgenEngine.load(d).memory.ids() == ["z"]


def test_memory_of_another_encoder_or_model_is_refused(engine, tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    with pytest.raises(ModelFormatError, match="encoder"):
        PassageMemory.load(d / "memory", engine.tokenizer, HashingEncoder(32), engine.backoff.V)
    corpus = tmp_path / "other.txt"
    corpus.write_text("a different corpus with other words .\n" * 30)
    other = RetgenEngine.build(corpus, config=hashing_config(), encoder=HashingEncoder(64),
                               progress=False)
    with pytest.raises(ModelFormatError, match="another model"):
        PassageMemory.load(d / "memory", other.tokenizer, engine.encoder, other.backoff.V)


@pytest.mark.parametrize("call, match", [
    (lambda m: m.add([""]), "texts item 0 is empty"),
    (lambda m: m.add(["ok", "  \n "]), "texts item 1 is empty"),
    (lambda m: m.add("one string"), "not one string"),
    (lambda m: m.add(["a", "b"], ids=["x", "x"]), "'x' appears twice"),
    (lambda m: m.add(["a"], ids=["x", "y"]), "ids has 2 items for 1 texts"),
    (lambda m: m.add(["a"], ids=[""]), "empty"),
    (lambda m: m.add(["a"], metadatas=["no"]), "metadatas item 0"),
    (lambda m: m.add([3]), "texts item 0"),
    (lambda m: m.delete("x"), "not one string"),
])
def test_bad_memory_input(engine, call, match):
    n = engine.memory.passages
    with pytest.raises(ArgumentError, match=match):
        call(engine.memory)
    assert engine.memory.passages == n  # nothing half-added


@pytest.mark.parametrize("kw, match", [
    (dict(memory_refresh=0), "memory_refresh=0"),
    (dict(memory_refresh=-3), "memory_refresh=-3"),
    (dict(memory_k=0), "memory_k=0"),
    (dict(memory_keys="tfidf"), "memory_keys='tfidf'"),
    (dict(memory="yes"), "memory='yes'"),
    (dict(memory_temperature=0.0), "memory_temperature|temperature"),
])
def test_bad_memory_parameters(engine, kw, match):
    with pytest.raises(ValueError, match=match):
        engine.next_token_logprobs("the", **kw)


def test_k_larger_than_the_memory(engine):
    eng = engine
    eng.use_memory(None)
    eng.memory.add([PHRASE], ids=["only"])
    lp = eng.next_token_logprobs(PREFIX, memory_k=4096)
    assert np.isclose(np.exp(lp).sum(), 1.0)
    assert np.exp(lp[eng.vocab.stoi["brass"]]) > 0.1
    assert eng.memory.delete(["nothing"]) == 0


def test_new_word_ids_survive_deleting_their_document(engine, tmp_path):
    engine.memory.add(["first zorbquix ."], ids=["a"])
    engine.memory.add(["then flumquat ."], ids=["b"])
    ids = {w: engine.vocab.stoi[w] for w in ("zorbquix", "flumquat")}
    out = engine.save(tmp_path / "m")
    e2 = RetgenEngine.load(out)
    e2.memory.delete(["a"])
    e2.save_memory()
    e3 = RetgenEngine.load(out)
    assert {w: e3.vocab.stoi.get(w) for w in ids} == ids  # stable, though "a" is gone
    lp = e3.next_token_logprobs("then")
    assert len(lp) == len(e3.vocab) and np.isclose(np.exp(lp).sum(), 1.0)


def test_excluded_passages_are_never_read(engine):
    engine.memory.add([PHRASE], ids=["z"])
    pid = engine.memory.store.int_id("z#0")
    seq = np.array([1] + engine.tokenizer.encode(PHRASE) * 2, dtype=np.int64)
    pos = np.arange(1, len(seq))
    mp = engine.lm.params().memory
    uq, _, queries = engine.memory.stream_queries(seq, pos, mp.refresh)
    pids, _ = engine.memory.find(queries, mp)
    assert (pids == pid).any()
    ex = [{pid}] * len(uq)
    pids_ex, scores_ex = engine.memory.find(queries, mp, exclude=ex)
    assert not (pids_ex == pid).any() and (pids_ex[scores_ex > 0] >= 0).all()
    p, _ = engine.memory.stream_terms(seq, pos, mp)
    p_ex, _ = engine.memory.stream_terms(seq, pos, mp, exclude=ex)
    assert p_ex[-5:].sum() < p[-5:].sum()  # the phrase's second half is no longer copied


def test_lookups_search_a_passage_only_where_it_holds_the_shorter_history():
    """The pruning in NGramTable._ranges is exact: the counts equal a search of every passage
    at every order (the table's own ranges with nothing pruned)."""
    rng = np.random.default_rng(4)
    passages = [rng.integers(0, 5, size=rng.integers(3, 50)) for _ in range(20)]
    tab = NGramTable(6)
    tab.add(list(enumerate(passages[:12])))
    tab.add([(i + 12, p) for i, p in enumerate(passages[12:])])
    seq = rng.integers(0, 5, size=80)
    pos = np.arange(1, 80)
    pids = np.tile(np.arange(20), (len(pos), 1))
    w = rng.dirichlet(np.ones(20), size=len(pos))
    F, H, C = tab.target_counts(seq, pos, pids, w, seq[pos])
    qs, _ = tab._queries(seq, pos, pids)
    for m in range(6):
        full = sum(tab._ranges(seg, m, qs[m], qs[m] >= 0)[1] for seg in tab._segments)
        assert np.array_equal(C[m], full.sum(1)), m
    for i in range(0, len(pos), 9):
        Fd, Hd, Cd = tab.dense_counts(seq, int(pos[i]), pids[i], w[i], 5)
        assert np.allclose(Fd[:, seq[pos[i]]], F[:, i]) and np.allclose(Hd, H[:, i])
        assert np.array_equal(Cd, C[:, i])
