"""min-p and typical sampling: the sets they keep on hand-made distributions, seeded
determinism through the engine, and refusals that name the argument."""
import numpy as np
import pytest

from retgen_engine.checks import ArgumentError
from retgen_engine.cli import main
from retgen_engine.config import GenerationConfig
from retgen_engine.lm.sampling import SamplingParams, distribution, sample

P = np.array([0.5, 0.3, 0.15, 0.05])


def SP(**kw) -> SamplingParams:
    """Sampling with only the truncations named (the config's default typical_p left out)."""
    return SamplingParams(**{"typical_p": 1.0, **kw})


def kept(params: SamplingParams, p=P) -> set[int]:
    q = distribution(np.log(p), params, unk_id=0)
    assert abs(q.sum() - 1) < 1e-12 and (q >= 0).all()
    return set(np.flatnonzero(q > 0).tolist())


def drawn(params: SamplingParams, p=P, n=400) -> set[int]:
    rng = np.random.default_rng(0)
    return {sample(np.log(p), params, rng) for _ in range(n)}


@pytest.mark.parametrize("min_p,expect", [
    (0.0, {0, 1, 2, 3}),  # off
    (0.2, {0, 1, 2}),     # p >= 0.1
    (0.31, {0, 1}),       # p >= 0.155
    (0.61, {0}),          # p >= 0.305
    (1.0, {0}),           # only the likeliest
])
def test_min_p_keeps_tokens_near_the_top(min_p, expect):
    params = SP(min_p=min_p, allow_unk=True)
    assert kept(params) == expect
    assert drawn(params) == expect


def test_min_p_renormalizes_the_kept_mass():
    q = distribution(np.log(P), SP(min_p=0.5, allow_unk=True))
    assert np.allclose(q, [0.5 / 0.8, 0.3 / 0.8, 0, 0])


def test_min_p_after_temperature():
    # T = 2 flattens: sqrt-probabilities 0.707, 0.548, 0.387, 0.224 (normalized later);
    # 0.5 x the top keeps the top three, where T = 1 keeps two
    assert kept(SP(min_p=0.5, allow_unk=True)) == {0, 1}
    assert kept(SP(min_p=0.5, temperature=2.0, allow_unk=True)) == {0, 1, 2}


def test_typical_keeps_tokens_whose_surprisal_is_near_the_entropy():
    # entropy of P = 1.1432 nats; surprisals 0.693, 1.204, 1.897, 2.996: the closest is
    # token 1 (|1.204 - 1.143| = 0.06), then 0 (0.45), then 2 (0.75), then 3 (1.85)
    ent = -(P * np.log(P)).sum()
    order = np.argsort(np.abs(-np.log(P) - ent))
    assert order.tolist() == [1, 0, 2, 3]
    assert kept(SP(typical_p=0.2, allow_unk=True)) == {1}
    assert kept(SP(typical_p=0.29, allow_unk=True)) == {1}      # 0.3 covers it
    assert kept(SP(typical_p=0.31, allow_unk=True)) == {0, 1}
    assert kept(SP(typical_p=0.9, allow_unk=True)) == {0, 1, 2}
    assert kept(SP(typical_p=1.0, allow_unk=True)) == {0, 1, 2, 3}
    assert drawn(SP(typical_p=0.2, allow_unk=True)) == {1}


def test_typical_drops_the_likeliest_token_when_it_is_atypical():
    # entropy of [0.4, 0.2, 0.2, 0.2] = 1.332 nats: the 0.2s (surprisal 1.609) are closer to
    # it than the top token (0.916), so they come first and the top may be left out
    p = np.array([0.4, 0.2, 0.2, 0.2])
    assert kept(SP(typical_p=0.3, allow_unk=True), p) == {1, 2}
    assert kept(SP(typical_p=0.5, allow_unk=True), p) == {1, 2, 3}
    assert kept(SP(typical_p=0.7, allow_unk=True), p) == {0, 1, 2, 3}


def test_truncations_compose_and_unk_stays_out():
    # top-k 3 leaves {0,1,2} (0.526, 0.316, 0.158); min-p 0.55 of that leaves {0,1}
    assert kept(SP(top_k=3, min_p=0.55, allow_unk=True)) == {0, 1}
    # <unk> (id 0) removed first: 0.6, 0.3, 0.1 over {1,2,3}; min-p 0.55 keeps {1}
    assert kept(SP(top_k=3, min_p=0.55)) == {1}
    # top-p 0.7 leaves {0,1} (0.625, 0.375; entropy 0.66): token 0 is the more typical one
    assert kept(SP(top_p=0.7, typical_p=0.5, allow_unk=True)) == {0}
    assert kept(SP(top_p=0.7, typical_p=0.7, allow_unk=True)) == {0, 1}


def test_greedy_ignores_the_truncations_and_draws_nothing():
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert sample(np.log(P), SP(temperature=0, min_p=0.9, typical_p=0.1,
                                            allow_unk=True), rng) == 0
    assert rng.bit_generator.state == state


def test_defaults_are_the_configs():
    g = GenerationConfig()
    s = SamplingParams()
    for name in ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty"):
        assert getattr(s, name) == getattr(g, name)


