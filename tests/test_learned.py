"""The learned parts: reranker and policy training, persistence and the leakage mask."""
import json
import shutil

import numpy as np
import pytest
import torch

from retgen_engine import RetgenEngine
from retgen_testutil import live
from retgen_engine.ngram.features import backoff_features, skip_features
from retgen_engine.learn.heldout import build_training_data
from retgen_engine.lm.mixture import gated_lam, mix_logprobs
from retgen_engine.learn.policy import RetrievalPolicy, fit_policy, fit_skip, reward_table
from retgen_engine.learn.reranker import EnergyReranker, fit_reranker
from retgen_engine.learn.training import p_ret_table, train


@pytest.fixture(scope="module")
def data(tiny_engine):
    return build_training_data(tiny_engine, fraction=0.1, max_queries=1500, k=16, seed=0,
                               progress=False)


def test_leakage_mask_removes_the_query_itself(tiny_engine, data):
    stream = np.asarray(tiny_engine.stream_ids, dtype=np.int64)
    pats, cut = tiny_engine.patterns, data["cut"]
    checked = 0
    for qi in range(0, len(data["positions"]), 7):
        i, y = int(data["positions"][qi]), int(data["targets"][qi])
        for j, pid in enumerate(data["ids"][qi]):
            if pid < 0:
                continue
            ctx = pats.context_ids(int(pid), stream).tolist()
            L = len(ctx)
            if stream[i - L:i].tolist() != ctx:
                continue  # only the query's own pattern (its context at position i) matters here
            # brute force: occurrences of ctx -> y that do not lie wholly inside the slice
            ends = [e for e in range(L, len(stream)) if e - L < cut and
                    stream[e - L:e].tolist() == ctx and stream[e] == y]
            tot = [e for e in range(L, len(stream)) if e - L < cut and stream[e - L:e].tolist() == ctx]
            assert i not in ends  # the query's own occurrence is never counted
            assert data["ratio"][qi, j] == pytest.approx(len(ends) / len(tot))
            checked += 1
    assert checked > 5
    # a pattern seen only inside the held-out slice can never be retrieved in training
    assert (data["ids"] >= 0).sum() < (data["valid"].size)


def test_reranker_gradients_flow_and_training_lowers_loss(data):
    model, rep = fit_reranker(data, tau=0.05, steps=60, lr=0.05, progress=False)
    assert rep["train_loss_last"] < rep["train_loss_first"]
    assert rep["val_nll_after"] < rep["val_nll_before"]
    feats = EnergyReranker.stack(*(torch.as_tensor(data[k]).double() for k in
                                   ("dist", "logfreq", "div", "len", "exact")), 0.05)
    m = EnergyReranker(tau=0.05)
    loss = m.nll(feats, torch.as_tensor(data["valid"]), torch.as_tensor(data["ratio"]),
                 torch.as_tensor(data["log_base"]))
    loss.backward()
    assert m.w.grad is not None and torch.isfinite(m.w.grad).all() and m.w.grad.abs().sum() > 0
    assert m.lam_logit.grad is not None and m.lam_logit.grad != 0


def test_gate_is_trained_and_inference_computes_the_same_mixture(data):
    model, rep = fit_reranker(data, tau=0.05, steps=80, lr=0.05, progress=False, gate=True)
    assert model.gate and rep["val_nll_after"] < rep["val_nll_before"]
    assert set(rep["gate"]) and any(abs(v) > 1e-3 for v in rep["gate"].values())
    feats = EnergyReranker.stack(*(torch.as_tensor(data[k]).double() for k in
                                   ("dist", "logfreq", "div", "len", "exact")), 0.05)
    kf = torch.as_tensor(data["x"][:, -3:]).double()
    args = (feats, torch.as_tensor(data["valid"]), torch.as_tensor(data["ratio"]),
            torch.as_tensor(data["log_base"]))
    model.gate_w.grad = None
    model.nll(*args, kf).backward()
    assert model.gate_w.grad is not None and model.gate_w.grad.abs().sum() > 0
    # the numpy inference path (energy model + lam_shift + gated_lam) gives the training NLL
    kmax = data["valid"].shape[1]
    table, shift = p_ret_table(model.energy_model(), data, [kmax], [0.05], model)
    assert np.abs(shift).max() > 1e-3
    has = data["valid"].any(axis=1)
    lam = np.where(has, gated_lam(model.lam, shift[:, 0, 0]), 0.0)
    nll_np = -mix_logprobs(data["log_base"], table[:, 0, 0], lam).mean()
    with torch.no_grad():
        assert nll_np == pytest.approx(float(model.nll(*args, kf)), rel=1e-9)
    # without a gate the shift is zero and lam is the caller's
    assert np.all(p_ret_table(model.energy_model(), data, [kmax], [0.05])[1] == 0)
    np.testing.assert_allclose(gated_lam(np.array([0.0, 0.02]), np.array([3.0, 0.0])), [0, 0.02])


