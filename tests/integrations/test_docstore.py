"""The engine's document store: ids, upsert, IVF training, filters in faiss, MMR, energy,
persistence and bad input."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from retgen_engine.config import IndexConfig
from retgen_engine.persist.commit import resolve as live
from retgen_engine.docstore import DocumentStore, energy_scores, mmr_select, relevance

DIM = 16


def _vecs(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill(store, n, seed=0, start=0):
    v = _vecs(n, seed)
    ids = [f"d{i}" for i in range(start, start + n)]
    store.upsert(ids, [f"text {i}" for i in range(start, start + n)], v,
                 [{"i": i, "g": i % 3} for i in range(start, start + n)])
    return ids, v


def test_score_convention():
    assert relevance(0.0) == 1.0 and relevance(4.0) == 0.0 and relevance(2.0) == 0.5
    s = DocumentStore()
    ids, v = _fill(s, 10)
    hits = s.search(v[3], k=3)
    assert hits[0].id == "d3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    for h in hits:
        cos = float(v[int(h.id[1:])] @ v[3])
        assert h.score == pytest.approx((1 + cos) / 2, abs=1e-5)
        assert h.distance == pytest.approx(2 - 2 * cos, abs=1e-5)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


def test_upsert_replaces_and_never_reuses_int_ids():
    s = DocumentStore()
    _fill(s, 5)
    old = s.int_id("d2")
    s.upsert(["d2"], ["new"], _vecs(1, 9), [{"new": True}])
    assert len(s) == 5 and s.int_id("d2") > old
    assert s.get(["d2"])[0].text == "new"
    s.delete(["d4"])
    s.upsert(["d4"], ["again"], _vecs(1, 3))
    assert s.int_id("d4") == 6  # counter kept growing: 0..4, 5 (d2), 6 (d4)


def test_get_keeps_order_and_skips_missing():
    s = DocumentStore()
    _fill(s, 5)
    assert [r.id for r in s.get(["d3", "nope", "d1"])] == ["d3", "d1"]


def test_delete_unknown_ids_is_not_an_error():
    s = DocumentStore()
    _fill(s, 3)
    assert s.delete(["zz", "d0"]) == 1
    assert len(s) == 2


def test_trains_ivf_and_retrains_without_losing_records():
    cfg = IndexConfig(exact_threshold=300)
    s = DocumentStore(index_config=cfg)
    ids, v = _fill(s, 299)
    assert s.spec == "IDMap2,Flat"
    _fill(s, 1, seed=1, start=299)
    assert s.spec.startswith("IVF")
    first_spec = s.spec
    before = {x: s.int_id(x) for x in ids}
    _fill(s, 400, seed=2, start=300)  # grew past 2x: retrained with more lists
    assert s.spec != first_spec and len(s) == 700
    assert {x: s.int_id(x) for x in ids} == before  # nothing renumbered
    assert s.stats()["index_ntotal"] == 700 == s.stats()["live_rows"]
    for i in (0, 150, 298):
        assert s.search(v[i], k=1)[0].id == f"d{i}"


def test_pq_index_refines_from_stored_vectors():
    cfg = IndexConfig(spec="IVF8,PQ4x4", exact_threshold=500)
    s = DocumentStore(index_config=cfg, vector_dtype="float16")
    ids, v = _fill(s, 800)
    assert "PQ" in s.spec
    hits = s.search(v[10], k=5)
    assert hits[0].id == "d10" and hits[0].distance == pytest.approx(0.0, abs=1e-3)


def test_filter_is_applied_inside_the_search():
    s = DocumentStore(index_config=IndexConfig(exact_threshold=200))
    ids, v = _fill(s, 600)
    # the nearest records to v[0] are mostly not in group 1, yet k results come back
    hits = s.search(v[0], k=10, filter={"g": 1})
    assert len(hits) == 10 and all(h.metadata["g"] == 1 for h in hits)
    assert s.search(v[0], k=5, filter={"i": {"$in": [7, 8]}})[0].id in ("d7", "d8")
    assert len(s.search(v[0], k=5, filter={"i": {"$in": [7, 8]}})) == 2
    assert s.search(v[0], k=5, filter=lambda md: md["i"] == 42)[0].id == "d42"


def test_filter_with_no_match_and_missing_key():
    s = DocumentStore()
    _, v = _fill(s, 10)
    assert s.search(v[0], k=3, filter={"g": 99}) == []
    assert s.search(v[0], k=3, filter={"missing": {"$ne": 1}}) == []


def test_k_larger_than_store_returns_what_exists():
    s = DocumentStore()
    _, v = _fill(s, 3)
    assert len(s.search(v[0], k=50)) == 3


def test_empty_store_search_returns_nothing():
    assert DocumentStore(dim=DIM).search(_vecs(1)[0], k=3) == []
    assert DocumentStore().search(_vecs(1)[0], k=3) == []


@pytest.mark.parametrize("call, exc, msg", [
    (lambda s: s.upsert(["x"], ["t"], np.ones((1, DIM + 1))), ValueError,
     "embedding dimension mismatch: vectors have dimension 17, the store holds dimension 16"),
    (lambda s: s.search(np.ones(DIM + 2), k=1), ValueError, "query vector have dimension 18"),
    (lambda s: s.upsert([1], ["t"], np.ones((1, DIM))), TypeError,
     "id 0 is 1 \\(int\\); ids must be strings"),
    (lambda s: s.delete([None]), TypeError, "id 0 is None"),
    (lambda s: s.get([3]), TypeError, "ids must be strings"),
    (lambda s: s.upsert(["a", "a"], ["t", "u"], np.ones((2, DIM))), ValueError, "duplicate ids"),
    (lambda s: s.upsert(["a"], ["t", "u"], np.ones((2, DIM))), ValueError, "same length"),
    (lambda s: s.upsert(["z"], ["t"], np.zeros((1, DIM))), ValueError, "all-zero vector"),
    (lambda s: s.upsert(["z"], ["t"], np.full((1, DIM), np.nan)), ValueError, "NaN"),
    (lambda s: s.search(np.ones(DIM), k=0), ValueError, "k=0 must be an int >= 1"),
    (lambda s: s.search(np.ones(DIM), k=2, filter={"i": {"$like": 1}}), ValueError,
     "unknown filter operator '\\$like'"),
    (lambda s: s.max_marginal_relevance(np.ones(DIM), lambda_mult=2), ValueError, "lambda_mult"),
])
def test_bad_input(call, exc, msg):
    s = DocumentStore()
    _fill(s, 4)
    with pytest.raises(exc, match=msg):
        call(s)


def test_mmr_prefers_diverse_results():
    q = np.array([1.0, 0.0, 0.0], np.float32)
    dup = np.array([0.9, 0.436, 0.0], np.float32)
    other = np.array([0.8, -0.2, 0.566], np.float32)
    vecs = np.stack([dup, dup * 0.999 + 0.001, other])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert mmr_select(q, vecs, 2, 1.0) == [0, 1]
    assert mmr_select(q, vecs, 2, 0.5) == [0, 2]


def test_store_mmr_returns_k_distinct():
    s = DocumentStore()
    _, v = _fill(s, 50)
    hits = s.max_marginal_relevance(v[0], k=5, fetch_k=20, lambda_mult=0.3)
    assert len({h.id for h in hits}) == 5 and hits[0].id == "d0"


def test_energy_uses_redundancy_and_frequency_prior():
    q = np.array([1.0, 0.0], np.float32)
    a = np.array([0.95, 0.312], np.float32)
    vecs = np.stack([a, a, np.array([0.9, -0.436], np.float32)])
    from retgen_engine.search.energy import EnergyModel

    e0, w0 = energy_scores(q, vecs, EnergyModel(1.0, 0.0, 0.0), tau=0.5)
    e1, _ = energy_scores(q, vecs, EnergyModel(1.0, 1.0, 0.0), tau=0.5)
    assert e0[1] < e0[2] and e1[1] > e1[2]  # the duplicate is penalized by redundancy
    assert w0.sum() == pytest.approx(1.0)
    e2, _ = energy_scores(q, vecs, EnergyModel(1.0, 0.0, -1.0), tau=0.5, freq=[1, 1, 100])
    assert e2[2] < e0[2]


def test_search_energy_attaches_energy_and_weight():
    s = DocumentStore()
    _, v = _fill(s, 30)
    hits = s.search_energy(v[0], k=4, fetch_k=10)
    assert hits[0].id == "d0" and len(hits) == 4
    assert all(h.energy is not None and 0 <= h.weight <= 1 for h in hits)
    assert [h.energy for h in hits] == sorted(h.energy for h in hits)


def test_save_load_round_trip(tmp_path):
    s = DocumentStore(index_config=IndexConfig(exact_threshold=100))
    ids, v = _fill(s, 150)
    s.delete(["d5"])
    s.extra = {"who": "test"}
    out = s.save(tmp_path / "st")
    m = json.loads((live(out) / "manifest.json").read_text())
    assert m["format"] == "retgen-docstore" and m["format_version"] == 1 and m["count"] == 149
    assert not any(p.suffix == ".pkl" for p in live(out).iterdir())
    t = DocumentStore.load(out)
    assert len(t) == 149 and t.extra == {"who": "test"} and t.spec == s.spec
    assert t.get(["d7"])[0].metadata == {"i": 7, "g": 1}
    assert [h.id for h in t.search(v[9], k=3)] == [h.id for h in s.search(v[9], k=3)]
    t.upsert(["new"], ["n"], _vecs(1, 5))
    assert t.int_id("new") == 150  # the id counter survived
    s.save(out)  # replacing an existing store is atomic (a new version, then the pointer)
    assert len(DocumentStore.load(out)) == 149
    assert [p.name for p in tmp_path.iterdir()] == ["st"]


def test_save_refuses_foreign_directory_and_bad_metadata(tmp_path):
    s = DocumentStore()
    _fill(s, 2)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a RETGEN docstore"):
        s.save(tmp_path / "other")
    s.upsert(["o"], ["t"], _vecs(1), [{"obj": object()}])
    with pytest.raises(ValueError, match="metadata of record 'o' is not JSON-serializable"):
        s.save(tmp_path / "st")
    assert not (tmp_path / "st").exists()


def test_load_detects_corruption(tmp_path):
    s = DocumentStore()
    _fill(s, 5)
    out = s.save(tmp_path / "st")
    arr = np.load(live(out) / "vectors.npy")
    np.save(live(out) / "vectors.npy", arr * 2)
    with pytest.raises(ValueError, match="does not match its checksum"):
        DocumentStore.load(out)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        DocumentStore.load(tmp_path / "nothing")


def test_concurrent_reads_and_writes():
    s = DocumentStore(index_config=IndexConfig(exact_threshold=200))
    _, v = _fill(s, 100)
    errors = []

    def writer():
        try:
            for b in range(100, 600, 50):
                _fill(s, 50, seed=b, start=b)
                s.delete([f"d{b}"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def reader():
        try:
            for _ in range(200):
                hits = s.search(v[1], k=5, filter={"g": {"$in": [0, 1]}})
                assert hits and all(h.metadata["g"] in (0, 1) for h in hits)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(s) == 590
