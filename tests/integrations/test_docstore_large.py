"""The large-store configurations, no raw vectors: compressed candidate codes + refine codes,
in-index codes only, and in-index codes + float16 vectors on disk.

Fast: 12k synthetic clustered unit vectors in 64 dimensions (each cluster a low-dimensional
gaussian plus a little isotropic noise, like sentence embeddings), the same shape of
configuration as :func:`retgen_engine.docstore.large_store_config` (IVF-PQ 4-bit fast-scan
with dim/8 sub-quantizers, ``IVF{L},PQ{dim/4}`` residual refine codes) at a smaller scale.
"""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from retgen_engine.config import IndexConfig
from retgen_engine.persist.commit import resolve as live
from retgen_engine.docstore import (CODES_FORMAT_VERSION, DISK_FORMAT_VERSION,
                                    IN_INDEX_FORMAT_VERSION, DocumentStore,
                                    auto_refine_spec, large_store_config, large_store_kwargs)
from retgen_engine.docstore.codes import in_index_nlist

DIM, N, K = 64, 12_000, 10


def _clustered(n, n_clusters=150, latent=4, spread=0.35, iso=0.02, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, DIM)).astype(np.float32)
    axes = rng.normal(size=(n_clusters, latent, DIM)).astype(np.float32) / np.sqrt(latent)
    c = rng.integers(0, n_clusters, n)
    z = rng.normal(size=(n, latent)).astype(np.float32)
    x = (centers[c] + spread * np.einsum("nl,nld->nd", z, axes[c])
         + iso * rng.normal(size=(n, DIM)).astype(np.float32))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cfg():
    return IndexConfig(exact_threshold=2000, pq_threshold=4000, pq_nsplits=DIM // 8,
                       fast_scan=True, nprobe=16)


@pytest.fixture(scope="module")
def large():
    data = _clustered(N + 100)
    base, queries = data[:N], data[N:]
    s = DocumentStore(index_config=_cfg(), refine_factor=8)
    for b in range(0, N, 3000):
        s.upsert([f"d{i}" for i in range(b, b + 3000)], [f"t{i}" for i in range(b, b + 3000)],
                 base[b:b + 3000], [{"g": i % 2} for i in range(b, b + 3000)])
    return s, base, queries


def _recall(s, base, queries, **kw):
    exact = faiss.IndexFlatL2(DIM)
    exact.add(base)
    _, truth = exact.search(queries, K)
    got = [[int(h.id[1:]) for h in s.search(q, K, **kw)] for q in queries]
    return np.mean([len(set(g) & set(t.tolist())) / K for g, t in zip(got, truth)])


def test_large_store_drops_raw_vectors_and_keeps_recall(large):
    s, base, queries = large
    assert s.compressed and s.refine_spec == auto_refine_spec(DIM, N) == "IVF256,PQ16"
    st = s.stats()  # rows in RAM: 17-byte uint8 refine codes
    assert "PQ8x4fs" in s.spec and s.storage_mode == st["mode"] == "codes"
    assert st["row_dtype"] == "uint8" and st["row_bytes"] == 17 and st["rows"] == N
    assert _recall(s, base, queries) >= 0.9
    # bytes per record: 4 (IVF-PQ) + 1 + 16 (refine) + 8 + 8 (ids) + 1 (alive) + fixed parts
    per = s.nbytes() / len(s)
    assert per < 0.3 * DIM * 4, per  # well under a float32 flat index (256 B/vector here)


def test_large_store_reconstructs_vectors_for_mmr_and_energy(large):
    s, base, queries = large
    v = s.vectors(["d5", "d7"])
    assert v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.all(np.sum(v * base[[5, 7]], axis=1) > 0.95)  # close to the originals
    hits = s.search(base[5], k=3, with_vectors=True)
    assert hits[0].id == "d5" and hits[0].vector is not None
    assert len({h.id for h in s.max_marginal_relevance(queries[0], k=5, fetch_k=20)}) == 5
    e = s.search_energy(queries[0], k=4, fetch_k=10)
    assert len(e) == 4 and all(h.weight is not None for h in e)
    hits = s.search(queries[1], k=10, filter={"g": 1})
    assert len(hits) == 10 and all(h.metadata["g"] == 1 for h in hits)


