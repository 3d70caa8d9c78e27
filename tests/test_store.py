import json
import shutil

import numpy as np
import pytest

from retgen_engine import HashingEncoder, ModelFormatError, RetgenEngine

from retgen_testutil import hashing_config, live, rewrite_manifest


def test_round_trip_is_exact(tiny_engine, tiny_model_dir, tmp_path):
    out = tiny_engine.save(tmp_path / "copy")
    back = RetgenEngine.load(out)
    for ctx in ["The game was", "of the"]:
        np.testing.assert_array_equal(back.next_token_logprobs(ctx), tiny_engine.next_token_logprobs(ctx))
    a = back.generate("The tower", max_new_tokens=10, seed=2)
    b = tiny_engine.generate("The tower", max_new_tokens=10, seed=2)
    assert a.text == b.text


def test_manifest_describes_every_array(tiny_model_dir):
    v = live(tiny_model_dir)
    m = json.loads((v / "manifest.json").read_text())
    assert m["format"] == "retgen-model" and m["format_version"] == 1
    assert m["encoder"]["name"] == "hashing:64" and m["encoder"]["dim"] == 64
    assert m["index"]["spec"] and m["index"]["metric"] == "L2"
    for name, meta in m["arrays"].items():
        a = np.load(v / meta["file"], mmap_mode="r")
        assert a.dtype.str == meta["dtype"] and list(a.shape) == meta["shape"]
        assert meta["file"] in m["files"] and len(m["files"][meta["file"]]["sha256"]) == 64
    assert "numpy" in m["versions"] and "faiss" in m["versions"]


def mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a file mapping (its base chain ends in an mmap)."""
    import mmap

    while isinstance(a, np.ndarray):
        a = a.base
    return isinstance(a, mmap.mmap)


def test_loaded_arrays_are_read_only_memory_maps(tiny_engine):
    # plain ndarray views of the mapping (a np.memmap would make an object per lookup)
    assert type(tiny_engine.stream_ids) is np.ndarray and mapped(tiny_engine.stream_ids)
    assert all(mapped(a) for a in tiny_engine.backoff.arrays.values())
    with pytest.raises(ValueError):
        tiny_engine.stream_ids[0] = 5


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_corrupt_file_is_detected(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    f = live(d) / "arrays" / "pat_count.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="pat_count.npy.*sha256"):
        RetgenEngine.load(d)


def test_truncated_and_missing_files(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    (live(d) / "patterns.faiss").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="patterns.faiss"):
        RetgenEngine.load(d)
    (live(d) / "arrays" / "corpus_ids.npy").unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        RetgenEngine.load(d)


def test_missing_manifest_and_other_versions(tiny_model_dir, tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        RetgenEngine.load(tmp_path / "nope")
    d = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_manifest(d, lambda m: m.update(format_version=99))
    with pytest.raises(ModelFormatError, match="format_version 99"):
        RetgenEngine.load(d)
    (live(d) / "manifest.json").unlink()
    with pytest.raises(ModelFormatError, match="no manifest.json"):
        RetgenEngine.load(d)


def test_model_from_another_encoder_is_refused(tiny_model_dir):
    with pytest.raises(ModelFormatError, match="hashing:64"):
        RetgenEngine.load(tiny_model_dir, encoder=HashingEncoder(32))


class FailingEncoder(HashingEncoder):
    def __init__(self):
        super().__init__(64)
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += 1
        if self.calls > 3:
            raise KeyboardInterrupt("simulated interruption")
        return super()._encode_batch(texts)


def test_interrupted_build_leaves_nothing_loadable(sample_corpus, tmp_path):
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        RetgenEngine.build(sample_corpus, out=out, config=hashing_config(), encoder=FailingEncoder(),
                           progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(sample_corpus, tiny_model_dir):
    with pytest.raises(FileExistsError, match="overwrite"):
        RetgenEngine.build(sample_corpus, out=tiny_model_dir, config=hashing_config(),
                           encoder=HashingEncoder(64), progress=False)
    assert (live(tiny_model_dir) / "manifest.json").exists()