@pytest.mark.parametrize("method", ["exact", "reinforce"])
def test_policy_training_improves_reward(data, method):
    pol = RetrievalPolicy(data["x"].shape[1], 16, (4, 8, 16), (0.02, 0.05, 0.2), (0.0, 0.1, 0.3))
    table, _ = p_ret_table(EnergyReranker(0.05).energy_model(), data, pol.k_choices, pol.tau_choices)
    rep = fit_policy(data["x"], data["log_base"], table, pol, steps=150, progress=False,
                     method=method, eval_every=10)
    assert rep["train_neg_reward_last"] < rep["train_neg_reward_first"]
    # it starts from the best fixed action: before any step its greedy choice is that action
    assert rep["val_nll_before"] == pytest.approx(rep["val_nll_best_fixed"])
    grads = [p.grad for p in pol.parameters()]
    assert all(g is not None for g in grads)
    # the reported validation reward is what the returned policy earns, recomputed here from
    # its own greedy actions on the last 20% of the queries (the validation block)
    r, _ = reward_table(data["log_base"], table, pol, cost=0.002)
    n = len(data["x"])
    val = np.arange(n - max(1, int(n * 0.2)), n)
    k, tau, lam = pol.act(data["x"][val])
    ik = np.searchsorted(pol.k_choices, k)
    it = np.searchsorted(pol.tau_choices, tau)
    il = np.searchsorted(pol.lam_choices, lam)
    assert rep["val_reward_after"] == pytest.approx(float(r[val, ik, it, il].mean()), abs=1e-9)
    # weights kept from a training step beat the start; otherwise the start (the best fixed
    # action on every query) is what comes back
    if rep["best_step"] > 0:
        assert rep["val_reward_after"] > rep["val_reward_before"]
    else:
        assert rep["val_reward_after"] == pytest.approx(rep["val_reward_before"], abs=1e-12)
        fixed = rep["best_fixed"]
        assert set(k) == {fixed["k"]} and set(tau) == {fixed["temperature"]}
    assert rep["method"] == method and set(rep["best_fixed"]) == {"k", "temperature", "lam"}


def test_policy_reward_table_matches_the_mixture():
    pol = RetrievalPolicy(4, 8, (2, 4), (0.1,), (0.0, 0.5))
    log_base = np.log(np.array([0.2, 0.01]))
    p_ret = np.array([[[0.6], [0.0]], [[0.3], [0.3]]])
    r, lp = reward_table(log_base, p_ret, pol, cost=0.01)
    assert lp.shape == (2, 2, 1, 2)
    np.testing.assert_allclose(lp[0, 0, 0], np.log([0.2, 0.5 * 0.2 + 0.5 * 0.6]))
    np.testing.assert_allclose(lp[0, 1, 0, 1], np.log(0.5 * 0.2))  # nothing retrieved
    np.testing.assert_allclose(r[1, 1, 0, 1], lp[1, 1, 0, 1] - 0.01 * (1 + 4 / 4))
    np.testing.assert_allclose(r[:, :, :, 0], lp[:, :, :, 0])  # no retrieval, no cost
    with pytest.raises(ValueError, match="method='sgd'; allowed"):
        fit_policy(np.zeros((8, 4)), np.zeros(8), np.zeros((8, 2, 1)), pol, method="sgd")
    with pytest.raises(ValueError, match="val_split='x'; allowed"):
        fit_policy(np.zeros((8, 4)), np.zeros(8), np.zeros((8, 2, 1)), pol, val_split="x")
    # the gate's shift moves lam (never a skipped lam = 0) before mixing
    shift = np.full((2, 2, 1), 1.0)
    _, lp2 = reward_table(log_base, p_ret, pol, cost=0.01, shift=shift)
    lam = gated_lam(0.5, 1.0)
    np.testing.assert_allclose(lp2[0, 0, 0, 1], np.log((1 - lam) * 0.2 + lam * 0.6))
    np.testing.assert_allclose(lp2[:, :, :, 0], lp[:, :, :, 0])


