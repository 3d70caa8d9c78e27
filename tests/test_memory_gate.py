"""The memory's learned gate: exact in stream and step modes, a proper distribution, fitted
where it pays, saved with the memory."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from retgen_engine import RetgenEngine
from retgen_engine.config import MemoryConfig, RETGENConfig
from retgen_engine.learn.memory_gate import fit_gate, memory_nll
from retgen_engine.memory.gate import GATE_MAX, apply_gate, gate_dim, gate_inputs, gated

PHRASE = "the zorblaxian quillon vetch engine hums at midnight over the brass harbour"


def with_gate(cfg: MemoryConfig, seed: int = 0, bias: float = 0.7) -> MemoryConfig:
    """``cfg`` with a random (non-trivial) gate."""
    G = gate_dim(cfg.order)
    rng = np.random.default_rng(seed)
    return MemoryConfig.model_validate({
        **cfg.model_dump(), "gate": [*rng.normal(0, 0.8, G).round(4).tolist(), bias],
        "gate_center": rng.normal(0, 0.5, G).round(4).tolist(),
        "gate_scale": rng.uniform(0.5, 2, G).round(4).tolist()})


@pytest.fixture()
def engine(tiny_model_dir, tmp_path) -> RetgenEngine:
    eng = RetgenEngine.load(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    eng.memory.config = eng.config.memory = with_gate(eng.memory.config)
    return eng


@pytest.mark.parametrize("keys", ["lexical", "dense"])
def test_stream_and_step_agree_exactly_with_a_gate(engine, keys):
    engine.memory.add([PHRASE + " ."], ids=["z"])  # new words: ids past the back-off's
    ids = engine.stream_ids[300:360].astype(np.int64)
    seq = np.concatenate([[1], ids, engine.tokenizer.encode(PHRASE)])
    params = engine.retrieval_params(memory_refresh=4, memory_keys=keys, memory_k=16)
    out = engine.lm.score_stream(seq, params)
    no_gate = engine.memory.config.model_copy(update={"gate": [], "gate_center": [],
                                                      "gate_scale": []})
    lam = out["lam_mem"]
    assert (lam > 0).mean() > 0.5 and lam.max() <= GATE_MAX
    for i in range(1, len(seq), 3):
        lp, info = engine.lm.next_token_logprobs(seq[:i].tolist(), params)
        assert abs(lp[seq[i]] - out["logp"][i - 1]) < 1e-9, i
        assert abs(info.lam_mem - lam[i - 1]) < 1e-12 and info.memory.lam == info.lam_mem
        assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-9) and (lp > -np.inf).all()
    # the gate moved the weight (it is not a no-op), and only where the memory had a weight
    engine.memory.config = no_gate
    plain = engine.lm.score_stream(seq, params)["lam_mem"]
    assert np.abs(plain - lam).max() > 0.01 and ((plain > 0) == (lam > 0)).all()


def test_a_zero_gate_is_the_memory_without_one(engine):
    cfg = engine.memory.config
    zero = cfg.model_copy(update={"gate": [0.0] * len(cfg.gate)})
    lam = np.array([0.0, 1e-9, 0.1, 0.5, 0.94])
    C, w = np.ones((cfg.order, 5)), np.full(5, 0.3)
    assert np.allclose(apply_gate(zero, lam, C, w, np.zeros((5, 3))), lam, atol=1e-12, rtol=0)
    assert gated(np.array([0.5]), np.array([100.0]))[0] == GATE_MAX
    with pytest.raises(ValueError, match="context="):
        apply_gate(cfg, lam, C, w, None)


def test_bad_gate_configs_name_the_field():
    G = gate_dim(5)
    with pytest.raises(ValidationError, match="memory gate: 8 weights and a bias"):
        MemoryConfig(gate=[0.0] * G, gate_center=[0.0] * G, gate_scale=[1.0] * G)
    with pytest.raises(ValidationError, match="gate_center/gate_scale given without"):
        MemoryConfig(gate_center=[0.0] * G)
    with pytest.raises(ValidationError, match="gate_scale"):
        MemoryConfig(gate=[0.0] * (G + 1), gate_center=[0.0] * G, gate_scale=[0.0] * G)
    cfg = RETGENConfig(memory=with_gate(MemoryConfig()))
    assert RETGENConfig.from_json(cfg.to_json()) == cfg


def test_saved_and_loaded_with_the_memory(engine):
    cfg = engine.memory.config
    engine.save_memory()
    again = RetgenEngine.load(engine.model_dir)
    assert again.memory.config.gate == cfg.gate and again.memory.config.gate_scale == cfg.gate_scale
    text = engine.tokenizer.decode(engine.stream_ids[:120].tolist())
    assert np.array_equal(again.next_token_logprobs(text), engine.next_token_logprobs(text))


def _planted(n: int, seed: int):
    """Memory terms where the passages are right only where the back-off is unsure (its
    back-off weight, the third context feature, is high): a gate can learn that, the
    per-order weights cannot."""
    rng = np.random.default_rng(seed)
    N = 2
    unsure = rng.random(n) < 0.5
    context = np.stack([rng.random(n), rng.random(n), np.where(unsure, 0.9, 0.1)], axis=1)
    C = rng.integers(1, 6, size=(N, n)).astype(float)
    H = C.copy()
    right = np.where(unsure, rng.random(n) < 0.9, rng.random(n) < 0.05)
    F = np.where(right, H, 0.0) * np.array([[0.6], [0.9]])
    log_prev = np.log(np.full(n, 0.02))
    wmax = rng.uniform(0.05, 0.5, n)
    return log_prev, F, H, C, wmax, context


def test_fit_gate_learns_a_planted_dependency_and_it_holds_on_new_positions():
    base = MemoryConfig(order=2, weights=[0.1, 0.3], kappa=[1.0, 1.0])
    fit = _planted(4000, 0)
    cfg = fit_gate(*fit, base)
    assert len(cfg.gate) == gate_dim(2) + 1
    test = _planted(4000, 1)
    before, after = memory_nll(*test, base), memory_nll(*test, cfg)
    assert math.exp(after) < 0.8 * math.exp(before)
    # no signal for a gate (the memory right alike everywhere): what is fitted on one sample
    # does not swing the weight on another (it would, were noise in the features learned)
    def flat(seed):
        log_prev, F, H, C, wmax, context = _planted(3000, seed)
        return log_prev, H * 0.5, H, C, wmax, context

    noise = fit_gate(*flat(2), base)
    test = flat(3)
    assert memory_nll(*test, noise) < memory_nll(*test, base) + 0.002
    if noise.gate:
        z = (gate_inputs(test[5], test[3], test[4]) - noise.gate_center) / noise.gate_scale
        assert np.abs(z @ np.array(noise.gate[:-1])).max() < 0.5


def test_training_data_read_the_gated_memory_as_the_model_does(engine):
    """The learned parts' training data carry the memory's terms with its gate applied, read
    with the held-out back-off's features (what the model computes at a held-out position)."""
    from retgen_engine.learn.heldout import HeldOutSlice, build_training_data, memory_terms

    data = build_training_data(engine, fraction=0.1, max_queries=300, k=8, seed=0,
                               progress=False)
    assert "mem_lam" in data and data["mem_lam"].max() <= GATE_MAX
    stream = np.asarray(engine.stream_ids, dtype=np.int64)
    T, lmax = len(stream), int(engine.patterns.length.max())
    held = HeldOutSlice.make(stream, engine.backoff.V, engine.backoff.order, lmax, data["cut"], T)
    cut = data["cut"]
    base = max(cut - engine.lm.cache.window - engine.backoff.order, 0)
    _, lam, _ = memory_terms(engine, held, data["positions"], cut - base)
    assert np.array_equal(lam, data["mem_lam"])
    engine.memory.config = engine.memory.config.model_copy(update={"gate": [], "gate_center": [],
                                                                   "gate_scale": []})
    _, plain, _ = memory_terms(engine, held, data["positions"], cut - base)
    assert np.abs(plain - lam).max() > 0.01
