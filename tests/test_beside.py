"""A generation step's query encoding runs beside the back-off, the cache and the memory
(lm/beside.py): the same distribution and traces as inline, the encoding really on the worker,
errors raised in the caller."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from retgen_engine import RetgenEngine
from retgen_engine.lm import beside


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)


def test_the_step_is_the_same_with_the_search_beside_or_inline(engine, monkeypatch):
    ids = engine.stream_ids[300:360].astype(np.int64).tolist()
    params = engine.retrieval_params(memory_refresh=4)
    assert params.memory is not None and engine.lm._wants_retrieval(params)
    threads = []
    encode = engine.lm.retriever.encode

    def spy(*a, **kw):
        threads.append(threading.current_thread().name)
        return encode(*a, **kw)

    monkeypatch.setattr(engine.lm.retriever, "encode", spy)
    out = {}
    for workers in ("0", "1"):
        monkeypatch.setenv("RETGEN_STEP_WORKERS", workers)
        threads.clear()
        out[workers] = [engine.lm.next_token_logprobs(ids[:i], params) for i in range(1, 60, 6)]
        on_worker = [t.startswith("retgen-step") for t in threads]
        assert all(on_worker) if workers == "1" else not any(on_worker)
    for (a, ia), (b, ib) in zip(out["0"], out["1"]):
        assert np.array_equal(a, b) and ia.lam == ib.lam and ia.lam_mem == ib.lam_mem
        assert np.array_equal(ia.retrieved.I, ib.retrieved.I)
    res = {}
    for workers in ("0", "1"):
        monkeypatch.setenv("RETGEN_STEP_WORKERS", workers)
        r = engine.generate("the", max_new_tokens=12, seed=3, trace=True)
        res[workers] = (r.text, [[(e.kind, e.document, e.passage, round(e.weight, 12)) for e in t.trace]
                                 for t in r.tokens])
    assert res["0"] == res["1"]


def test_memory_off_encodes_inline(engine, monkeypatch):
    monkeypatch.setenv("RETGEN_STEP_WORKERS", "1")
    seen = []
    encode = engine.lm.retriever.encode
    monkeypatch.setattr(engine.lm.retriever, "encode", lambda *a, **kw: seen.append(
        threading.current_thread().name) or encode(*a, **kw))
    _, info = engine.lm.next_token_logprobs([1, 5, 6], engine.retrieval_params(memory=False))
    assert seen and not seen[0].startswith("retgen-step") and info.lam > 0


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_error_in_the_search_is_raised_in_the_caller(workers, monkeypatch):
    monkeypatch.setenv("RETGEN_STEP_WORKERS", workers)

    def boom():
        raise RuntimeError("search failed")

    with pytest.raises(RuntimeError, match="search failed"):
        beside.submit(boom).result()


def test_a_bad_worker_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("RETGEN_STEP_WORKERS", "two")
    with pytest.raises(ValueError, match="RETGEN_STEP_WORKERS='two'"):
        beside.workers()