def test_large_store_persists_no_raw_vectors(large, tmp_path):
    s, base, queries = large
    out = s.save(tmp_path / "st")
    m = json.loads((live(out) / "manifest.json").read_text())
    assert m["format_version"] == CODES_FORMAT_VERSION
    assert m["refine_codec"]["spec"] == "IVF256,PQ16"
    assert not (live(out) / "vectors.npy").exists()
    codes = np.load(live(out) / "codes.npy")
    assert codes.dtype == np.uint8 and codes.shape == (N, 17)
    for p in live(out).iterdir():  # no file holds anything like the float vectors
        assert p.stat().st_size < N * DIM * 2, p.name
    t = DocumentStore.load(out)
    # codec: encode only (no precomputed table; the index keeps none either: _cfg())
    assert t.compressed and len(t) == N and t.stats()["table_bytes"] == 0
    assert t.stats()["mode"] == "codes" and t.refine_spec == "IVF256,PQ16"
    assert [h.id for h in t.search(queries[3], K)] == [h.id for h in s.search(queries[3], K)]
    t.upsert(["new"], ["n"], base[:1] * -1)  # adds go straight to codes
    st = t.stats()
    assert (st["mode"], st["row_dtype"], st["row_bytes"], st["rows"]) == ("codes", "uint8", 17,
                                                                         N + 1)
    assert t.search(-base[0], 1)[0].id == "new"


def test_small_stores_stay_exact_and_raw_codes_can_be_disabled():
    data = _clustered(3000)
    s = DocumentStore(index_config=_cfg())
    s.upsert([str(i) for i in range(3000)], ["t"] * 3000, data)
    assert not s.compressed and s.storage_mode == "raw"
    assert s.stats()["row_dtype"] == "float32" and s.stats()["row_bytes"] == DIM * 4
    raw = DocumentStore(index_config=_cfg(), refine_codes=None)
    for b in range(0, N, 3000):
        raw.upsert([str(i) for i in range(b, b + 3000)], ["t"] * 3000, _clustered(3000, seed=b))
    st = raw.stats()
    assert "PQ" in raw.spec and not raw.compressed and st["mode"] == "raw"
    assert st["row_dtype"] == "float32" and st["row_bytes"] == DIM * 4


def test_large_store_config_fits_minilm():
    cfg = large_store_config()
    assert cfg.fast_scan and 384 % cfg.pq_nsplits == 0
    assert auto_refine_spec(384, 80_000) == "IVF1024,PQ128" and auto_refine_spec(30, 500) == "IVF8,PQ10"
    assert auto_refine_spec(64, 12_000) == "IVF256,PQ16"  # 64/3 is no divisor: the next below
    kw = large_store_kwargs("refine-sq8")
    assert kw["refine_codes"] == "SQ8" and kw["index_config"].nprobe == 64
    assert large_store_kwargs()["refine_codes"] == "index"
    with pytest.raises(ValueError, match="profile='tiny'; allowed: compact, balanced, compact-disk, refine-pq"):
        large_store_kwargs("tiny")
    with pytest.raises(ValueError, match="refine_codes"):
        DocumentStore(refine_codes="")


def test_balanced_profile_sq8_codes_rescore_closer_to_exact(large):
    s, base, queries = large
    b = DocumentStore(index_config=_cfg(), refine_factor=8, refine_codes="SQ8")
    for i in range(0, N, 3000):  # retrains at 3k, 6k, 12k: codes from 12k (MIN_CODEC_TRAIN)
        b.upsert([f"d{j}" for j in range(i, i + 3000)], ["t"] * 3000, base[i:i + 3000])
    st = b.stats()
    assert b.compressed and b.refine_spec == "SQ8" and st["mode"] == "codes"
    assert st["row_dtype"] == "uint8" and st["row_bytes"] == DIM  # 1 B/dim
    assert _recall(b, base, queries) >= max(0.95, _recall(s, base, queries))
    assert np.all(np.sum(b.vectors(["d3"]) * base[3], axis=1) > 0.999)


# -- in-index codes (the "compact"/"balanced" profiles): one representation, re-scored from --
# -- its decoded codes ------------------------------------------------------------------------

