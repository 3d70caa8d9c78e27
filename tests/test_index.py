import faiss
import numpy as np
import pytest

from retgen_engine.config import IndexConfig
from retgen_engine.search.index import FaissIndex, choose_spec


def clustered(n, d, seed=0, centers=64):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(centers, size=n)] + 0.3 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def recall_at(index: FaissIndex, x, q, k, **kw):
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    _, gt = flat.search(q, k)
    _, got = index.search(q, k, **kw)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(gt, got)])


def test_spec_by_size():
    cfg = IndexConfig()
    assert choose_spec(100, 64, cfg) == "IDMap2,Flat"
    assert choose_spec(10_000, 64, cfg) == "IVF256,Flat"  # 4*sqrt(N)=400, capped at N/39
    assert choose_spec(60_000, 64, cfg) == "IVF980,Flat"
    s = choose_spec(1_000_000, 384, cfg)
    assert s == "IVF4000,PQ48x8np"
    assert choose_spec(1_000_000, 384, IndexConfig(fast_scan=True)) == "IVF4000,PQ48x4fs"


def test_pq_nsplits_must_divide_dim():
    with pytest.raises(ValueError, match="pq_nsplits"):
        choose_spec(1_000_000, 100, IndexConfig(pq_nsplits=48))


def test_ivf_flat_recall_against_exact():
    x = clustered(20_000, 32)
    q = clustered(200, 32, seed=1)
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig())
    assert idx.spec.endswith(",Flat") and idx.nlist > 1
    assert recall_at(idx, x, q, 10, nprobe=idx.nlist) == pytest.approx(1.0)
    assert recall_at(idx, x, q, 10, nprobe=16) >= 0.9


def test_ivf_pq_recall_against_exact():
    x = clustered(20_000, 64)
    q = clustered(200, 64, seed=1)
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig(pq_threshold=10_000, pq_nsplits=16))
    assert "PQ16" in idx.spec
    assert recall_at(idx, x, q, 10, nprobe=32) >= 0.5


def test_explicit_ids_minus_one_and_per_call_params():
    x = clustered(50, 16)
    ids = np.arange(1000, 1050)
    idx = FaissIndex.build(x, ids, IndexConfig())
    D, I = idx.search(x[:2], 60)
    assert I.shape == (2, 60) and (I[:, 50:] == -1).all()
    assert I[0, 0] == 1000
    sel = faiss.IDSelectorBatch(np.array([1007, 1009], dtype=np.int64))
    _, I2 = idx.search(x[:1], 5, selector=sel)
    assert set(I2[0][I2[0] >= 0]) == {1007, 1009}
    with pytest.raises(ValueError, match="k=0"):
        idx.search(x[:1], 0)
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.zeros((1, 8), np.float32), 3)


def test_nprobe_outside_range_rejected():
    x = clustered(8000, 16)
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig())
    with pytest.raises(ValueError, match="nprobe"):
        idx.search(x[:1], 3, nprobe=idx.nlist + 1)


def test_too_small_for_pq_falls_back(caplog):
    x = clustered(200, 16)  # fewer points than the 256 PQ centroids: faiss cannot train
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig(spec="IVF4,PQ4x8np"))
    assert idx.spec == "IDMap2,Flat"
    assert "falling back" in caplog.text


def test_save_load_round_trip(tmp_path):
    x = clustered(6000, 16)
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig())
    idx.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", idx.spec)
    np.testing.assert_array_equal(idx.search(x[:5], 4)[1], back.search(x[:5], 4)[1])


def test_mmapped_ivf_index_does_not_prefetch(tmp_path):
    x = clustered(6000, 16)
    idx = FaissIndex.build(x, np.arange(len(x)), IndexConfig())
    idx.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", idx.spec, mmap=True)
    inv = faiss.downcast_InvertedLists(faiss.extract_index_ivf(back.index).invlists)
    assert isinstance(inv, faiss.OnDiskInvertedLists) and inv.prefetch_nthread == 0
    np.testing.assert_array_equal(idx.search(x[:5], 4)[1], back.search(x[:5], 4)[1])