def test_seeded_min_p_and_typical_through_the_engine(tiny_engine):
    for kw in ({"min_p": 0.05}, {"typical_p": 0.8}, {"min_p": 0.02, "typical_p": 0.9}):
        a = tiny_engine.generate("The game", max_new_tokens=20, seed=4, trace=False, **kw)
        b = tiny_engine.generate("The game", max_new_tokens=20, seed=4, trace=False, **kw)
        s = list(tiny_engine.stream("The game", max_new_tokens=20, seed=4, trace=False, **kw))
        assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens] \
            == [t.token_id for t in s]
    # min-p 1 keeps only the likeliest token: greedy
    g = tiny_engine.generate("The game was", max_new_tokens=8, temperature=0, trace=False)
    m = tiny_engine.generate("The game was", max_new_tokens=8, min_p=1.0, typical_p=1.0,
                             seed=9, trace=False)
    assert [t.token_id for t in m.tokens] == [t.token_id for t in g.tokens]


def test_min_p_narrows_what_is_drawn(tiny_engine):
    # over many seeds, min-p draws from fewer distinct first tokens than pure sampling
    first = lambda **kw: {tiny_engine.generate("The", max_new_tokens=1, seed=s, trace=False,
                                               temperature=1.0, top_p=1.0, **kw).tokens[0].token_id
                          for s in range(40)}
    assert len(first(min_p=0.3)) < len(first(min_p=0.0))


@pytest.mark.parametrize("name,value,allowed", [
    ("min_p", -0.1, "in [0.0, 1.0]"), ("min_p", 1.5, "in [0.0, 1.0]"),
    ("min_p", float("nan"), "finite"), ("min_p", "0.1", "number"), ("min_p", True, "number"),
    ("typical_p", 0.0, "in (0.0, 1.0]"), ("typical_p", 1.01, "in (0.0, 1.0]"),
    ("typical_p", float("inf"), "finite"), ("typical_p", [0.5], "number"),
])
def test_bad_values_name_the_argument(tiny_engine, name, value, allowed):
    for call in (lambda: SamplingParams(**{name: value}),
                 lambda: tiny_engine.generate("The game", max_new_tokens=2, **{name: value}),
                 lambda: list(tiny_engine.stream("The game", max_new_tokens=2, **{name: value}))):
        with pytest.raises(ArgumentError) as e:
            call()
        assert f"{name}=" in str(e.value) and allowed in str(e.value)
    if isinstance(value, float):  # pydantic's lax mode reads "0.1" and True in a config
        with pytest.raises(ValueError, match=name):
            GenerationConfig(**{name: value})


def test_cli_generate_min_p_and_typical(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "The game",
                 "--max-new-tokens", "5", "--seed", "1", "--min-p", "0.05",
                 "--typical-p", "0.9"]) == 0
    assert capsys.readouterr().out.startswith("The game")
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "x",
                 "--min-p", "2"]) == 2
    assert "min_p=2.0" in capsys.readouterr().err


def test_cli_generate_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    g = GenerationConfig()
    assert "--min-p MIN_P keep tokens" in out and f"built-in {g.min_p}" in out
    assert "--typical-p TYPICAL_P locally typical" in out and f"built-in {g.typical_p}" in out


def test_adapters_pass_min_p_and_typical_through(tiny_engine):
    pytest.importorskip("langchain_core")
    from retgen_integrations.langchain import ChatRetgen

    llm = ChatRetgen(engine=tiny_engine, min_p=0.05, typical_p=0.9, seed=2, max_tokens=6)
    kw = llm._kw(None, {})
    assert kw["min_p"] == 0.05 and kw["typical_p"] == 0.9
    assert llm._kw(None, {"typical_p": 0.5})["typical_p"] == 0.5  # per call
    want = tiny_engine.generate("The game", max_new_tokens=6, seed=2, min_p=0.05,
                                typical_p=0.9, trace=False).text
    assert llm.invoke("The game").content == want
    with pytest.raises(ValueError, match="min_p"):
        ChatRetgen(engine=tiny_engine, min_p=1.5)


@pytest.mark.parametrize("peak", [0.0, 2.0, 8.0])
def test_top_p_and_typical_sets_equal_a_full_sort(monkeypatch, peak):
    """The candidate shortcut of _smallest_set keeps exactly the set a full sort keeps, on
    flat and peaked distributions over a large vocabulary (ties included)."""
    from retgen_engine.lm import sampling

    rng = np.random.default_rng(int(peak))
    V = 20_000
    logits = rng.standard_normal(V) * peak
    logits[rng.integers(V, size=500)] = logits.max()  # ties at the top
    logits[:300] = np.round(logits[:300], 1)           # ties in the middle
    logp = logits - np.logaddexp.reduce(logits)
    for kw in ({"top_p": 0.9}, {"top_p": 0.5}, {"typical_p": 0.95}, {"typical_p": 0.2},
               {"top_p": 0.95, "typical_p": 0.9}):
        params = SamplingParams(temperature=1.0, allow_unk=True, **{"typical_p": 1.0, **kw})
        fast = sampling.distribution(logp, params)
        monkeypatch.setattr(sampling, "CANDIDATES", V)  # > V / 2: always the full sort
        full = sampling.distribution(logp, params)
        monkeypatch.undo()
        np.testing.assert_array_equal(fast > 0, full > 0)
        np.testing.assert_allclose(fast, full, rtol=1e-12, atol=0)
