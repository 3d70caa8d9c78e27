import numpy as np
import pytest

from retgen_engine.lm.generator import cache_mass
from retgen_engine.lm.mixture import RetrievalParams, mix_logprobs
from retgen_engine.ngram.patterns import extract_patterns
from retgen_engine.ngram.counts import build_levels


def test_patterns_store_exact_counts_once():
    # a b a b c a b  -> context "a" (len 1) continues with b three times
    ids = np.array([2, 3, 2, 3, 4, 2, 3], dtype=np.int32)
    t = extract_patterns(build_levels(ids, 5, 3), 5, [1, 2], [1, 1])
    ctx = {tuple(t.context_ids(p, ids).tolist()): p for p in range(len(t))}
    assert len(ctx) == len(t)  # each context stored once
    toks, cnts = t.continuations(ctx[(2,)])
    assert toks.tolist() == [3] and cnts.tolist() == [3]
    toks, cnts = t.continuations(ctx[(3,)])
    assert dict(zip(toks.tolist(), cnts.tolist())) == {2: 1, 4: 1}
    toks, cnts = t.continuations(ctx[(2, 3)])
    assert dict(zip(toks.tolist(), cnts.tolist())) == {2: 1, 4: 1}
    assert t.count[ctx[(2, 3)]] == 2
    # min_count drops rare contexts
    t2 = extract_patterns(build_levels(ids, 5, 3), 5, [2], [2])
    assert len(t2) == 1


def test_mix_is_normalized_and_positive():
    rng = np.random.default_rng(0)
    p_kn = rng.dirichlet(np.ones(50))
    p_ret = np.zeros(50)
    p_ret[[3, 7]] = [0.25, 0.75]
    lp = mix_logprobs(np.log(p_kn), p_ret, 0.4)
    assert abs(np.exp(lp).sum() - 1) < 1e-12 and np.isfinite(lp).all()
    np.testing.assert_allclose(mix_logprobs(np.log(p_kn), p_ret, 0.0), np.log(p_kn))


@pytest.mark.parametrize("lam,k,tau", [(0.0, 8, 0.05), (0.3, 8, 0.05), (0.9, 64, 1.0), (0.5, 1, 0.01)])
def test_next_token_distribution_sums_to_one(tiny_engine, lam, k, tau):
    for ctx in ["The game was", "", "zzzz qqqq", "of the"]:
        lp = tiny_engine.next_token_logprobs(ctx, k=k, temperature=tau, lam=lam)
        p = np.exp(lp)
        assert abs(p.sum() - 1.0) < 1e-5
        assert p.min() > 0 and p[tiny_engine.vocab.unk_id] > 0
        assert len(p) == len(tiny_engine.vocab)


def test_stream_scores_match_step_distributions(tiny_engine):
    ids = tiny_engine.stream_ids[2000:2030].astype(np.int64)
    seq = np.concatenate([[1], ids])
    params = tiny_engine.retrieval_params(lam=0.4)
    out = tiny_engine.lm.score_stream(seq, params)
    for i in range(1, len(seq)):
        lp, _ = tiny_engine.lm.next_token_logprobs(seq[:i].tolist(), params)
        assert out["logp"][i - 1] == pytest.approx(lp[seq[i]], abs=1e-6)


def test_retrieval_params_validate():
    with pytest.raises(ValueError, match="k=0"):
        RetrievalParams(k=0)
    with pytest.raises(ValueError, match="temperature"):
        RetrievalParams(temperature=0)
    with pytest.raises(ValueError, match="lam"):
        RetrievalParams(lam=1.0)


def test_perplexity_report(tiny_engine, sample_corpus, tmp_path):
    f = tmp_path / "valid.tokens"
    f.write_text(" the game was released in Japan . \n\n = Heading = \n")
    rep = tiny_engine.perplexity(f)
    assert rep["tokens"] == 7 + 1 + 1 + 3 + 1  # words + one <eos> per line, blank included
    assert rep["perplexity"] > 1 and rep["backoff_perplexity"] > 1
    assert 0 <= rep["retrieval_coverage"] <= 1
    no_retrieval = tiny_engine.perplexity(f, lam=0.0, memory=False)
    assert no_retrieval["perplexity"] == pytest.approx(rep["backoff_cache_perplexity"])
    assert no_retrieval["perplexity"] != pytest.approx(rep["backoff_perplexity"])  # cache is on


@pytest.mark.parametrize("kw", [dict(unigram=0.2, bigram=0.3),
                                dict(unigram=0.2, bigram=0.2, trigram=0.3, decay=7.0, kappa=1.5),
                                dict(unigram=0.0, bigram=0.0, trigram=0.4),
                                dict(unigram=0.3, decay=2.0)])
