"""Property-style bad-input suite over the public API and the CLI: for any value of any
argument, a call either works (a finite distribution that sums to 1, a well-formed result) or
raises a ValueError/TypeError that names the argument. Never another exception, never NaN."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retgen_engine.cli import main
from retgen_engine.docstore import DocumentStore

VALUES = [None, -1, 0, 1, 3, 2 ** 40, -2 ** 63, 0.0, 0.5, 1.0, 1.5, -0.5, float("nan"),
          float("inf"), -float("inf"), "", "abc", "3", [], [1, 2], ["a"], (0,), {"a": 1}, True,
          False, np.int64(4), np.float32(0.25), np.float64(float("nan")), b"x"]
NASTY = st.sampled_from(VALUES)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

GEN_ARGS = ["max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop",
            "seed", "k", "lam", "nprobe", "budget", "policy"]
LM_ARGS = ["k", "temperature", "lam", "nprobe", "budget", "policy"]


def refused_well(e: BaseException, name: str) -> bool:
    return isinstance(e, (ValueError, TypeError)) and name.split("_")[0] in str(e)


def every(names):  # every argument with every value: the whole product, not a sample
    return pytest.mark.parametrize("name,value", [(n, v) for n in names for v in VALUES],
                                   ids=lambda x: repr(x)[:12])


@every(GEN_ARGS)
def test_generate_any_argument(tiny_engine, name, value):
    try:
        res = tiny_engine.generate("The game", **{"max_new_tokens": 3, name: value})
    except Exception as e:  # noqa: BLE001 - the property is about which exceptions
        assert refused_well(e, name), f"{name}={value!r}: {type(e).__name__}: {e}"
        return
    assert all(math.isfinite(t.logprob) and t.logprob <= 0 for t in res.tokens)
    assert isinstance(res.text, str) and res.completion_tokens == len(res.tokens)


@every(LM_ARGS)
def test_next_token_logprobs_any_argument(tiny_engine, name, value):
    try:
        lp = tiny_engine.next_token_logprobs("The game was", **{name: value})
    except Exception as e:  # noqa: BLE001
        assert refused_well(e, name), f"{name}={value!r}: {type(e).__name__}: {e}"
        return
    assert np.isfinite(lp).all() and abs(np.exp(lp).sum() - 1) < 1e-6


@SETTINGS
@given(ctx=st.one_of(NASTY, st.lists(st.integers(-5, 10 ** 6), max_size=6)))
def test_context_ids_in_range_or_refused(tiny_engine, ctx):
    try:
        lp = tiny_engine.next_token_logprobs(ctx)
    except Exception as e:  # noqa: BLE001
        assert isinstance(e, (ValueError, TypeError)) and ("context" in str(e) or "prompt" in str(e)), e
        return
    assert np.isfinite(lp).all() and abs(np.exp(lp).sum() - 1) < 1e-6


@SETTINGS
@given(data=st.one_of(NASTY, st.lists(st.integers(-3, 10 ** 6), max_size=5)))
def test_perplexity_data_in_range_or_refused(tiny_engine, data):
    if isinstance(data, str) and data:
        return  # a path: covered by the file tests
    try:
        rep = tiny_engine.perplexity(np.asarray(data) if isinstance(data, list) else data)
    except Exception as e:  # noqa: BLE001
        assert isinstance(e, (ValueError, TypeError, OSError)) and "data" in str(e) or \
            isinstance(e, FileNotFoundError), f"{data!r}: {type(e).__name__}: {e}"
        return
    assert math.isfinite(rep["perplexity"]) and rep["perplexity"] >= 1


@every(["window", "unigram", "bigram", "trigram", "decay", "kappa"])
def test_cache_settings_any_value(tiny_engine, name, value):
    e = tiny_engine.variant()  # its own cache: the shared fixture stays as it is
    try:
        e.set_cache(**{name: value})
    except Exception as err:  # noqa: BLE001
        assert refused_well(err, name), f"{name}={value!r}: {type(err).__name__}: {err}"
        return
    lp = e.next_token_logprobs("The game was the game")
    assert np.isfinite(lp).all() and abs(np.exp(lp).sum() - 1) < 1e-6


@pytest.fixture(scope="module")
def store():
    s = DocumentStore()
    v = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    s.upsert([f"d{i}" for i in range(12)], [f"t{i}" for i in range(12)], v,
             [{"i": i} for i in range(12)])
    return s


@pytest.mark.parametrize("method,value", [
    (m, v) for m in ["delete", "get", "search_k", "search_filter", "mmr_k", "mmr_lambda",
                     "energy_k"] for v in VALUES], ids=lambda x: repr(x)[:12])
def test_store_any_argument(store, method, value):
    q = np.ones(8, np.float32)
    n = len(store)
    try:
        if method == "delete":
            store.delete(value)
        elif method == "get":
            out = store.get(value)
            assert all(r is None or r.id in store.ids() for r in out)
        elif method == "search_k":
            assert len(store.search(q, value)) <= n
        elif method == "search_filter":
            store.search(q, 3, filter=value)
        elif method == "mmr_k":
            store.max_marginal_relevance(q, value)
        elif method == "mmr_lambda":
            store.max_marginal_relevance(q, 3, 6, value)
        else:
            store.search_energy(q, value)
    except Exception as e:  # noqa: BLE001
        assert isinstance(e, (ValueError, TypeError)), f"{method}({value!r}): {type(e).__name__}: {e}"
        assert str(e), method
    if method == "delete":  # a refused or empty delete removes nothing
        assert len(store) == n or (isinstance(value, (list, tuple)) and value)
    else:
        assert len(store) == n


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "{m}", "--prompt", "x", "--max-new-tokens", "-3"],
    ["generate", "--model", "{m}", "--prompt", "x", "--temperature", "nan"],
    ["generate", "--model", "{m}", "--prompt", "x", "--top-p", "2"],
    ["generate", "--model", "{m}", "--prompt", "x", "--seed", "-1"],
    ["generate", "--model", "{m}", "--prompt", "x", "--budget", "0.5"],
    ["eval", "--model", "{m}", "--data", "/nonexistent/file.tokens"],
    ["info", "--model", "/nonexistent/model"],
    ["info", "--model", "{file}"],
])
def test_cli_refuses_in_one_line(argv, tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "plain.txt"
    f.write_text("not a model")
    argv = [a.format(m=tiny_model_dir, file=f) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("retgen: error: ") and err.count("\n") == 1, err