def test_skip_stage_retrieves_where_the_gain_is_and_keeps_the_budget(tmp_path):
    rng = np.random.default_rng(0)
    n = 4000
    z = rng.normal(size=(n, 4))
    gain = 0.05 * (z[:, 1] > 0.5) + 0.01 * rng.normal(size=n)  # retrieval helps where z1 is high
    pol = RetrievalPolicy(8, 8, skip_dim=4)
    assert not pol.has_skip and pol.retrieve_mask(z).all()  # untrained: everyone retrieves
    rep = fit_skip(pol, z, gain, budget=0.3, steps=200, progress=False)
    assert rep["enabled"] and pol.has_skip
    go = pol.retrieve_mask(z)
    assert abs(go.mean() - 0.3) < 0.03  # the budget is the share of queries that retrieve
    assert rep["val_gain_kept_share"] > 0.9 and rep["val_mse"] < rep["val_mse_constant"]
    assert (z[go, 1] > 0.5).mean() > 0.9  # and it is where the gain is
    assert abs(pol.retrieve_mask(z, budget=0.6).mean() - 0.6) < 0.03  # another budget per call
    assert pol.retrieve_mask(z, budget=1.0).all()
    with pytest.raises(ValueError, match=r"budget=0\.0: the share of queries"):
        pol.retrieve_mask(z, budget=0.0)
    with pytest.raises(ValueError, match=r"skip features of shape \(4000, 3\)"):
        fit_skip(pol, z[:, :3], gain, progress=False)
    with pytest.raises(ValueError, match="no skip stage"):
        fit_skip(RetrievalPolicy(8, 8), z, gain, progress=False)
    pol.save(tmp_path / "p")
    back = RetrievalPolicy.load(tmp_path / "p")
    np.testing.assert_array_equal(back.retrieve_mask(z), go)
    assert back.has_skip and float(back.skip_budget) == pytest.approx(0.3)
    # a policy saved before the skip stage existed (no skip_dim in its config) still loads
    old = RetrievalPolicy(8, 8)
    old.write_into(tmp_path / "old")  # the layout of before: config.json + model.safetensors
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg.pop("skip_dim"), cfg.pop("skip_hidden")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert not RetrievalPolicy.load(tmp_path / "old").has_skip


