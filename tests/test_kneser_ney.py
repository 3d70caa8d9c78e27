import numpy as np
import pytest

from retgen_engine.ngram.kneser_ney import KneserNeyLM, _discounts
from retgen_engine.ngram.counts import build_levels

# vocabulary ids: 0 <unk>, 1 <eos>, 2 a, 3 b, 4 c
A, B, C = 2, 3, 4


def toy(order=2):
    ids = np.array([A, B, A, B, C], dtype=np.int32)
    return KneserNeyLM.from_levels(build_levels(ids, 5, order), order, 5)


def test_hand_checked_bigram_values():
    # Continuation counts: a<-b, b<-a, c<-b => 1 each; default discounts 0.5/1.0/1.5 because
    # the toy counts-of-counts have zeros. p1(w) = (max(cc - .5, 0) + 1.5/5) / 3.
    kn = toy()
    p1 = kn.distribution([])
    assert p1[A] == pytest.approx((0.5 + 0.3) / 3)
    assert p1[0] == pytest.approx(0.3 / 3)  # <unk>: only the uniform share
    # history a: c(ab) = 2 -> D2 = 1.0, gamma = 1.0 * 1 / 2
    pa = kn.distribution([A])
    assert pa[B] == pytest.approx((2 - 1.0 + 1.0 * p1[B]) / 2)
    assert pa[A] == pytest.approx(1.0 * p1[A] / 2)
    # history b: c(ba) = c(bc) = 1 -> D1 = .5 each, gamma = (.5 * 2) / 2
    pb = kn.distribution([B])
    assert pb[C] == pytest.approx((0.5 + 1.0 * p1[C]) / 2)
    # history c was never continued: back off to the unigram distribution
    np.testing.assert_allclose(kn.distribution([C]), p1)


def test_modified_discounts_formula():
    counts = np.array([1] * 4 + [2] * 2 + [3] + [4] + [9])
    d = _discounts(counts)
    y = 4 / (4 + 2 * 2)
    np.testing.assert_allclose(d, [1 - 2 * y * 2 / 4, 2 - 3 * y * 1 / 2, 3 - 4 * y * 1 / 1])


@pytest.fixture(scope="module")
def kn5(sample_corpus):
    from retgen_engine.text.corpus import CorpusSource, tokenize_corpus

    tc = tokenize_corpus(CorpusSource([sample_corpus]), "words", progress=False)
    return tc, KneserNeyLM.from_levels(build_levels(tc.ids, len(tc.vocab), 5), 5, len(tc.vocab))


def test_distributions_sum_to_one_and_are_positive(kn5):
    tc, kn = kn5
    rng = np.random.default_rng(0)
    for start in rng.integers(5, len(tc.ids) - 10, size=20):
        for hist in (tc.ids[start - 4:start].tolist(), [int(rng.integers(len(tc.vocab)))] * 4, []):
            p = kn.distribution(hist)
            assert abs(p.sum() - 1.0) < 1e-5
            assert p.min() > 0


def test_stream_scores_match_full_distributions(kn5):
    tc, kn = kn5
    seq = np.concatenate([[1], tc.ids[1000:1060]])
    lp = kn.stream_logprobs(seq)
    for i in range(1, len(seq)):
        p = kn.distribution(seq[max(0, i - 4):i].tolist())
        assert lp[i - 1] == pytest.approx(np.log(p[seq[i]]), rel=1e-9, abs=1e-9)


def test_longest_match_points_at_the_ngram(kn5):
    tc, kn = kn5
    hist = tc.ids[500:504].tolist()
    order, pos = kn.longest_match(hist, int(tc.ids[504]))
    assert order == 5
    assert tc.ids[pos - 4:pos + 1].tolist() == tc.ids[500:505].tolist()
