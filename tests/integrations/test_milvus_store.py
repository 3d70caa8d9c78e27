"""The document store on Milvus Lite: the faiss store's contract (scores, upsert, get, delete,
MMR, energy), the index types and what Milvus Lite really builds, per-call search parameters,
persistence as a manifest, and a bounded soak of concurrent reads and writes."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from retgen_engine.persist.commit import resolve as live
from retgen_engine.config import IndexConfig
from retgen_engine.docstore import DocumentStore, MilvusStore
from retgen_engine.docstore.milvus_index import requested_index


def _data(n=200, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return [f"id{i}" for i in range(n)], [f"text {i}" for i in range(n)], v, \
        [{"i": i, "g": i % 3, "freq": 1 + i % 5} for i in range(n)]


def test_dispatch_and_same_results_as_faiss(make_store):
    ids, texts, v, mds = _data()
    m, f = make_store("milvus"), make_store("faiss")
    assert isinstance(m, MilvusStore) and m.dim is None and len(m) == 0
    for s in (f, m):
        s.upsert(ids, texts, v, mds)
    assert m.dim == 32 and len(m) == 200
    for q in v[:5]:
        a, b = f.search(q, k=10, filter={"g": 1}), m.search(q, k=10, filter={"g": 1})
        assert [h.id for h in a] == [h.id for h in b]
        assert np.allclose([h.distance for h in a], [h.distance for h in b], atol=1e-5)
        assert np.allclose([h.score for h in b], [1 - h.distance / 4 for h in b])
        assert m.search(q, k=1)[0].id == ids[int(np.argmax(v @ q))] and 0 <= b[-1].score <= 1
        got = m.max_marginal_relevance(q, k=4, fetch_k=20, lambda_mult=0.3)
        assert [h.id for h in got] == \
            [h.id for h in f.max_marginal_relevance(q, k=4, fetch_k=20, lambda_mult=0.3)]
        e1, e2 = f.search_energy(q, k=4, fetch_k=12), m.search_energy(q, k=4, fetch_k=12)
        assert [h.id for h in e1] == [h.id for h in e2]
        assert np.allclose([h.energy for h in e1], [h.energy for h in e2], atol=1e-4)
    assert np.allclose(m.vectors(["id3", "id1"]), f.vectors(["id3", "id1"]), atol=1e-6)
    with pytest.raises(KeyError, match="unknown ids"):
        m.vectors(["id1", "nope"])
    assert [h.id for h in m.search(v[0], k=3, ids=["id9", "id0", "zz"])] == \
        [h.id for h in f.search(v[0], k=3, ids=["id9", "id0", "zz"])]


def test_upsert_get_delete_clear(make_store):
    ids, texts, v, mds = _data(20)
    m = make_store("milvus")
    m.upsert(ids, texts, v, mds)
    m.upsert(["id3"], ["new"], v[4:5], [{"x": 1}])
    assert len(m) == 20 and m.get(["id3"])[0].text == "new"
    assert [r.id for r in m.get(["id5", "nope", "id1"])] == ["id5", "id1"]
    assert m.ids()[-1] == "id3"  # an upsert moves the record to the end, as in faiss
    assert m.delete(["id1", "id1", "nope"]) == 1 and len(m) == 19
    assert m.search(v[1], k=1)[0].id != "id1"
    with pytest.raises(ValueError, match="have dimension 8, the store holds dimension 32"):
        m.upsert(["x"], ["x"], np.ones((1, 8)))
    with pytest.raises(ValueError, match="duplicate ids"):
        m.upsert(["a", "a"], ["x", "y"], v[:2])
    with pytest.raises(ValueError, match="not JSON-serializable"):
        m.upsert(["a"], ["x"], v[:1], [{"o": object()}])
    with pytest.raises(ValueError, match="65535-byte VARCHAR"):
        m.upsert(["a"], ["x" * 70000], v[:1])
    with pytest.raises(ValueError, match="k=0"):
        m.search(v[0], k=0)
    m.clear()
    assert len(m) == 0 and m.search(v[0], k=3) == [] and m.get(["id2"]) == []
    m.upsert(ids[:2], texts[:2], v[:2])
    assert len(m) == 2


@pytest.mark.parametrize("index_type, honoured", [("FLAT", True), ("IVF_FLAT", True),
                                                   ("IVF_SQ8", True), ("IVF_PQ", False),
                                                   ("HNSW", True)])
def test_index_types_read_back(make_store, caplog, index_type, honoured):
    ids, texts, v, mds = _data(600)
    with caplog.at_level(logging.WARNING):
        m = make_store("milvus", index_type=index_type,
                       index_params={"nlist": 16, "m": 8} if "IVF" in index_type else None)
        m.upsert(ids, texts, v, mds)
    m.flush()
    rep = m.stats()["index"]
    assert rep["requested"] == rep["reported"] == index_type  # Milvus Lite reports the request
    assert rep["honoured"] is honoured and rep["built"] == (index_type if honoured
                                                            else "BRUTE_FORCE")
    assert ("cannot build it" in caplog.text) is (not honoured)
    assert (rep["warning"] is None) is honoured
    hits = m.search(v[7], k=5, nprobe=16, ef=32)
    assert hits[0].id == "id7" and len(hits) == 5
    assert m.search(v[7], k=5, filter={"g": 2})[0].distance >= 0  # short lists re-probed
    with pytest.raises(ValueError, match="nprobe=0"):
        m.search(v[0], k=2, nprobe=0)


def test_index_from_config():
    cfg = IndexConfig(spec="IVF256,PQ16x4", nprobe=8)
    assert requested_index(None, cfg) == ("IVF_PQ", {"nlist": 256, "m": 16, "nbits": 4})
    assert requested_index(None, IndexConfig())[0] == "FLAT"
    assert requested_index(None, IndexConfig(spec="HNSW32")) == \
        ("HNSW", {"M": 32, "efConstruction": 200})
    assert requested_index("ivf_sq8", IndexConfig(nlist=64)) == ("IVF_SQ8", {"nlist": 64})
    with pytest.raises(ValueError, match="allowed: FLAT"):
        requested_index("DISKANN", IndexConfig())
    with pytest.raises(ValueError, match="no Milvus equivalent"):
        requested_index(None, IndexConfig(spec="OPQ16,IVF64,PQ16"))


def test_save_writes_a_manifest_and_load_reconnects(make_store, tmp_path):
    ids, texts, v, mds = _data(50)
    m = make_store("milvus")
    m.upsert(ids, texts, v, mds)
    m.extra = {"adapter": "test"}
    path = m.save(tmp_path / "saved")
    names = sorted(p.name for p in path.iterdir())  # a committed manifest, a database snapshot
    assert len(names) == 4 and names[:2] == [".lock", "CURRENT"] and names[3] == "v-000001"
    assert names[2].startswith("milvus-") and names[2].endswith(".db")
    assert sorted(p.name for p in live(path).iterdir()) == ["manifest.json"]
    man = json.loads((live(path) / "manifest.json").read_text())
    assert man["collection"] == m.collection and man["count"] == 50 and "token" not in man
    loaded = DocumentStore.load(path)
    assert isinstance(loaded, MilvusStore) and loaded.extra == {"adapter": "test"}
    assert len(loaded) == 50 and loaded.dim == 32
    assert [h.id for h in loaded.search(v[3], k=4)] == [h.id for h in m.search(v[3], k=4)]
    loaded.upsert(["new"], ["n"], v[:1])
    assert len(loaded) == 51 and len(m) == 50  # the copy is its own database
    man["count"] = 7
    (live(path) / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="sha256|checksum"):
        DocumentStore.load(path)
    loaded.clear()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a RETGEN Milvus docstore"):
        m.save(tmp_path / "other")


def test_database_inside_the_store_directory(tmp_path):
    pytest.importorskip("milvus_lite")
    d = tmp_path / "store"
    m = DocumentStore(backend="milvus", uri=str(d / "data.db"), collection="docs")
    ids, texts, v, mds = _data(10)
    m.upsert(ids, texts, v, mds)
    m.save(d)
    assert sorted(p.name for p in d.iterdir()) == [".lock", "CURRENT", "data.db", "v-000001"]
    m.save(d)  # a second save: a new manifest version, the database stays where it lives
    assert sorted(p.name for p in d.iterdir()) == [".lock", "CURRENT", "data.db", "v-000001",
                                                   "v-000002"]
    again = DocumentStore.load(d)
    assert again.uri == str(d / "data.db") and len(again) == 10
    with pytest.raises(ValueError, match="exists with fields"):
        m._client.drop_collection("docs")
        from pymilvus import DataType
        s = m._client.create_schema(auto_id=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=8)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        m._client.create_collection("docs", schema=s)
        DocumentStore(backend="milvus", uri=str(d / "data.db"), collection="docs")
    with pytest.raises(ValueError, match="backend='chroma'"):
        DocumentStore(backend="chroma")


@pytest.mark.slow
def test_concurrent_reads_and_writes(make_store):
    """A bounded soak (a few seconds): one writer upserting and deleting, three readers
    searching with filters; no errors, every hit well-formed, the final count exact."""
    ids, texts, v, mds = _data(300)
    m = make_store("milvus")
    m.upsert(ids[:100], texts[:100], v[:100], mds[:100])
    errors: list[BaseException] = []
    stop = time.monotonic() + 8.0

    def writer():
        try:
            for i in range(100, 300, 10):
                m.upsert(ids[i:i + 10], texts[i:i + 10], v[i:i + 10], mds[i:i + 10])
                m.delete([ids[i - 100]])
                if time.monotonic() > stop:
                    break
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader(seed):
        rng = np.random.default_rng(seed)
        try:
            while time.monotonic() < stop and t_w.is_alive():
                hits = m.search(v[rng.integers(300)], k=5, filter={"g": int(rng.integers(3))})
                assert all(0 <= h.score <= 1 and h.metadata["g"] == hits[0].metadata["g"]
                           for h in hits)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t_w = threading.Thread(target=writer)
    ts = [t_w] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors[:3]
    n_added = len(m.ids())
    assert n_added == len(m) and n_added == 100 + 10 * 20 - 20


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_items_revision_and_int_ids_as_the_memory_reads_them(make_store, backend):
    """What a reader that derives state from the records uses (the document memory): a scan in
    insertion order (Milvus: paged, 1000 rows a page), int ids that a replacement changes and
    nothing else does, and a revision every write moves."""
    n = 2500
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(n)]
    s = make_store(backend)
    r0 = s.revision
    s.upsert(ids, [f"t{i}" for i in range(n)], rng.standard_normal((n, 16)).astype(np.float32),
             [{"i": i} for i in range(n)])
    assert s.revision != r0
    items = s.items()
    assert [r.id for _, r in items] == ids and [r.metadata["i"] for _, r in items] == list(range(n))
    iids = [i for i, _ in items]
    assert len(set(iids)) == n and [s.int_id(x) for x in ids] == iids
    assert [i for i, _ in s.items()] == iids  # a second scan numbers nothing anew
    r1 = s.revision
    s.upsert(["p7"], ["replaced"], rng.standard_normal((1, 16)).astype(np.float32))
    assert s.revision != r1 and s.int_id("p7") not in iids
    r2 = s.revision
    assert s.delete(["nope"]) == 0 and s.revision == r2  # nothing deleted: no new revision
    assert s.delete(["p8"]) == 1 and s.revision != r2 and s.int_id("p8") is None
    got = dict((r.id, (i, r.text)) for i, r in s.items())
    assert len(got) == n - 1 and got["p7"] == (s.int_id("p7"), "replaced") and "p8" not in got
    assert list(got)[-1] == "p7"  # an upsert moves a record to the end
    s.clear()
    assert s.items() == [] and s.int_id("p1") is None


def test_revision_sees_another_client_within_its_check_interval(make_store):
    a = make_store("milvus", revision_check_s=0.3)
    ids, texts, v, mds = _data(20, 8)
    a.upsert(ids, texts, v, mds)
    a.items()
    b = DocumentStore(backend="milvus", uri=a.uri, collection=a.collection)
    r = a.revision
    b.upsert(["late"], ["from b"], v[:1])
    assert a.revision == r  # not checked yet
    time.sleep(0.35)
    assert a.revision == r + 1 and a.changes(r) is None
    assert "late" in [x.id for _, x in a.items()] and a.int_id("late") is not None
    b.delete(["id3"])
    time.sleep(0.35)
    assert a.revision == r + 2
    b.clear()  # dropped by the other client
    time.sleep(0.35)
    assert a.revision == r + 3 and len(a) == 0 and a.items() == []
    with pytest.raises(ValueError, match="revision_check_s"):
        make_store("milvus", revision_check_s=-1)


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_snapshot_copies_no_half_written_file(tmp_path, monkeypatch, index_type):
    """Milvus Lite writes its index and data files in place: a snapshot that caught one
    half-written is found out (brute-force index: shorter than its numpy header says; faiss
    index: faiss cannot read it; parquet: no end mark) and copied again."""
    pytest.importorskip("milvus_lite")
    import shutil

    from retgen_engine.docstore import milvus_persist as mp

    m = DocumentStore(backend="milvus", uri=str(tmp_path / "db" / "x.db"), collection="docs",
                      index_type=index_type)
    ids, texts, v, mds = _data(300)
    m.upsert(ids, texts, v, mds)
    m.flush()
    mp._settle_lite(m)
    db = tmp_path / "db" / "x.db"
    assert mp._incomplete(db) == []
    idx = next(db.rglob("*.idx"))
    parquet = next(db.rglob("*.parquet"))
    real = shutil.copytree
    calls = []

    def torn_copy(src, dst, *a, **kw):  # the first copy catches both files half-written
        out = real(src, dst, *a, **kw)
        if Path(src) != db:  # copytree's own recursion
            return out
        calls.append(dst)
        if len(calls) == 1:
            for f in (idx, parquet):
                c = Path(dst) / f.relative_to(src)
                c.write_bytes(c.read_bytes()[: c.stat().st_size // 2])
            assert sorted(mp._incomplete(Path(dst))) == sorted(
                str(f.relative_to(src)) for f in (idx, parquet))
        return out

    monkeypatch.setattr(mp.shutil, "copytree", torn_copy)
    out = tmp_path / "snap"
    mp._copy_stable(db, out)
    assert len(calls) == 2 and mp._incomplete(out) == []
    monkeypatch.undo()
    m.save(tmp_path / "saved")  # a snapshot that loads and answers
    again = DocumentStore.load(tmp_path / "saved")
    assert len(again) == 300 and again.search(v[0], k=1)[0].id == ids[0]