def test_round_trip_is_exact(tmp_path):
    pol = RetrievalPolicy(10, 8)
    pol.save(tmp_path / "p")
    back = RetrievalPolicy.load(tmp_path / "p")
    for a, b in zip(pol.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    x = np.random.default_rng(0).normal(size=(5, 10))
    for a, b in zip(pol.act(x), back.act(x)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((live(tmp_path / "p") / "config.json").read_text())["hidden_dim"] == 8
    r = EnergyReranker(tau=0.02, gate=True)
    with torch.no_grad():
        r.w += torch.tensor([0.5, 0.1, -0.2, 0.3, 1.0], dtype=torch.float64)
        r.gate_w += torch.linspace(-1, 1, len(r.gate_w), dtype=torch.float64)
        r.gate_mu += 0.5
    r.save(tmp_path / "r")
    back = EnergyReranker.load(tmp_path / "r")
    assert back.gate and back.lam == r.lam
    for a, b in zip(r.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"init_lam=1\.0\): tau and temperature must be > 0"):
        EnergyReranker(tau=0.05, init_lam=1.0)
    # a reranker saved without a gate still loads (and has none)
    EnergyReranker(tau=0.02).save(tmp_path / "r0")
    assert not EnergyReranker.load(tmp_path / "r0").gate


def test_train_stores_parts_in_the_model(tiny_model_dir, tmp_path):
    d = shutil.copytree(tiny_model_dir, tmp_path / "m")
    eng = RetgenEngine.load(d)
    rep = train(eng, seed=0, max_queries=1200, fraction=0.1, reranker_steps=40, policy_steps=60,
                progress=False)
    assert rep["reranker"]["val_nll_after"] <= rep["reranker"]["val_nll_before"] + 1e-9
    trained = RetgenEngine.load(d)  # checksums of the new files verified
    assert trained.reranker is not None and trained.policy is not None
    params = trained.retrieval_params()
    assert params.use_policy and not trained.retrieval_params(k=8).use_policy
    assert trained.lm.gate is trained.reranker and trained.reranker.gate
    for ctx in ["The game was", "", "of the"]:
        p = np.exp(trained.next_token_logprobs(ctx))
        assert abs(p.sum() - 1) < 1e-5 and p.min() > 0
    # with the gate (and the policy), stream scoring equals the step distributions
    seq = np.concatenate([[1], trained.stream_ids[2000:2025].astype(np.int64)])
    for params in (params, trained.retrieval_params(k=8, temperature=0.05, lam=0.3)):
        out = trained.lm.score_stream(seq, params)
        for i in range(1, len(seq)):
            lp, info = trained.lm.next_token_logprobs(seq[:i].tolist(), params)
            assert out["logp"][i - 1] == pytest.approx(lp[seq[i]], abs=1e-6)
            assert out["lam"][i - 1] == pytest.approx(info.lam, abs=1e-9)
    used = out["lam"][out["lam"] > 0]  # fixed lam 0.3: the gate moves it per query
    assert np.unique(np.round(used, 9)).size > 1 and used.max() != used.min()
    # the skip stage decides before encoding: skipped tokens encode nothing
    assert rep["policy"]["skip"]["enabled"] and trained.policy.has_skip
    pol_params = trained.retrieval_params(budget=0.5)
    # new text (not a stretch the back-off knows by heart): the training words, shuffled
    rng = np.random.default_rng(0)
    long = np.concatenate([[1], rng.permutation(trained.stream_ids[2000:2300].astype(np.int64))])
    out = trained.lm.score_stream(long, pol_params)
    encoded = []
    real = trained.retriever.encode
    trained.retriever.encode = lambda texts, **kw: encoded.append(len(texts)) or real(texts, **kw)
    for i in range(1, 40):
        lp, info = trained.lm.next_token_logprobs(long[:i].tolist(), pol_params)
        assert out["logp"][i - 1] == pytest.approx(lp[long[i]], abs=1e-6)
    trained.retriever.encode = real
    pos = np.arange(1, 40)
    go = trained.lm.policy.retrieve_mask(
        skip_features(backoff_features(trained.backoff, long, pos), trained.lm.cache.window,
                      long, pos), budget=0.5)
    nonempty = np.array([bool(t) for t in trained.retriever.stream_texts(long, pos)])
    assert 0 < len(encoded) == int((go & nonempty).sum()) < int(nonempty.sum())
    full = trained.lm.score_stream(long, trained.retrieval_params(budget=1.0))
    assert np.mean(full["retrieved_any"]) > np.mean(out["retrieved_any"])
    assert not np.any(out["retrieved_any"] & ~full["retrieved_any"])
    with pytest.raises(ValueError, match="budget=0.5 needs the learned policy"):
        trained.retrieval_params(k=8, budget=0.5)
    a = trained.generate("The game", max_new_tokens=8, seed=3)
    b = RetgenEngine.load(d).generate("The game", max_new_tokens=8, seed=3)
    assert a.text == b.text
    f = tmp_path / "v.tokens"
    f.write_text(" the game was released in Japan . \n")
    rep = trained.perplexity(f)
    assert rep["params"]["use_policy"] and 0 <= rep["retrieval_rate"] <= 1
    # the untrained model still works with the fixed defaults
    untrained = RetgenEngine.load(tiny_model_dir)
    assert untrained.policy is None
    # variants: without the learned parts the trained model scores as the untrained one does;
    # the reranker without its gate differs from both
    ids = np.asarray(trained.stream_ids[:600])
    plain = trained.variant(reranker=False, policy=False)
    assert plain.lm.gate is None and plain.lm.policy is None and plain.retriever.energy.w_sim == 1
    assert plain.perplexity(ids)["perplexity"] == pytest.approx(untrained.perplexity(ids)["perplexity"], rel=1e-12)
    no_gate = trained.variant(gate=False, policy=False)
    assert no_gate.lm.gate is None and no_gate.retriever.energy == trained.retriever.energy
    assert no_gate.perplexity(ids)["perplexity"] != trained.perplexity(ids, policy=False)["perplexity"]
    # the learned parts travel with a save to a new directory
    saved = RetgenEngine.load(trained.save(tmp_path / "copy"))
    assert saved.info()["learned"] == ["policy", "reranker"]
    assert saved.perplexity(ids)["perplexity"] == trained.perplexity(ids)["perplexity"]