def test_precomputed_pq_table_is_counted_or_dropped(tmp_path):
    """faiss keeps an nlist*M*256-float table for residual IVF-PQ in RAM (not in the file):
    nbytes() counts it; precomputed_table=False frees it with identical results."""
    from retgen_engine.search.index import table_bytes

    x = clustered(20_000, 64)
    q = clustered(50, 64, seed=1)
    cfg = IndexConfig(pq_threshold=10_000, pq_nsplits=16, nlist=128, precomputed_table=True)
    with_t = FaissIndex.build(x, np.arange(len(x)), cfg)
    without = FaissIndex.build(x, np.arange(len(x)), cfg.model_copy(
        update={"precomputed_table": False}))
    assert table_bytes(with_t.index) == 128 * 16 * 256 * 4 and table_bytes(without.index) == 0
    assert with_t.nbytes() == without.nbytes() + 128 * 16 * 256 * 4
    D1, I1 = with_t.search(q, 10, nprobe=16)
    D2, I2 = without.search(q, 10, nprobe=16)
    assert (I1 == I2).all() and np.allclose(D1, D2, atol=1e-4)
    without.save(tmp_path / "i.faiss")  # faiss rebuilds the table on read unless told not to
    assert table_bytes(FaissIndex.load(tmp_path / "i.faiss", without.spec, mmap=False).index) > 0
    back = FaissIndex.load(tmp_path / "i.faiss", without.spec, mmap=False,
                           precomputed_table=False)
    assert table_bytes(back.index) == 0 and (back.search(q, 10, nprobe=16)[1] == I1).all()


def test_add_with_precomputed_lists_matches_plain_add():
    x = clustered(12_000, 32)
    cfg = IndexConfig(pq_threshold=10_000, pq_nsplits=8, nlist=64)
    a = FaissIndex.build(x[:10_000], np.arange(10_000), cfg)
    b = FaissIndex.build(x[:10_000], np.arange(10_000), cfg)
    new, ids = x[10_000:], np.arange(10_000, 12_000)
    a.add_with_ids(new, ids)
    lists = b.assign(new)
    b.add_with_ids(new, ids, lists=lists)
    q = clustered(20, 32, seed=5)
    assert (a.search(q, 10, nprobe=8)[1] == b.search(q, 10, nprobe=8)[1]).all()
    assert np.allclose(b.reconstruct_from_lists(ids[:5], lists[:5]),
                       a.reconstruct_from_lists(ids[:5], a.assign(new[:5])))
    with pytest.raises(ValueError, match="3 list numbers"):
        b.add_with_ids(new[:5], ids[:5] + 5000, lists=lists[:3])
    with pytest.raises(KeyError, match="not in IVF list"):
        b.reconstruct_from_lists([999_999], [0])


def test_ip_scan_scores_the_same_codes_by_inner_product(tmp_path):
    """ip_scan: the same lists and codes, scanned by <q, x^> after an L2 probe; distances are
    |q|^2 + 1 - 2 <q, x^>; selectors, removals, reconstruction and persistence carry over."""
    x = clustered(20_000, 64)
    q = clustered(40, 64, seed=3)
    cfg = IndexConfig(pq_threshold=10_000, pq_nsplits=32, pq_nbits=8, nlist=128,
                      precomputed_table=False)
    l2 = FaissIndex.build(x, np.arange(len(x)), cfg)
    ip = FaissIndex.build(x, np.arange(len(x)), cfg.model_copy(update={"ip_scan": True}))
    assert ip.ip_scan and not l2.ip_scan and ip.spec == l2.spec
    assert ip.nbytes() == l2.nbytes() + 32 * 256 * 2 * 4  # the view's copy of the codebooks
    D, I = ip.search(q, 10, nprobe=16)
    dec = ip.index.sa_decode(ip.index.sa_encode(x[I.ravel()])).reshape(40, 10, 64)
    want = 2.0 - 2.0 * np.einsum("qkd,qd->qk", dec, q)
    assert np.allclose(D, want, atol=1e-4) and (np.diff(D, axis=1) >= -1e-6).all()
    # exhaustive probing: the IP top-k is the exact top-k of <q, x^> over every code
    allx = ip.index.sa_decode(ip.index.sa_encode(x))
    _, I_all = ip.search(q, 5, nprobe=128)
    assert (np.sort(I_all, 1) == np.sort(np.argsort(-(q @ allx.T), 1)[:, :5], 1)).all()
    assert recall_at(ip, x, q, 10, nprobe=16) >= recall_at(l2, x, q, 10, nprobe=16) - 0.05
    sel = faiss.IDSelectorRange(0, 5000)
    assert (ip.search(q, 10, nprobe=128, selector=sel)[1] < 5000).all()
    D2, I2, R2 = ip.search_and_reconstruct(q[:1], 10, nprobe=16)
    assert (I2 == I[:1]).all() and np.allclose(D2, D[:1]) and np.allclose(R2[0], dec[0], atol=1e-6)
    ip.remove_ids(I[0, :3])  # shared lists: removals show in the inner-product scan
    assert not set(I[0, :3]) & set(ip.search(q[:1], 10, nprobe=16)[1][0])
    ip.add_with_ids(-x[:1], np.array([99_999]))
    assert ip.search(-x[:1], 1, nprobe=128)[1][0, 0] == 99_999
    ip.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", ip.spec, mmap=False, precomputed_table=False,
                           ip_scan=True)
    assert back.ip_scan and (back.search(q, 10, nprobe=16)[1] == ip.search(q, 10, nprobe=16)[1]).all()
    flat = FaissIndex.build(x[:500], np.arange(500), cfg.model_copy(update={"ip_scan": True}))
    assert not flat.ip_scan  # exact below the thresholds: ip_scan does not apply
    from retgen_engine.search.index import table_bytes

    t = FaissIndex.build(x, np.arange(len(x)), cfg.model_copy(
        update={"ip_scan": True, "precomputed_table": True}))
    assert t.ip_scan and table_bytes(t.index) == 0  # unused by the view: dropped


