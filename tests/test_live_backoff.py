"""Documents added to the memory also enter the back-off's counts, live, and leave it on delete."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from retgen_engine import RetgenEngine
from retgen_engine.ngram.counts import build_levels
from retgen_engine.ngram.kneser_ney import KneserNeyLM


@pytest.fixture()
def engine(tiny_model_dir, tmp_path) -> RetgenEngine:
    return RetgenEngine.load(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def phrase(engine, n=12, seed=3) -> list[str]:
    """Training words in an order the corpus never has."""
    rng = np.random.default_rng(seed)
    itos = engine.vocab.itos
    return [itos[i] for i in rng.choice(np.arange(10, len(itos)), n, replace=False)]


def test_an_added_document_is_counted_by_the_back_off_and_memory_false_reads_the_build(engine):
    words = phrase(engine)
    prefix = " ".join(words[:6])
    params = engine.retrieval_params(memory=True)
    base = engine.lm.backoff
    before = engine.next_token_logprobs(prefix)
    before_off = engine.next_token_logprobs(prefix, memory=False)
    engine.memory.add([" ".join(words * 3) + " ."], ids=["p"])
    kn = engine.lm.backoff_for(params)
    assert kn is not base and kn.V == base.V
    # the estimate a rebuild would make of the back-off: the training stream, then the document
    doc = engine.tokenizer.encode(" ".join(words * 3) + " .")
    seq = np.concatenate([engine.stream_ids, [engine.vocab.eos_id], doc]).astype(np.int64)
    ref = KneserNeyLM.from_levels(build_levels(seq, base.V, base.order), base.order, base.V)
    probe = np.asarray(engine.stream_ids[:400], np.int64)
    assert np.array_equal(kn.stream_logprobs(probe), ref.stream_logprobs(probe))
    target = engine.vocab.stoi[words[6]]
    hist = [engine.vocab.eos_id] + engine.tokenizer.encode(prefix)
    assert kn.distribution(hist)[target] > 20 * base.distribution(hist)[target]
    lp = engine.next_token_logprobs(prefix)
    assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-9) and (lp > -np.inf).all()
    assert lp[target] > before[target] + 1.0
    assert np.array_equal(engine.next_token_logprobs(prefix, memory=False), before_off)
    # deleted: the build's back-off itself, and the distribution as before the add
    engine.memory.delete(["p"])
    assert engine.lm.backoff_for(params) is base
    assert np.array_equal(engine.next_token_logprobs(prefix), before)


def test_the_back_off_update_can_be_switched_off(engine):
    words = phrase(engine, seed=5)
    engine.memory.add([" ".join(words * 3)], ids=["q"])
    params = engine.retrieval_params()
    assert engine.lm.backoff_for(params) is not engine.lm.backoff
    engine.memory.config = engine.memory.config.model_copy(update={"update_backoff": False})
    assert engine.lm.backoff_for(params) is engine.lm.backoff


def test_re_estimated_once_per_change_and_saved_documents_count_after_a_load(engine):
    words = phrase(engine, seed=7)
    engine.memory.add([" ".join(words * 2)], ids=["r"])
    params = engine.retrieval_params()
    kn = engine.lm.backoff_for(params)
    assert engine.lm.backoff_for(params) is kn  # no change, no re-estimation
    text = " ".join(words[:5])
    lp = engine.next_token_logprobs(text)
    engine.save_memory()
    again = RetgenEngine.load(engine.model_dir)
    assert np.array_equal(again.next_token_logprobs(text), lp)


def test_tuning_on_added_documents_scores_them_with_a_back_off_that_never_counted_them(engine):
    """The held-out documents of ``tune_memory`` are new text to the back-off it scores them
    with; the other added documents are counted, as at test time."""
    from retgen_engine.learn.memory_tuning import held_out_lm

    a, b = phrase(engine, seed=11), phrase(engine, seed=12)
    engine.memory.add([" ".join(a * 3), " ".join(b * 3)], ids=["a", "b"])
    hl = held_out_lm(engine.lm, ["a"])
    base = engine.lm.backoff
    V, order = base.V, base.order
    doc_b = engine.tokenizer.encode(" ".join(b * 3))
    seq = np.concatenate([engine.stream_ids, [engine.vocab.eos_id], doc_b]).astype(np.int64)
    ref = KneserNeyLM.from_levels(build_levels(seq, V, order), order, V)
    probe = np.array([engine.vocab.eos_id] + engine.tokenizer.encode(" ".join(a + b)), np.int64)
    assert np.array_equal(hl.backoff.stream_logprobs(probe), ref.stream_logprobs(probe))
    assert hl.backoff_for(engine.retrieval_params(memory=False)) is hl.backoff
    assert engine.lm.backoff is base  # the model itself is left as it is
    rep = engine.tune_memory(progress=False, max_tokens=100)
    assert rep["documents"] == 1
