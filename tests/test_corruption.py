"""Every file of a saved model and store damaged, every manifest field edited, paths pointing
outside, oversized learned-part configs: each load fails with one ModelFormatError that names
the file, and ``retgen info`` prints one line and exits 2. Never a silent wrong answer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retgen_engine import ModelFormatError, RetgenEngine
from retgen_engine.cli import main
from retgen_engine.docstore import DocumentStore
from retgen_testutil import live, rewrite_manifest


def leaf_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaf_paths(v, prefix + (k,))
    elif isinstance(obj, list) and obj and not all(isinstance(x, (int, float)) for x in obj):
        for i, v in enumerate(obj):
            yield from leaf_paths(v, prefix + (i,))
    else:
        yield prefix


def edited(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return v + [1]
    return "x" if v is None else None


def set_at(m, path, value):
    for k in path[:-1]:
        m = m[k]
    m[path[-1]] = value


def get_at(m, path):
    for k in path:
        m = m[k]
    return m


def damage(f: Path, how: str) -> None:
    """Flip a byte in the middle of ``f``, cut it in half or delete it."""
    if how == "flip":
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0x5A
        f.write_bytes(bytes(b))
    elif how == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        f.unlink()


def refuses(load, capsys=None, cli=None):
    with pytest.raises(ModelFormatError):
        load()
    if cli is not None:
        assert main(cli) == 2
        err = capsys.readouterr().err
        assert err.startswith("retgen: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_every_model_file_damaged_is_refused(tiny_model_dir, tmp_path, capsys):
    files = [p.relative_to(live(tiny_model_dir)) for p in live(tiny_model_dir).rglob("*")
             if p.is_file()]
    assert len(files) > 20
    for rel in files:
        for how in ("flip", "truncate", "delete"):
            d = shutil.copytree(tiny_model_dir, tmp_path / f"{how}-{rel.as_posix().replace('/', '_')}")
            damage(live(d) / rel, how)
            cli = ["info", "--model", str(d), "--verify"] if how == "flip" else None
            refuses(lambda: RetgenEngine.load(d), capsys, cli)
            shutil.rmtree(d)
    d = shutil.copytree(tiny_model_dir, tmp_path / "pointer")
    (d / "CURRENT").write_text('{"format": "retgen-commit"')
    refuses(lambda: RetgenEngine.load(d), capsys, ["info", "--model", str(d)])


def test_every_manifest_field_edited_is_refused(tiny_model_dir, tmp_path):
    d = shutil.copytree(tiny_model_dir, tmp_path / "m")
    mf = live(d) / "manifest.json"
    original = mf.read_text()
    m = json.loads(original)
    paths = [p for p in leaf_paths(m) if p and p[-1] != "manifest_sha256"]
    assert len(paths) > 50
    for path in paths:
        e = json.loads(original)
        set_at(e, path, edited(get_at(e, path)))
        mf.write_text(json.dumps(e, indent=1))
        with pytest.raises(ModelFormatError):
            RetgenEngine.load(d)
    mf.write_text(original)
    RetgenEngine.load(d)  # the untouched manifest still loads


def test_consistent_but_wrong_manifests_are_refused(tiny_model_dir, tmp_path):
    """A re-sealed manifest (as a buggy writer could leave) is still checked against the files."""
    cases = {
        "an array path outside the model": lambda m: m["arrays"]["corpus_ids"].update(file="../../etc/passwd"),
        "an absolute file entry": lambda m: m["files"].update({"/etc/passwd": {"bytes": 1, "sha256": "0" * 64}}),
        "the back-off order": lambda m: m["backoff"].update(order=4),
        "the index file": lambda m: m["index"].update(file="../patterns.faiss"),
        "the learned parts' key": lambda m: m.update(learned={"policy": "../../policy"}),
        "no files key": lambda m: m.pop("files"),
        "no encoder key": lambda m: m.pop("encoder"),
        "a patterns count of the wrong type": lambda m: m["patterns"].update(count="many"),
        "the vocabulary size": lambda m: m["tokenizer"].update(vocab_size=3),
    }
    for name, edit in cases.items():
        d = shutil.copytree(tiny_model_dir, tmp_path / name.replace(" ", "_").replace("'", ""))
        rewrite_manifest(d, edit)
        with pytest.raises(ModelFormatError):
            RetgenEngine.load(d)


def test_oversized_learned_config_is_refused_before_allocating(tmp_path):
    from retgen_engine.learn.policy import RetrievalPolicy

    RetrievalPolicy(8, 8).write_into(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    for key, value in (("hidden_dim", 10 ** 7), ("input_dim", -1), ("k_choices", list(range(5000))),
                       ("bogus", 1), ("hidden_dim", "64"), ("tau_choices", [float("nan")])):
        bad = {**cfg, key: value}
        (tmp_path / "p" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ModelFormatError, match="config.json"):
            RetrievalPolicy.load(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text("{broken")
    with pytest.raises(ModelFormatError, match="config.json"):
        RetrievalPolicy.load(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "p" / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ModelFormatError, match="model.safetensors"):
        RetrievalPolicy.load(tmp_path / "p")


@pytest.fixture()
def store_dir(tmp_path) -> Path:
    s = DocumentStore()
    v = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    s.upsert([f"d{i}" for i in range(30)], [f"t{i}" for i in range(30)], v,
             [{"i": i, "tags": ["a", "b"]} for i in range(30)])
    return s.save(tmp_path / "store")


def test_every_store_file_and_field_damaged_is_refused(store_dir, tmp_path):
    files = [p.name for p in live(store_dir).iterdir() if p.is_file()]
    for name in files:
        for how in ("flip", "delete"):
            d = shutil.copytree(store_dir, tmp_path / f"{how}-{name}")
            damage(live(d) / name, how)
            with pytest.raises(ModelFormatError):
                DocumentStore.load(d)
    mf = live(store_dir) / "manifest.json"
    original = mf.read_text()
    for path in [p for p in leaf_paths(json.loads(original)) if p and p[-1] != "manifest_sha256"]:
        e = json.loads(original)
        set_at(e, path, edited(get_at(e, path)))
        mf.write_text(json.dumps(e))
        with pytest.raises(ModelFormatError):
            DocumentStore.load(store_dir)
    mf.write_text(original)
    db = live(store_dir) / "docs.sqlite"  # damaged records, checksums not verified: still refused
    good = db.read_bytes()
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(ModelFormatError, match="docs.sqlite"):
        DocumentStore.load(store_dir, verify=False)
    db.write_bytes(good)
    t = DocumentStore.load(store_dir)
    assert t.get(["d3"])[0].metadata == {"i": 3, "tags": ["a", "b"]}  # list-valued metadata


@pytest.mark.parametrize("name", ["st%41", "st#1", "st?x=1", "st a", "stä"])
def test_store_paths_with_uri_characters(tmp_path, name):
    """The SQLite file is opened by a quoted URI: a sibling never answers for it."""
    v = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    a = DocumentStore()
    a.upsert(["mine"], ["mine"], v[:1])
    a.save(tmp_path / name)
    b = DocumentStore()
    b.upsert(["sibling"], ["sibling"], v[1:2])
    b.save(tmp_path / "stA")
    b.save(tmp_path / "st")
    assert DocumentStore.load(tmp_path / name).ids() == ["mine"]
