"""On-disk formats 1-4 of the document store: a round trip for every storage mode, and stores
written before the vector rows were split out of ``DocumentStore`` (``data/docstore_formats_v1-4
.tar.gz``) still load, answer as they did, and save back to byte-identical files.

The fixture holds one tiny store per format version (100 records of 8 dimensions, 1-bit PQ,
codes from 80 records), written by :func:`_build` and described by :func:`_observe` with the
code of commit 98f090e, into ``v1`` ... ``v4`` and ``expected.json``.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from retgen_engine.config import IndexConfig
from retgen_engine.docstore import DocumentStore, read_manifest
from retgen_engine.persist.commit import resolve as live

FIXTURE = Path(__file__).parent / "data" / "docstore_formats_v1-4.tar.gz"
DIM, N = 8, 100
MODES = {1: dict(refine_codes=None, vector_dtype="float16"), 2: dict(refine_codes="SQ8"),
         3: dict(refine_codes="index"), 4: dict(refine_codes="index", disk_vectors=True)}
STORAGE = {1: "raw", 2: "codes", 3: "in-index", 4: "disk"}
ROW_FILES = {1: {"vectors.npy"}, 2: {"codes.npy", "refine_codec.faiss"}, 3: {"lists.npy"},
             4: {"lists.npy", "disk_vectors.npy"}}
COMMON = {"int_ids.npy", "docs.sqlite", "index.faiss"}


def _data(n, seed):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _cfg():
    return IndexConfig(exact_threshold=80, pq_threshold=90, pq_nsplits=2, pq_nbits=1, nprobe=4)


def _build(version, disk_dir=None):
    """The fixture's store of ``version`` (codes need ``MIN_CODEC_TRAIN`` patched to 80)."""
    kw = dict(MODES[version])
    if kw.get("disk_vectors"):
        kw["disk_dir"] = disk_dir
    s = DocumentStore(index_config=_cfg(), **kw)
    v = _data(N, version)
    s.upsert([f"d{i}" for i in range(N)], [f"t{i}" for i in range(N)], v,
             [{"g": i % 3} for i in range(N)])
    s.upsert(["x0", "x1"], ["added", "later"], _data(2, 99), [{"g": 7}, None])
    s.upsert(["d3"], ["moved"], -v[3:4], [{"g": 9}])
    s.delete(["d4", "d5"])
    s.extra = {"fixture": version}
    return s


def _observe(s):
    qs = _data(3, 1234)
    return {"len": len(s), "spec": s.spec,
            "ids_sha256": hashlib.sha256("\n".join(s.ids()).encode()).hexdigest(),
            "compressed": s.compressed, "refine_spec": s.refine_spec, "nbytes": s.nbytes(),
            "disk_bytes": s.disk_bytes(),
            "searches": [[[h.id, h.distance] for h in s.search(q, 5)] for q in qs],
            "filtered": [[[h.id, h.distance] for h in s.search(q, 5, filter={"g": 1})]
                         for q in qs],
            "vectors": s.vectors(["d1", "d3", "x0", "d90"]).tolist()}


def _same(got, want, keys=("len", "spec", "ids_sha256", "compressed", "refine_spec", "nbytes",
                            "disk_bytes")):
    for key in keys:
        assert got[key] == want[key], key
    for key in ("searches", "filtered"):
        for g, w in zip(got[key], want[key], strict=True):
            assert [i for i, _ in g] == [i for i, _ in w], key
            assert np.allclose([d for _, d in g], [d for _, d in w], atol=1e-6), key
    assert np.allclose(got["vectors"], want["vectors"], atol=1e-6)


@pytest.fixture
def small_codes(monkeypatch):
    from retgen_engine.docstore import codes

    monkeypatch.setattr(codes, "MIN_CODEC_TRAIN", 80)


@pytest.fixture(scope="module")
def old_stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(d, filter="data")
    return d, json.loads((d / "expected.json").read_text())


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_storage_mode_saves_and_loads(version, small_codes, tmp_path):
    s = _build(version, disk_dir=tmp_path)
    assert s.storage_mode == STORAGE[version] and len(s) == N
    before = _observe(s)
    out = s.save(tmp_path / "st")
    m = read_manifest(out)
    assert m["format_version"] == version and m["count"] == N and m["next_id"] == N + 3
    assert set(m["files"]) == COMMON | ROW_FILES[version]
    assert {p.name for p in live(out).iterdir()} == COMMON | ROW_FILES[version] | {"manifest.json"}
    saved = _observe(s)  # saving compacted the rows (2 deleted: fewer bytes), nothing else
    assert saved["nbytes"] < before["nbytes"]
    _same(saved, before, keys=("len", "spec", "ids_sha256", "compressed", "refine_spec"))
    t = DocumentStore.load(out, disk_dir=tmp_path)
    assert t.storage_mode == STORAGE[version] and t.extra == {"fixture": version}
    _same(_observe(t), saved)
    assert t.get(["d3"])[0].metadata == {"g": 9} and t.get(["d4", "x1"])[0].text == "later"
    q = -_data(1, 5)[0]
    t.upsert(["new"], ["n"], q)  # 1-bit codes rank coarsely: found, not necessarily first
    assert "new" in [h.id for h in t.search(q, 30)] and t.int_id("new") == N + 3
    if version in (1, 4):  # raw or float16 rows re-score it exactly
        assert t.search(q, 10)[0].id == "new" and t.vectors(["new"])[0] @ q > 0.999
    u = DocumentStore.load(t.save(tmp_path / "again"))
    assert len(u) == N + 1 and u.storage_mode == STORAGE[version]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_stores_written_before_the_rows_split_still_load(version, old_stores, tmp_path):
    d, expected = old_stores
    src = d / f"v{version}"
    s = DocumentStore.load(src, disk_dir=tmp_path)
    assert s.storage_mode == STORAGE[version] and s.extra == {"fixture": version}
    _same(_observe(s), expected[f"v{version}"])
    out = s.save(tmp_path / "resaved")  # the same files, byte for byte, and the same manifest
    old, new = read_manifest(src), read_manifest(out)
    assert list(new)[-1] == "manifest_sha256" and list(old) == list(new)[:-1]  # key order too
    for m in (old, new):
        m.pop("saved_at"), m.pop("manifest_sha256", None)
    assert new == old
    for name in new["files"]:
        assert (live(out) / name).read_bytes() == (src / name).read_bytes(), name
