"""A bounded thread soak of the document store (exact and compressed): writers add, upsert and
delete disjoint id ranges, readers search and get, one thread saves and reloads the store
while all this runs; a ground-truth model (what each id must hold) is checked throughout and at
the end, and every saved version loads consistent. Nothing lost, nothing resurrected."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from retgen_engine.config import IndexConfig
from retgen_engine.docstore import DocumentStore, large_store_kwargs

DIM = 16
SECONDS = 12.0


def vec(key: str, version: int) -> np.ndarray:
    rng = np.random.default_rng(abs(hash((key, version))) % (2 ** 32))
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make(kind: str, tmp_path) -> DocumentStore:
    if kind == "milvus":  # the same soak on Milvus Lite (a FLAT collection)
        pytest.importorskip("milvus_lite")
        return DocumentStore(backend="milvus", uri=str(tmp_path / "soak.db"), collection="soak",
                             dim=DIM)
    if kind == "exact":
        return DocumentStore(index_config=IndexConfig(exact_threshold=10 ** 6))
    kw = large_store_kwargs("compact")
    kw["index_config"] = kw["index_config"].model_copy(update={"exact_threshold": 300,
                                                               "pq_threshold": 300, "nlist": 16,
                                                               "pq_nsplits": 8})
    return DocumentStore(**kw)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["exact", "compressed", "milvus"])
def test_soak_matches_the_ground_truth(kind, tmp_path):
    s = make(kind, tmp_path)
    truth: dict[str, int] = {}  # id -> version of its text ("t{version}"); absent = deleted
    locks = [threading.Lock() for _ in range(4)]  # one per writer's id range
    n0 = 10_500 if kind == "compressed" else 400  # enough to train the codes (MIN_CODEC_TRAIN)
    seed_ids = [f"w0-{i}" for i in range(n0)]
    s.upsert(seed_ids, ["t0"] * n0, np.stack([vec(i, 0) for i in seed_ids]),
             [{"v": 0, "w": 0} for _ in seed_ids])
    truth.update({i: 0 for i in seed_ids})
    errors: list[BaseException] = []
    stop = time.monotonic() + SECONDS
    counts = {"ops": 0, "saves": 0}

    def writer(w: int) -> None:
        rnd = random.Random(w)
        try:
            while time.monotonic() < stop:
                key = f"w{w}-{rnd.randrange(600)}"
                with locks[w]:  # the model and the store change together for this range
                    op = rnd.random()
                    if op < 0.6:
                        ver = truth.get(key, 0) + 1
                        s.upsert([key], [f"t{ver}"], vec(key, ver)[None], [{"v": ver, "w": w}])
                        truth[key] = ver
                    else:
                        s.delete([key])
                        truth.pop(key, None)
                counts["ops"] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader(r: int) -> None:
        rnd = random.Random(100 + r)
        try:
            while time.monotonic() < stop:
                w = rnd.randrange(4)
                key = f"w{w}-{rnd.randrange(600)}"
                with locks[w]:
                    want = truth.get(key)
                    found = s.get([key])  # only the ids that exist
                    got = found[0] if found else None
                assert (got is None) == (want is None), (key, got, want)
                if got is not None:
                    assert got.text == f"t{want}" and got.metadata == {"v": want, "w": w}
                hits = s.search(vec(key, 1), k=5, filter={"w": {"$in": [0, 1]}})
                assert all(h.metadata["w"] in (0, 1) for h in hits)
                assert len({h.id for h in hits}) == len(hits)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def saver() -> None:
        try:
            while time.monotonic() < stop:
                out = s.save(tmp_path / "st")
                t = DocumentStore.load(out)  # every saved version is complete and consistent
                ids = t.ids()
                assert len(ids) == len(set(ids)) == len(t)
                for rec in t.get(ids[:50]):
                    assert rec.text == f"t{rec.metadata['v']}"
                counts["saves"] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = ([threading.Thread(target=writer, args=(w,)) for w in range(1, 4)]
               + [threading.Thread(target=reader, args=(r,)) for r in range(3)]
               + [threading.Thread(target=saver)])
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert counts["ops"] > 200 and counts["saves"] >= 2
    assert s.storage_mode == {"exact": "raw", "compressed": "in-index", "milvus": "milvus"}[kind]
    # the end state is exactly the ground truth, in memory and after a final save
    for store in (s, DocumentStore.load(s.save(tmp_path / "final"))):
        assert set(store.ids()) == set(truth)
        recs = store.get(sorted(truth))
        assert [r.text for r in recs] == [f"t{truth[k]}" for k in sorted(truth)]
        for key in random.Random(0).sample(sorted(truth), 50):  # each finds itself
            assert key in [h.id for h in store.search(vec(key, truth[key]), k=10)]