def _in_index_cfg(m=DIM // 2, ip_scan=False):
    return IndexConfig(exact_threshold=2000, pq_threshold=4000, pq_nsplits=m, pq_nbits=8,
                       nprobe=16, train_size=12_000, precomputed_table=False, ip_scan=ip_scan)


@pytest.fixture(scope="module")
def in_index():
    data = _clustered(N + 100)
    base, queries = data[:N], data[N:]
    s = DocumentStore(index_config=_in_index_cfg(), refine_codes="index")
    for b in range(0, N, 3000):  # exact at 3k, IVF-Flat + raw vectors at 6k, codes at 12k
        s.upsert([f"d{i}" for i in range(b, b + 3000)], [f"t{i}" for i in range(b, b + 3000)],
                 base[b:b + 3000], [{"g": i % 2} for i in range(b, b + 3000)])
    return s, base, queries


def test_in_index_codes_keep_one_representation(in_index):
    s, base, queries = in_index
    assert s.compressed and s.storage_mode == "in-index" and s.refine_spec is None
    nl = in_index_nlist(N)
    assert s.spec == f"IVF{nl},PQ{DIM // 2}x8np" and nl == N // 39  # headroom, capped
    st = s.stats()  # the IVF list of each row: one uint16 per row
    assert (st["row_dtype"], st["row_bytes"], st["rows"]) == ("uint16", 2, N)
    assert st["table_bytes"] == 0  # no nlist*M*256-float faiss table in RAM
    r4 = _recall(s, base, queries)
    s.refine_factor = 1  # ADC order only: re-scoring the renormalized decoded codes helps
    try:
        r1 = _recall(s, base, queries)
    finally:
        s.refine_factor = 4
    assert r4 >= 0.9 and r4 >= r1, (r4, r1)
    # 32 B codes + 8 B faiss id + 8 B row id + 2 B list + 1 B alive + centroids/codebooks
    assert s.nbytes() / len(s) < 0.3 * DIM * 4
    hits = s.search(queries[0], 5)
    assert all(0.0 <= h.distance <= 4.0 and 0.0 <= h.score <= 1.0 for h in hits)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_in_index_codes_decode_vectors_for_mmr_energy_and_filters(in_index):
    s, base, queries = in_index
    v = s.vectors(["d5", "d7", "d11000"])
    assert v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.all(np.sum(v * base[[5, 7, 11000]], axis=1) > 0.95)
    hits = s.search(base[5], k=3, with_vectors=True)
    assert hits[0].id == "d5" and np.allclose(hits[0].vector, v[0])
    assert len({h.id for h in s.max_marginal_relevance(queries[0], k=5, fetch_k=20)}) == 5
    e = s.search_energy(queries[0], k=4, fetch_k=10)
    assert len(e) == 4 and all(h.weight is not None for h in e)
    hits = s.search(queries[1], k=10, filter={"g": 1})
    assert len(hits) == 10 and all(h.metadata["g"] == 1 for h in hits)
    assert [h.id for h in s.search(queries[1], k=3, ids=["d1", "d2", "d9999"])] != []
    with pytest.raises(KeyError, match="nope"):
        s.vectors(["nope"])


def test_in_index_codes_grow_delete_upsert_without_retraining(tmp_path, monkeypatch, caplog):
    from retgen_engine.docstore import codes as refine

    monkeypatch.setattr(refine, "IN_INDEX_GROWTH", 2)  # warn once the store doubled
    data = _clustered(N + 2000, seed=3)
    s = DocumentStore(index_config=_in_index_cfg(), refine_codes="index")
    s.upsert([f"d{i}" for i in range(N)], ["t"] * N, data[:N])
    spec, trained = s.spec, s.stats()["trained_n"]
    assert s.storage_mode == "in-index" and trained == N
    s.upsert([f"d{i}" for i in range(N, N + 2000)], ["t"] * 2000, data[N:])  # no raw kept
    s.upsert([f"e{i}" for i in range(2 * N)], ["t"] * 2 * N, _clustered(2 * N, seed=4))
    assert s.spec == spec and s.stats()["trained_n"] == trained and len(s) == 3 * N + 2000
    warned = [r for r in caplog.records if "rebuild the store from raw vectors" in r.message]
    assert len(warned) == 1 and "12000 its in-index codes were trained on" in warned[0].message
    st = s.stats()  # not retrained; every live row is indexed
    assert st["index_ntotal"] == len(s) == st["live_rows"] == st["rows"]
    assert s.search(data[N + 5], 1)[0].id == f"d{N + 5}"
    s.upsert(["d3"], ["moved"], -data[3])  # replace: the old vector is gone, the new one found
    assert s.search(-data[3], 1)[0].id == "d3" and s.get(["d3"])[0].text == "moved"
    assert "d3" not in [h.id for h in s.search(data[3], 20)]
    assert s.delete(["d4", "missing"]) == 1
    assert "d4" not in [h.id for h in s.search(data[4], 20)]
    v = s.vectors(["d3", f"d{N + 7}"])
    # decoded from the codes: close for data like the training set; an antipodal vector (far
    # from every centroid, large residual) decodes less precisely but is still found first
    assert v[1] @ data[N + 7] > 0.95 and v[0] @ -data[3] > 0.8
    # persistence: format 3, list numbers only, same answers, adds after loading
    out = s.save(tmp_path / "st")
    m = json.loads((live(out) / "manifest.json").read_text())
    assert m["format_version"] == IN_INDEX_FORMAT_VERSION and m["in_index_codes"] is True
    assert not (live(out) / "vectors.npy").exists() and not (live(out) / "codes.npy").exists()
    assert np.load(live(out) / "lists.npy").dtype == np.uint16
    t = DocumentStore.load(out)
    assert t.storage_mode == "in-index" and len(t) == len(s) and t.spec == spec
    assert t.stats()["table_bytes"] == 0 and t.nbytes() == s.nbytes()
    q = data[100]
    assert [h.id for h in t.search(q, K)] == [h.id for h in s.search(q, K)]
    assert np.allclose(t.vectors(["d3"]), s.vectors(["d3"]))
    t.upsert(["new"], ["n"], data[:1] * -1)
    assert t.search(-data[0], 1)[0].id == "new" and t.stats()["row_dtype"] == "uint16"


def test_in_index_codes_scanned_by_inner_product(in_index):
    """The profiles' ip_scan: the same codes ranked by <q, x^> (no per-list tables), the top
    8k re-scored; as good as the L2 scan's top 4k, with filters and decoded vectors."""
    s, base, queries = in_index
    t = DocumentStore(index_config=_in_index_cfg(ip_scan=True), refine_codes="index",
                      refine_factor=8)
    for b in range(0, N, 3000):
        t.upsert([f"d{i}" for i in range(b, b + 3000)], [f"t{i}" for i in range(b, b + 3000)],
                 base[b:b + 3000], [{"g": i % 2} for i in range(b, b + 3000)])
    assert t.stats()["ip_scan"] and not s.stats()["ip_scan"] and t.spec == s.spec
    r_ip, r_l2 = _recall(t, base, queries), _recall(s, base, queries)
    assert r_ip >= 0.9 and r_ip >= r_l2 - 0.01, (r_ip, r_l2)
    hits = t.search(queries[0], 5, with_vectors=True)
    assert np.allclose([2 - 2 * h.vector @ queries[0] for h in hits],
                       [h.distance for h in hits], atol=1e-5)
    assert np.allclose(hits[0].vector, t.vectors([hits[0].id])[0], atol=1e-6)
    f = t.search(queries[1], 10, filter={"g": 0})
    assert len(f) == 10 and all(h.metadata["g"] == 0 for h in f)


def test_in_index_profiles():
    c, b = large_store_kwargs("compact"), large_store_kwargs("balanced")
    assert c["refine_codes"] == b["refine_codes"] == "index"
    assert (c["index_config"].pq_nsplits, b["index_config"].pq_nsplits) == (128, 192)
    assert not c["index_config"].fast_scan and c["index_config"].pq_nbits == 8
    assert c["index_config"].ip_scan and b["index_config"].ip_scan and c["refine_factor"] == 8
    assert not c["index_config"].precomputed_table and large_store_kwargs("refine-pq")[
        "index_config"].precomputed_table  # 4-bit fast-scan candidates: a small table
    assert large_store_kwargs("compact", dim=64)["index_config"].pq_nsplits == 16  # 64/3 -> 16
    assert large_store_kwargs("refine-pq")["refine_codes"] == "auto"
    assert in_index_nlist(80_000) == 2051 and in_index_nlist(1_000_000) == 16_000


# -- disk vectors (the "compact-disk" profile): codes in RAM, float16 rows on disk ------------

def test_disk_vectors_file_append_get_save_open(tmp_path):
    from retgen_engine.docstore.diskvectors import DiskVectors

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    d = DiskVectors(8, tmp_path)
    d.append(a)
    d.append(b)
    allv = np.concatenate([a, b]).astype(np.float16).astype(np.float32)
    assert len(d) == 80 and d.disk_bytes() == 80 * 8 * 2
    assert np.array_equal(d.get([79, 0, 0, 51]), allv[[79, 0, 0, 51]])
    assert list(tmp_path.iterdir()) == []  # an anonymous file: nothing left behind
    keep = np.arange(80) % 3 != 0
    d.save(tmp_path / "v.npy", keep=keep)
    f = DiskVectors.open(tmp_path / "v.npy", 8)  # base memory-mapped, appends in a temp file
    f.append(a[:2])
    assert len(f) == keep.sum() + 2 and np.array_equal(f.get([0, len(f) - 1]),
                                                       np.stack([allv[keep][0], allv[1]]))
    assert np.array_equal(np.load(tmp_path / "v.npy"), allv[keep].astype(np.float16))
    f.evict_cache()
    assert np.array_equal(f.get([len(f) - 2]), allv[:1])
    with pytest.raises(ValueError, match=r"shape \(3, 7\); expected \[n, 8\]"):
        d.append(np.zeros((3, 7)))
    with pytest.raises(IndexError, match=r"\[0, 80\)"):
        d.get([80])
    with pytest.raises(ValueError, match="expected \\[n, 4\\] float16"):
        DiskVectors.open(tmp_path / "v.npy", 4)


def _disk_store(tmp_path, disk=True, m=DIM // 8):
    s = DocumentStore(index_config=_in_index_cfg(m, ip_scan=True), refine_codes="index",
                      refine_factor=8, disk_vectors=disk, disk_dir=tmp_path if disk else None)
    return s


def test_disk_vectors_rescore_candidates_exactly(tmp_path):
    data = _clustered(N + 100, seed=5)
    base, queries = data[:N], data[N:]
    stores = {}
    for disk in (False, True):  # 8-byte codes: coarse in RAM, so re-scoring is what matters
        s = _disk_store(tmp_path, disk)
        for b in range(0, N, 3000):
            s.upsert([f"d{i}" for i in range(b, b + 3000)], ["t"] * 3000, base[b:b + 3000],
                     [{"g": i % 2} for i in range(b, b + 3000)])
        stores[disk] = s
    codes, disk = stores[False], stores[True]
    assert disk.storage_mode == "disk" and codes.storage_mode == "in-index"
    assert disk.spec == codes.spec
    assert disk.nbytes() == codes.nbytes()  # RAM: the same codes, ids and list numbers
    assert disk.disk_bytes() == N * DIM * 2 and codes.disk_bytes() == 0
    r_codes, r_disk = _recall(codes, base, queries), _recall(disk, base, queries)
    assert r_disk >= 0.97 and r_disk > r_codes + 0.05, (r_disk, r_codes)
    v = disk.vectors(["d5", "d11000"])  # float16 copies: near exact, unit norm
    assert np.all(np.sum(v * base[[5, 11000]], axis=1) > 0.9995)
    hits = disk.search(queries[0], 5, with_vectors=True)
    assert np.allclose([2 - 2 * h.vector @ queries[0] for h in hits],
                       [h.distance for h in hits], atol=1e-5)
    f = disk.search(queries[1], 10, filter={"g": 1})
    assert len(f) == 10 and all(h.metadata["g"] == 1 for h in f)
    assert len({h.id for h in disk.max_marginal_relevance(queries[0], k=5, fetch_k=20)}) == 5
    before = [h.id for h in disk.search(queries[2], K)]
    disk.evict_disk_cache()  # cold reads give the same answers
    assert [h.id for h in disk.search(queries[2], K)] == before
    assert list(tmp_path.iterdir()) == []  # the rows live in an anonymous temp file


def test_disk_vectors_grow_delete_persist(tmp_path):
    data = _clustered(N + 500, seed=6)
    s = _disk_store(None)
    s.upsert([f"d{i}" for i in range(N)], ["t"] * N, data[:N])
    s.upsert([f"d{i}" for i in range(N, N + 500)], ["t"] * 500, data[N:])  # appended rows
    assert s.search(data[N + 9], 1)[0].id == f"d{N + 9}"
    s.upsert(["d3"], ["moved"], -data[3])
    assert s.delete(["d4", "missing"]) == 1
    assert s.search(-data[3], 1)[0].id == "d3" and s.vectors(["d3"])[0] @ -data[3] > 0.9995
    out = s.save(tmp_path / "st")  # compacts: dead rows leave the disk file too
    m = json.loads((live(out) / "manifest.json").read_text())
    assert m["format_version"] == DISK_FORMAT_VERSION and m["disk_vectors"] is True
    arr = np.load(live(out) / m["disk_vectors_file"])
    assert arr.dtype == np.float16 and arr.shape == (len(s), DIM) == (N + 499, DIM)
    assert s.disk_bytes() == arr.nbytes
    t = DocumentStore.load(out, disk_dir=tmp_path)
    assert t.disk_vectors and t.disk_bytes() == s.disk_bytes() and t.nbytes() == s.nbytes()
    for q in (data[100], -data[3], data[N + 1]):
        assert [h.id for h in t.search(q, K)] == [h.id for h in s.search(q, K)]
    t.upsert(["new"], ["n"], -data[7:8])  # goes to a temp file, not into the saved store
    t.delete(["d8"])
    assert t.search(-data[7], 1)[0].id == "new" and np.allclose(t.vectors(["new"]), -data[7],
                                                                 atol=1e-3)
    u = DocumentStore.load(out)  # checksums still verify: the saved files were not touched
    assert len(u) == N + 499 and "new" not in u.ids()
    t.save(out)  # replaces the store the loaded one memory-maps (on POSIX the mapping stays)
    w = DocumentStore.load(out)
    assert len(w) == N + 499 and w.search(-data[7], 1)[0].id == "new"
    assert np.load(live(out) / "disk_vectors.npy").shape == (N + 499, DIM)


def test_disk_vectors_bad_input_and_profile(tmp_path):
    with pytest.raises(ValueError, match="disk_vectors=True needs refine_codes='index'"):
        DocumentStore(disk_vectors=True)
    with pytest.raises(ValueError, match="disk_dir='/no/such/dir' is not a directory"):
        DocumentStore(refine_codes="index", disk_vectors=True, disk_dir="/no/such/dir")
    with pytest.raises(TypeError, match="disk_vectors='yes' must be a bool"):
        DocumentStore(refine_codes="index", disk_vectors="yes")
    kw = large_store_kwargs("compact-disk", disk_dir=str(tmp_path))
    assert kw["disk_vectors"] is True and kw["disk_dir"] == str(tmp_path)
    assert kw["index_config"] == large_store_kwargs("compact")["index_config"]
    s = DocumentStore(**kw)
    s.upsert(["a"], ["t"], np.ones((1, 384)))  # exact while small: no disk rows yet
    assert s.disk_bytes() == 0 and s.search(np.ones(384), 1)[0].id == "a"


def test_disk_vectors_failed_writes_lose_nothing(tmp_path, monkeypatch):
    """A disk error (ENOSPC) while the store converts to codes, or while an upsert replaces a
    record, leaves the store as it was: searchable, consistent, savable."""
    import errno

    from retgen_engine.docstore import diskvectors

    data = _clustered(N + 10, seed=8)
    s = _disk_store(None)
    s.upsert([f"d{i}" for i in range(3000)], ["t"] * 3000, data[:3000])  # raw rows, exact
    real = diskvectors.os.pwrite

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskvectors.os, "pwrite", full)
    with pytest.raises(OSError, match="No space"):  # the upsert that would convert to codes
        s.upsert([f"d{i}" for i in range(3000, N)], ["t"] * (N - 3000), data[3000:N])
    assert not s.compressed and s.disk_bytes() == 0 and len(s) == N  # records kept, raw rows
    assert s.search(data[5000], 1)[0].id == "d5000"
    monkeypatch.setattr(diskvectors.os, "pwrite", real)
    s.upsert(["x"], ["t"], data[N:N + 1])  # converts now
    assert s.compressed and s.disk_bytes() == (N + 1) * DIM * 2
    monkeypatch.setattr(diskvectors.os, "pwrite", full)
    with pytest.raises(OSError):
        s.upsert(["d7"], ["replaced"], -data[7:8])
    assert s.get(["d7"])[0].text == "t" and s.search(data[7], 1)[0].id == "d7" and len(s) == N + 1
    monkeypatch.setattr(diskvectors.os, "pwrite", real)
    s.upsert(["d7"], ["replaced"], -data[7:8])
    assert s.search(-data[7], 1)[0].id == "d7" and s.vectors(["d7"])[0] @ -data[7] > 0.999
    t = DocumentStore.load(s.save(tmp_path / "st"))
    assert len(t) == N + 1 and t.get(["d7"])[0].text == "replaced"


def test_disk_vectors_save_switches_to_the_saved_file(tmp_path):
    """After a save the store reads the saved rows (no second copy); saving a loaded store back
    to its own path works and releases the old file; cold-cache eviction works on both."""
    data = _clustered(N + 20, seed=9)
    s = _disk_store(tmp_path)
    s.upsert([f"d{i}" for i in range(N)], ["t"] * N, data[:N])
    s.delete(["d1", "d2"])
    out = s.save(tmp_path / "st")
    st = s.stats()  # every row read from the saved file, none from a temporary file
    assert st["disk_appended_rows"] == 0 and st["disk_rows"] == N - 2 == len(s) == st["rows"]
    s.upsert(["n1"], ["t"], data[N:N + 1])  # appended after the saved rows
    assert s.search(data[N], K)[0].id == "n1" and s.search(data[3], K)[0].id == "d3"
    before = [h.id for h in s.search(data[4], K)]
    s.evict_disk_cache()
    assert [h.id for h in s.search(data[4], K)] == before and before[0] == "d4"
    t = DocumentStore.load(out)
    t.evict_disk_cache()
    t.upsert(["n2"], ["t"], data[N + 1:N + 2])
    t.delete(["d5"])
    t.save(out)  # back onto the file it maps
    assert not [p for p in out.iterdir() if p.name.startswith(".v-")]  # no temp version left
    u = DocumentStore.load(out)
    assert len(u) == len(t) == N - 2 and {"n2"} <= set(u.ids()) and "d5" not in u.ids()
    for q in (data[6], data[N + 1]):
        assert [h.id for h in u.search(q, K)] == [h.id for h in t.search(q, K)]


def test_ip_scan_leaves_other_ivf_pq_variants_to_l2():
    import warnings

    from retgen_engine.search.index import FaissIndex
    from retgen_engine.search.ipscan import IPScan

    x = _clustered(3000, seed=2)
    pqr = faiss.index_factory(DIM, "IVF16,PQ8+8")
    pqr.train(x)
    assert not IPScan.applies(pqr)  # IndexIVFPQR: its refine stage must not be skipped
    fi = FaissIndex.build(x, np.arange(3000), IndexConfig(spec="IVF16,PQ16x8np", nprobe=1,
                                                          ip_scan=True))
    assert fi.ip_scan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fewer hits than k: no overflow on the empty slots
        D, I = fi.search(x[:1], 3000, nprobe=1)
    assert (I[0] == -1).any() and np.isinf(D[I < 0]).all() and np.isfinite(D[I >= 0]).all()


@pytest.mark.parametrize("which", ["large", "in_index"])
def test_search_ids_is_search_as_arrays(which, request):
    """The memory's lean dense search returns what search does: the same records (as int
    ids), in order, with the same relevance, on every profile, with a filter too."""
    s, base, queries = request.getfixturevalue(which)
    for q in queries[:10]:
        for flt in (None, {"g": 1}):
            hits = s.search(q, k=20, filter=flt)
            ids, rel = s.search_ids(q, k=20, filter=flt)
            assert [s.int_id(h.id) for h in hits] == ids.tolist()
            assert np.allclose([h.score for h in hits], rel)
    empty = DocumentStore(dim=base.shape[1])
    ids, rel = empty.search_ids(queries[0], k=5)
    assert ids.shape == (0,) and rel.shape == (0,)
    with pytest.raises(ValueError, match="k=0"):
        s.search_ids(queries[0], k=0)