def test_small_batches_search_on_one_thread_and_give_the_same_results(monkeypatch):
    """Up to SMALL_BATCH queries run on one OpenMP thread of the calling thread only; the
    thread count is restored afterwards and the results equal a search on every thread."""
    import threading

    from retgen_engine.search import index as index_mod

    if faiss.omp_get_max_threads() < 2:
        faiss.omp_set_num_threads(2)
    before = faiss.omp_get_max_threads()
    x = clustered(3000, 32, seed=5)
    idx = FaissIndex.build(x, np.arange(3000, dtype=np.int64), IndexConfig(spec="IVF32,Flat"))
    seen = []
    real = faiss.omp_set_num_threads

    def spy(n):
        seen.append((threading.get_ident(), n))
        real(n)

    monkeypatch.setattr(faiss, "omp_set_num_threads", spy)
    q = x[:20] + 0.01
    D1, I1 = idx.search(q[:1], 10, nprobe=8)
    assert seen == [(threading.get_ident(), 1), (threading.get_ident(), before)]
    assert faiss.omp_get_max_threads() == before
    seen.clear()
    Dn, In = idx.search(q, 10, nprobe=8)  # 20 > SMALL_BATCH: every thread, nothing set
    assert seen == [] and len(q) > index_mod.SMALL_BATCH
    monkeypatch.setattr(index_mod, "SMALL_BATCH", 0)
    D0, I0 = idx.search(q[:1], 10, nprobe=8)
    np.testing.assert_array_equal(I0, I1)
    np.testing.assert_array_equal(I0, In[:1])
    np.testing.assert_allclose(D0, D1)


@pytest.mark.parametrize("spec", ["IVF32,PQ8x8np", "IVF32,Flat"])
def test_training_in_steps_equals_one_faiss_call(spec, monkeypatch):
    """The staged training (one k-means iteration per call, then the rest) gives the same
    centroids, codebooks and search results as faiss' own ``train``, and its bar moves once
    per iteration."""
    import retgen_engine.search.index_train as it

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6000, 32)).astype("float32")
    one = faiss.index_factory(32, spec)
    one.train(x)
    steps = []

    class Bar:
        def __init__(self, total, **kw):
            steps.append(("total", total))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, n):
            steps.append(("update", n))

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    staged = faiss.index_factory(32, spec)
    it.train_index(staged, x, progress=True)
    niter = faiss.extract_index_ivf(one).cp.niter
    assert steps[0] == ("total", niter + 1) and len(steps) == niter + 2
    q1, q2 = (faiss.extract_index_ivf(i).quantizer for i in (one, staged))
    np.testing.assert_array_equal(q1.reconstruct_n(0, 32), q2.reconstruct_n(0, 32))
    if "PQ" in spec:
        np.testing.assert_array_equal(faiss.vector_to_array(faiss.downcast_index(one).pq.centroids),
                                      faiss.vector_to_array(faiss.downcast_index(staged).pq.centroids))
    for i in (one, staged):
        i.add(x[:2000])
        faiss.extract_index_ivf(i).nprobe = 4
    D1, I1 = one.search(x[:50], 10)
    D2, I2 = staged.search(x[:50], 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # an index that is not an IVF over a flat quantizer trains in one call
    steps.clear()
    flat = faiss.index_factory(32, "PQ8x8np")
    it.train_index(flat, x, progress=True)
    assert steps == [("total", 1), ("update", 1)] and flat.is_trained
