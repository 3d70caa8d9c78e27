"""The document memory under faults and threads: a save killed at any step leaves the old or
the new memory; readers and writers in threads never see a half-added document."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from retgen_engine import RetgenEngine
from retgen_engine.persist.commit import STEPS
from test_commit import run

PHRASE = "the zorblaxian quillon vetch engine hums at midnight over the brass harbour"


@pytest.mark.slow
def test_memory_save_killed_at_every_step(tiny_model_dir, tmp_path):
    for step in STEPS:
        d = shutil.copytree(tiny_model_dir, tmp_path / f"m-{step}")
        before = RetgenEngine.load(d).memory.ids()
        r = run(f"""
            from retgen_engine import RetgenEngine
            e = RetgenEngine.load({str(d)!r})
            e.memory.add([{PHRASE!r}], ids=["new-doc"])
            e.save_memory()
        """, step)
        assert r.returncode == -9, (step, r.stderr[-1000:])
        eng = RetgenEngine.load(d)  # verifies every checksum
        ids = eng.memory.ids()
        if step in ("committed", "cleaned"):
            assert ids == before + ["new-doc"], step
            assert "brass" in eng.vocab.stoi
        else:
            assert ids == before, step
        lp = eng.next_token_logprobs(PHRASE)
        assert np.isclose(np.exp(lp).sum(), 1.0) and np.isfinite(lp).all()


def test_readers_and_writers_in_threads(tiny_model_dir):
    eng = RetgenEngine.load(tiny_model_dir)
    errors: list[BaseException] = []
    stop = threading.Event()
    prompts = ["the zorblaxian quillon vetch engine hums at midnight over the",
               "The game was released in", "In 1998 , the company"]

    def reader(i: int) -> None:
        try:
            n = 0
            while not stop.is_set() or n < 3:
                lp = eng.next_token_logprobs(prompts[n % len(prompts)], memory_refresh=2)
                assert len(lp) <= len(eng.vocab)
                assert abs(np.exp(lp).sum() - 1.0) < 1e-9 and np.isfinite(lp).all()
                res = eng.generate(prompts[(n + i) % len(prompts)], max_new_tokens=4, seed=n)
                assert res.completion_tokens == 4
                n += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def writer() -> None:
        try:
            for j in range(6):
                words = " ".join(f"newword{j}x{w}" for w in range(30))
                eng.memory.add([PHRASE + " " + words], ids=[f"w{j}"])
                if j % 2:
                    eng.memory.delete([f"w{j - 1}"])
                eng.memory.store.upsert([f"raw{j}"], [f"a record added to the store {j} ."],
                                        eng.encoder.encode([f"a record {j}"]))
        except BaseException as e:  # pragma: no cover
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[0]
    assert {"w1", "w3", "w5", "raw5"} <= set(eng.memory.ids())
    assert not {"w0", "w2", "w4"} & set(eng.memory.ids())
    lp = eng.next_token_logprobs(prompts[0])
    assert len(lp) == len(eng.vocab) and np.isclose(np.exp(lp).sum(), 1.0)


def _damage_last_byte(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("edit, match", [
    (lambda m: m["extra"]["memory"].update(format="other"), "not a RETGEN memory"),
    (lambda m: m["extra"]["memory"].update(format_version=99), "format version 99"),
    (lambda m: m["extra"]["memory"].update(new_words="abc"), "new_words is malformed"),
    (lambda m: m["extra"]["memory"].update(base_vocab_sha256="0" * 64), "another model"),
    (lambda m: m["extra"]["memory"]["config"].update(k=-1), "config is missing or invalid"),
    (lambda m: m["extra"]["memory"].pop("config"), "config is missing or invalid"),
    (lambda m: m["extra"]["memory"]["encoder"].update(dim=7), "encoder"),
])
def test_a_damaged_memory_manifest_is_a_model_format_error(tiny_model_dir, tmp_path, edit, match):
    from retgen_engine.persist.errors import ModelFormatError
    from retgen_testutil import rewrite_manifest

    d = shutil.copytree(tiny_model_dir, tmp_path / "m")
    rewrite_manifest(d / "memory", edit)
    with pytest.raises(ModelFormatError, match=match):
        RetgenEngine.load(d)


def test_a_damaged_memory_file_is_a_model_format_error(tiny_model_dir, tmp_path):
    from retgen_engine.persist.errors import ModelFormatError
    from retgen_testutil import live

    for f in sorted(p.name for p in live(tiny_model_dir / "memory").iterdir()
                    if p.name != "manifest.json"):
        d = shutil.copytree(tiny_model_dir, tmp_path / f"m-{f}")
        _damage_last_byte(live(d / "memory") / f)
        with pytest.raises(ModelFormatError):
            RetgenEngine.load(d)