def test_context_cache_stream_matches_dense(kw):
    from retgen_engine.ngram.cache import ContextCache

    rng = np.random.default_rng(0)
    V = 12  # few types: bigram and trigram histories repeat inside the window
    seq = rng.integers(0, V, size=400)
    cache = ContextCache(window=50, **kw)
    p_kn = rng.dirichlet(np.ones(V), size=len(seq))
    log_kn = np.log(p_kn[np.arange(len(seq)), seq])[1:]
    stream = cache.mix_stream(log_kn, seq, V, start=1)
    used = np.zeros(3)
    for i in range(1, len(seq)):
        p, mu = cache.dense(seq[:i].tolist(), p_kn[i])
        assert abs(p.sum() - 1) < 1e-9 and p.min() > 0
        assert stream[i - 1] == pytest.approx(np.log(p[seq[i]]), abs=1e-10)
        used += [mu.unigram > 0, mu.bigram > 0, mu.trigram > 0]
        # the trace's share of the cache is what the mixture gave the token beyond the back-off
        share, at = cache.share(seq[:i].tolist(), int(seq[i]), mu)
        assert share == pytest.approx(p[seq[i]] - (1 - mu.total) * p_kn[i][seq[i]], abs=1e-12)
        assert (at >= 0) == (share > 0) and (at < 0 or seq[at] == seq[i])
    # every part was in force somewhere (the window slides past position 50)
    assert all(used[j] > 0 for j, w in enumerate(("unigram", "bigram", "trigram")) if kw.get(w))
    # count-dependent weights: a history seen once weighs less than one seen often
    if kw.get("kappa"):
        assert ContextCache(window=50, **kw)._count_weight(0.2, np.array([1, 10])).tolist() == \
            pytest.approx([0.2 / 2.5, 0.2 * 10 / 11.5])


@pytest.mark.parametrize("decay", [0.0, 3.0])
def test_context_cache_step_counts_what_the_stream_counts(decay):
    """One step's direct count over the window equals the stream core's, for every token."""
    from retgen_engine.ngram.cache import ContextCache

    rng = np.random.default_rng(1)
    V = 9
    seq = rng.integers(0, V, size=200)
    cache = ContextCache(window=40, unigram=0.2, bigram=0.2, trigram=0.2, decay=decay)
    everyone = np.arange(V)
    for i in range(1, len(seq), 3):
        h = seq[max(0, i - 40):i]
        ref, counts = cache.parts(np.concatenate([h, [0]]), np.array([len(h)]), everyone[None, :], V)
        _, _, p, mu = cache._step(seq[:i].tolist(), V, everyone)
        assert np.allclose(p, ref[:, 0], rtol=0, atol=1e-12), i
        assert (mu.unigram, mu.bigram, mu.trigram) == pytest.approx(
            tuple(cache.weights(counts)[:, 0]), abs=1e-15)


def test_context_cache_validates():
    from retgen_engine.ngram.cache import ContextCache

    with pytest.raises(ValueError, match="sum < 1"):
        ContextCache(unigram=0.6, bigram=0.5)
    with pytest.raises(ValueError, match="trigram=0.5: each >= 0 and their sum < 1"):
        ContextCache(unigram=0.3, bigram=0.3, trigram=0.5)
    with pytest.raises(ValueError, match="decay=-1"):
        ContextCache(decay=-1)
    with pytest.raises(ValueError, match="kappa=-0.5"):
        ContextCache(kappa=-0.5)


def test_similarity_only_scoring_skips_candidate_features(tiny_engine, monkeypatch):
    """The per-token hot path computes candidate features only when the energy or a gate
    reads them."""
    assert not tiny_engine.retriever.energy.uses_features and tiny_engine.lm.gate is None

    def boom(r):
        raise AssertionError("candidate features computed for a similarity-only energy")

    monkeypatch.setattr(tiny_engine.retriever, "features", boom)
    params = tiny_engine.retrieval_params(k=8, temperature=0.05, lam=0.3)
    lp, info = tiny_engine.lm.next_token_logprobs([5, 6, 7], params)
    assert abs(np.exp(lp).sum() - 1) < 1e-6
    seq = np.concatenate([[1], tiny_engine.stream_ids[100:120].astype(np.int64)])
    assert np.isfinite(tiny_engine.lm.score_stream(seq, params)["logp"]).all()


def test_step_shortcuts_equal_the_direct_computation(tiny_engine):
    """A generation step's p_ret (all continuations gathered at once) equals the sum over the
    retrieved patterns one by one, and the trace's cache share read from the step equals the
    cache recomputed for that token."""
    lm, ret = tiny_engine.lm, tiny_engine.retriever
    hist = [1] + tiny_engine.stream_ids[3000:3040].astype(int).tolist()
    params = tiny_engine.retrieval_params(k=16, temperature=0.1, lam=0.3, memory=False)
    lp, info = lm.next_token_logprobs(hist, params)
    assert info.lam > 0
    want = np.zeros(ret.V)
    for j, pid in enumerate(info.retrieved.I[0].tolist()):
        if pid >= 0 and info.weights[0, j] != 0:
            toks, cnts = ret.patterns.continuations(pid)
            want[toks] += info.weights[0, j] * cnts / ret.patterns.count[pid]
    got = ret.dense(info.retrieved, params.temperature, weights=info.weights)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert info.cache_mu.total > 0
    for tok in list(dict.fromkeys(hist[-30:])) + [int(np.argmax(lp))]:
        direct = lm.cache.share(hist, tok, info.cache_mu)
        fast = lm.cache.share(hist, tok, info.cache_mu, cache_mass(info, tok))
        assert fast[1] == direct[1] and fast[0] == pytest.approx(direct[0], rel=1e-9, abs=1e-15)
