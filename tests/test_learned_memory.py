"""The learned parts trained with the document memory in the mixture (issue 13, item 4): the
held-out queries read the memory as at test time, minus every passage from their own slice or
the text before it, and the reranker's and the policy's objectives mix the memory last, as the
model does."""
import json
import shutil

import numpy as np
import pytest
import torch

from retgen_engine import RetgenEngine
from retgen_engine.cli import main
from retgen_engine.learn.heldout import MEMORY_GUARD, build_training_data, memory_in_mixture
from retgen_engine.learn.policy import RetrievalPolicy, reward_table
from retgen_engine.learn.reranker import mix_last
from retgen_engine.learn.training import train, with_memory
from retgen_engine.lm.mixture import mix_logprobs
from retgen_engine.memory.mixture import MemoryParams
from retgen_engine.memory.passages import passage_spans


@pytest.fixture(scope="module")
def data(tiny_engine):
    return build_training_data(tiny_engine, fraction=0.1, max_queries=800, k=16, seed=0,
                               progress=False)


def _span(engine, pid):
    """[start, end) in the stream of memory passage ``pid`` (a corpus passage)."""
    rid, _, _ = engine.memory.record_of(int(pid))
    doc, part = rid.rsplit("#", 1)
    d = engine.doc_names.index(doc.split("@")[0])
    lo, hi = int(engine.doc_offsets[d]), int(engine.doc_offsets[d + 1])
    cfg = engine.memory.config
    s, e = passage_spans(hi - lo, cfg.passage_length, cfg.stride or cfg.passage_length)[int(part)]
    return lo + s, lo + e


def test_training_queries_never_read_their_own_slice_from_the_memory(tiny_engine, data):
    eng, mem = tiny_engine, tiny_engine.memory
    assert memory_in_mixture(eng, True) and not memory_in_mixture(eng, False)
    pos, cut = data["positions"], data["cut"]
    n = len(pos)
    assert data["mem_p"].shape == data["mem_lam"].shape == (n,)
    assert ((data["mem_p"] >= 0) & (data["mem_p"] <= 1)).all()
    assert ((data["mem_lam"] >= 0) & (data["mem_lam"] < 1)).all() and (data["mem_lam"] > 0).any()
    # the memory's passages the held-out queries may read all end before the slice's guard
    stream = np.asarray(eng.stream_ids, dtype=np.int64)
    mp = MemoryParams.from_config(mem.config)
    base = max(cut - eng.lm.cache.window - eng.backoff.order, 0)
    lo = cut - max(cut - base, MEMORY_GUARD)
    from retgen_engine.learn.heldout import HeldOutSlice

    held = HeldOutSlice.make(stream, eng.backoff.V, eng.backoff.order,
                             int(eng.patterns.length.max()), cut, len(stream))
    ex = held.memory_exclusions(mem, eng.doc_offsets, eng.doc_names, before=cut - lo)
    assert data["mem_excluded"] == len(ex) > 0
    uq, _, queries = mem.stream_queries(stream, pos, mp.refresh)
    pids, _ = mem.find(queries, mp, exclude=[ex] * len(uq))
    seen = {int(p) for p in pids.ravel() if p >= 0}
    assert seen and all(_span(eng, p)[1] <= lo for p in seen)
    # brute force over every passage: exactly those overlapping [lo, end) are excluded
    overlapping = {p for p in mem.table.pids() if _span(eng, p)[1] > lo}
    assert overlapping == ex
    # the mask is not vacuous: unmasked, the same queries read the slice's own passages
    free, _ = mem.find(queries, mp)
    assert {int(p) for p in free.ravel() if p >= 0} & ex
    # and the terms are the memory's own, with that mask
    p, lam = mem.stream_terms(stream, pos, mp, exclude=[ex] * len(uq))
    np.testing.assert_allclose(data["mem_p"], p, rtol=0, atol=0)
    np.testing.assert_allclose(data["mem_lam"], lam, rtol=0, atol=0)


def test_the_objectives_mix_the_memory_last_as_the_model_does():
    rng = np.random.default_rng(0)
    n = 50
    logp = np.log(rng.uniform(0.01, 0.5, n))
    p_mem = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0, 1, n))
    lam = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0, 0.9, n))
    got = mix_last(torch.as_tensor(logp), (torch.as_tensor(p_mem), torch.as_tensor(lam))).numpy()
    np.testing.assert_allclose(got, mix_logprobs(logp, p_mem, lam), rtol=1e-12)
    assert np.array_equal(mix_last(torch.as_tensor(logp)).numpy(), logp)
    pol = RetrievalPolicy(4, 8, (4, 8), (0.1, 0.5), (0.0, 0.1, 0.3))
    p_ret = rng.uniform(0, 1, (n, 2, 2))
    r0, lp0 = reward_table(logp, p_ret, pol, 0.002)
    r1, lp1 = reward_table(logp, p_ret, pol, 0.002, mem=(p_mem, lam))
    want = mix_logprobs(lp0, p_mem[:, None, None, None], lam[:, None, None, None])
    np.testing.assert_allclose(lp1, want, rtol=1e-12)
    np.testing.assert_allclose(r1 - lp1, r0 - lp0, rtol=0, atol=1e-12)  # the same costs
    # no memory weight: unchanged
    _, lpz = reward_table(logp, p_ret, pol, 0.002, mem=(p_mem, np.zeros(n)))
    np.testing.assert_allclose(lpz, lp0, rtol=1e-12)


def test_train_with_the_memory_in_the_mixture_and_without(tiny_model_dir, tmp_path, data):
    kw = dict(seed=0, max_queries=800, fraction=0.1, reranker_steps=40, policy_steps=60,
              progress=False)
    d1 = shutil.copytree(tiny_model_dir, tmp_path / "with")
    rep = train(RetgenEngine.load(d1), **kw)
    assert rep["memory_in_mixture"] and rep["reranker"]["memory_in_mixture"]
    assert rep["policy"]["memory_in_mixture"] and rep["memory_excluded_passages"] > 0
    assert rep["memory_nll"] == pytest.approx(-with_memory(data["log_base"], data).mean())
    # the policy's no-retrieval reference is the base with the memory (its validation block:
    # the last 20% of the queries)
    n_val = int(len(data["log_base"]) * 0.2)
    assert rep["policy"]["val_nll_no_retrieval"] == pytest.approx(
        -with_memory(data["log_base"], data)[-n_val:].mean(), rel=1e-9)
    d0 = shutil.copytree(tiny_model_dir, tmp_path / "without")
    rep0 = train(RetgenEngine.load(d0), memory=False, **kw)
    assert not rep0["memory_in_mixture"] and "memory_nll" not in rep0
    assert not rep0["reranker"]["memory_in_mixture"]
    assert rep["reranker"]["val_nll_before"] != rep0["reranker"]["val_nll_before"]
    for d in (d1, d0):
        eng = RetgenEngine.load(d)
        assert eng.reranker is not None and eng.policy is not None
        for ctx in ["The game was", ""]:
            p = np.exp(eng.next_token_logprobs(ctx))
            assert abs(p.sum() - 1) < 1e-6 and p.min() > 0
        assert eng.manifest["training"]["memory_in_mixture"] == (d == d1)


def test_train_command_without_the_memory(tmp_path, capsys, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    assert main(["train", "--model", str(model), "--reranker-only", "--no-memory",
                 "--queries", "500", "--fraction", "0.1", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["memory_in_mixture"] is False and "reranker" in rep
