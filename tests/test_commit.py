"""The commit protocol (retgen_engine.persist.commit): a writer killed at any step leaves the
old or the new version, never neither; Ctrl-C in the CLI likewise; stale files are cleaned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retgen_engine.persist.commit import STEPS, Commit, CommitError, resolve
from retgen_testutil import ROOT, hashing_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "tests")}


def run(code: str, step: str | None = None, mode: str = "kill") -> subprocess.CompletedProcess:
    env = dict(ENV)
    if step:
        env["RETGEN_FAULT_AT"] = step
        if mode == "interrupt":
            env["RETGEN_FAULT_MODE"] = "interrupt"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_commit_switches_atomically_and_cleans(tmp_path):
    d = tmp_path / "x"
    for i in range(3):
        with Commit(d) as c:
            (c.path / "a.txt").write_text(str(i))
            (c.path / "manifest.json").write_text("{}")
            c.commit()
        assert (resolve(d) / "a.txt").read_text() == str(i)
    # the live version and the one it replaced stay; older ones and temp dirs are gone
    assert sorted(p.name for p in d.iterdir()) == [".lock", "CURRENT", "v-000002", "v-000003"]
    with Commit(d) as c:  # a writer that gives up leaves the live version as it was
        (c.path / "a.txt").write_text("abandoned")
    assert (resolve(d) / "a.txt").read_text() == "2"
    assert not [p for p in d.iterdir() if p.name.startswith(".v-")]
    (resolve(d) / "manifest.json").write_text('{"edited": 1}')
    with pytest.raises(CommitError, match="sha256"):
        resolve(d)
    (d / "CURRENT").write_text("not json")
    with pytest.raises(CommitError, match="not a valid commit pointer"):
        resolve(d)


def test_aborted_first_commit_leaves_no_directory(tmp_path):
    with Commit(tmp_path / "new") as c:
        (c.path / "f").write_text("x")
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_model_dir):
    """A trained copy of the tiny model (seed 0), built once."""
    import shutil

    d = tmp_path_factory.mktemp("commit") / "m"
    shutil.copytree(tiny_model_dir, d)
    r = run(f"""
        from retgen_engine import RetgenEngine
        from retgen_engine.learn.training import train
        train(RetgenEngine.load({str(d)!r}), seed=0, max_queries=600, fraction=0.1,
              reranker_steps=10, policy_steps=10, progress=False)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _seed_of(d: Path) -> int:
    from retgen_engine import RetgenEngine

    e = RetgenEngine.load(d)  # loads: checksums, pointer, learned parts
    assert e.reranker is not None and e.policy is not None
    assert len(e.generate("The game", max_new_tokens=3, seed=0).tokens) == 3
    return e.manifest["training"]["seed"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["kill", "interrupt"])
def test_train_interrupted_at_every_step_keeps_a_complete_model(trained_dir, tmp_path, mode):
    import shutil

    from retgen_engine import RetgenEngine

    steps = STEPS if mode == "kill" else ("begin", "pointer-written", "committed")
    seen = set()
    for step in steps:
        d = shutil.copytree(trained_dir, tmp_path / f"{mode}-{step}")
        r = run(f"""
            import sys
            from retgen_engine.cli import main
            sys.exit(main(["train", "--model", {str(d)!r}, "--seed", "1", "--queries", "600",
                           "--fraction", "0.1", "--quiet"]))
        """, step, mode)
        if mode == "kill":
            assert r.returncode == -9, (step, r.returncode, r.stderr[-1000:])
        else:
            assert r.returncode == 130 and "Traceback" not in r.stderr, (step, r.stderr[-1000:])
        seed = _seed_of(d)  # the old version (seed 0) or the new one (seed 1), never neither
        assert seed == (1 if step in ("committed", "cleaned") else 0), step
        seen.add(seed)
        # the next writer cleans what the interrupted one left, and keeps the model as it was
        RetgenEngine.load(d).save(d, overwrite=True)
        assert [p.name for p in d.iterdir() if p.name.startswith(".")] == [".lock"]
        assert _seed_of(d) == seed
    assert seen == {0, 1}


@pytest.mark.slow
def test_model_and_store_saves_killed_at_every_step(tiny_model_dir, tmp_path):
    import shutil

    from retgen_engine import RetgenEngine
    from retgen_engine.docstore import DocumentStore

    for step in STEPS:
        d = shutil.copytree(tiny_model_dir, tmp_path / f"m-{step}")
        r = run(f"""
            from retgen_engine import RetgenEngine
            e = RetgenEngine.load({str(d)!r})
            e.manifest["build_stats"] = {{"marker": "new"}}
            e.save({str(d)!r}, overwrite=True)
        """, step)
        assert r.returncode == -9, (step, r.stderr[-1000:])
        stats = RetgenEngine.load(d).manifest["build_stats"]
        assert (stats.get("marker") == "new") == (step in ("committed", "cleaned")), step
        s = tmp_path / f"s-{step}"
        r = run(f"""
            import numpy as np
            from retgen_engine.docstore import DocumentStore
            st = DocumentStore()
            v = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
            st.upsert([f"d{{i}}" for i in range(10)], ["t"] * 10, v[:10])
            st.save({str(s)!r})
        """)
        assert r.returncode == 0, r.stderr[-1000:]
        r = run(f"""
            import numpy as np
            from retgen_engine.docstore import DocumentStore
            st = DocumentStore.load({str(s)!r})
            v = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
            st.upsert([f"d{{i}}" for i in range(10, 20)], ["t"] * 10, v[10:])
            st.save({str(s)!r})
        """, step)
        assert r.returncode == -9, (step, r.stderr[-1000:])
        n = len(DocumentStore.load(s))
        assert n == (20 if step in ("committed", "cleaned") else 10), (step, n)


def test_model_saved_by_the_previous_release_loads_and_converts(tmp_path):
    """A model directory of the layout before the commit protocol (manifest.json at the top,
    trained parts in subdirectories, written by the previous release: tests/data) loads with
    the same numbers, and the first commit into it converts it in place."""
    import tarfile

    import numpy as np

    from retgen_engine import HashingEncoder, RetgenEngine

    with tarfile.open(ROOT / "tests" / "data" / "model_format_v1_legacy.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    d, expected = tmp_path / "model", json.loads((tmp_path / "expected.json").read_text())
    assert (d / "manifest.json").is_file() and not (d / "CURRENT").exists()

    def check(e):
        ids = np.asarray(e.stream_ids[:400])
        assert e.info()["learned"] == expected["learned"]
        assert e.perplexity(ids)["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-9)
        assert e.perplexity(ids, policy=False)["perplexity"] == pytest.approx(
            expected["perplexity_fixed"], rel=1e-9)
        np.testing.assert_allclose(e.next_token_logprobs("The game was")[:50], expected["logp"],
                                   rtol=0, atol=1e-9)
        assert e.generate("The game", max_new_tokens=12, seed=0).text == expected["text"]

    e = RetgenEngine.load(d, encoder=HashingEncoder(16))
    check(e)
    e.save(d, overwrite=True)  # the first commit: a version directory, the old files gone
    assert sorted(p.name for p in d.iterdir()) == [".lock", "CURRENT", "v-000001"]
    check(RetgenEngine.load(d, encoder=HashingEncoder(16)))
