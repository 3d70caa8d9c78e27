"""Encoder backends: the auto chooser, bad combinations, parity of every backend with torch
float32 on real contexts, the lean single-query path, the ONNX export cache, cross-backend load."""
from __future__ import annotations

import numpy as np
import pytest

from retgen_engine.config import EncoderConfig
from retgen_engine.search import encoders_export
from retgen_engine.search.encoder import load_encoder, load_encoder_from_config
from retgen_engine.search.encoders_select import (RANKING, available_cores, batch_threads,
                                                  choose, cpu_flags, validate)

from retgen_testutil import SAMPLE

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
ZEN4 = {"avx512f", "avx512_bf16", "avx512_vnni"}
AVX2 = {"avx", "avx2", "fma"}


# -- the chooser: a pure function of the flags ---------------------------------------------
@pytest.mark.parametrize("flags,onnx,want", [
    (AMX, True, ("torch", "bfloat16")),
    (AMX, False, ("torch", "bfloat16")),
    (ZEN4, True, ("onnx", "float32")),
    (ZEN4, False, ("torch", "bfloat16")),
    (AVX2, True, ("onnx", "float32")),
    (AVX2, False, ("torch", "float32")),
    (set(), False, ("torch", "float32")),
])
def test_auto_follows_cpu_flags(flags, onnx, want):
    c = choose(flags, onnx)
    assert (c.backend, c.dtype) == want and c.reason


def test_bf16_only_where_native_and_int8_never_auto():
    for flags in (AVX2, set(), {"avx512f", "avx512_vnni"}):
        for onnx in (True, False):
            for backend in ("auto", "torch", "onnx"):
                if backend == "onnx" and not onnx:
                    continue
                c = choose(flags, onnx, backend, "auto")
                assert c.dtype == "float32", (flags, onnx, backend, c)
    assert all(d != "int8" for r in RANKING.values() for _, d in r)
    assert all(d != "bfloat16" for _, d in RANKING["plain"])


def test_explicit_choices_are_kept():
    def bd(*a):
        c = choose(*a)
        return c.backend, c.dtype

    assert bd(AVX2, True, "torch", "auto") == ("torch", "float32")
    assert bd(ZEN4, True, "torch", "auto") == ("torch", "bfloat16")
    assert bd(ZEN4, True, "auto", "float32") == ("onnx", "float32")
    assert bd(ZEN4, False, "auto", "float32") == ("torch", "float32")
    assert bd(AVX2, True, "auto", "int8") == ("onnx", "int8")
    assert bd(AMX, True, "onnx", "auto") == ("onnx", "float32")
    assert bd(AVX2, True, "auto", "bfloat16") == ("torch", "bfloat16")  # asked for: slow here


@pytest.mark.parametrize("backend,dtype,named", [
    ("torch", "int8", "int8"), ("onnx", "bfloat16", "bfloat16"), ("tensorrt", "auto", "tensorrt"),
    ("auto", "fp16", "fp16"),
])
def test_bad_combinations_raise_naming_the_value(backend, dtype, named):
    with pytest.raises(ValueError, match=named):
        validate(backend, dtype)
    with pytest.raises(ValueError, match=named):
        load_encoder("minilm", dtype=dtype, backend=backend)
    with pytest.raises(ValueError, match=named):
        EncoderConfig(backend=backend, dtype=dtype)


def test_onnx_requested_without_onnxruntime_raises():
    with pytest.raises(ValueError, match="onnxruntime"):
        choose(AVX2, False, "onnx", "auto")
    with pytest.raises(ValueError, match="onnxruntime"):
        choose(AVX2, False, "auto", "int8")


def test_config_defaults_and_old_values_still_parse():
    assert EncoderConfig().backend == "auto" and EncoderConfig().dtype == "auto"
    assert EncoderConfig(dtype="bfloat16").dtype == "bfloat16"  # what older models stored
    assert EncoderConfig(dtype="float32").dtype == "float32"
    assert load_encoder_from_config(EncoderConfig(name="hashing:16")).dim == 16


def test_threads_and_flags(monkeypatch):
    assert isinstance(cpu_flags(), frozenset)
    assert available_cores() >= 1
    assert batch_threads(3) == 3
    monkeypatch.setenv("RETGEN_ENCODER_THREADS", "1")
    assert batch_threads() == 1
    monkeypatch.setenv("RETGEN_ENCODER_THREADS", "x")
    with pytest.raises(ValueError, match="RETGEN_ENCODER_THREADS"):
        batch_threads()


# -- the real MiniLM on every backend ------------------------------------------------------
def _contexts() -> list[str]:
    words = SAMPLE.read_text(encoding="utf-8").split()
    rng = np.random.default_rng(0)
    ctx = [" ".join(words[i:i + n]) for n in (1, 2, 3, 4, 8, 16)
           for i in rng.integers(0, len(words) - 20, 60)]
    return list(dict.fromkeys(ctx))


BACKENDS = [("torch", "bfloat16"), ("onnx", "float32"), ("onnx", "int8")]
#: minimum cosine to torch float32 of any one context / of the mean (int8 is coarser)
COS = {("torch", "bfloat16"): (0.995, 0.999), ("onnx", "float32"): (0.9999, 0.9999),
       ("onnx", "int8"): (0.95, 0.99)}


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def encoders(onnx_cache):
    pytest.importorskip("onnxruntime")
    encs = {("torch", "float32"): load_encoder("minilm", "float32", "torch")}
    for b, d in BACKENDS:
        encs[(b, d)] = load_encoder("minilm", d, b, cache_dir=onnx_cache)
    return encs


@pytest.fixture(scope="module")
def reference(encoders):
    ctx = _contexts()
    return ctx, encoders[("torch", "float32")].encode(ctx)


@pytest.mark.slow
@pytest.mark.parametrize("key", BACKENDS, ids=lambda k: "/".join(k))
def test_parity_with_torch_float32(encoders, reference, key):
    ctx, ref = reference
    assert len(ctx) >= 300
    v = encoders[key].encode(ctx)
    assert v.dtype == np.float32 and v.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = np.sum(v * ref, axis=1)
    lo, mean = COS[key]
    assert cos.min() >= lo and cos.mean() >= mean, (cos.min(), cos.mean())


@pytest.mark.slow
@pytest.mark.parametrize("key", [("torch", "float32")] + BACKENDS, ids=lambda k: "/".join(k))
def test_lean_single_query_equals_batch_path(encoders, reference, key):
    e = encoders[key]
    ctx, _ = reference
    sample = ctx[::12]
    lean = np.stack([e.encode([t])[0] for t in sample])
    assert e._encode_one(sample[0]) is not None  # the lean path exists and is the one used
    alone = np.stack([e._encode_batch([t])[0] for t in sample])  # batch path, batch of one
    mixed = e.encode(sample)  # batch path, padded among other lengths
    tol = 0.999 if key[1] == "bfloat16" else 0.99999
    assert np.sum(lean * alone, axis=1).min() >= tol
    # int8: ONNX Runtime's dynamic activation scale is per batch, so a vector moves with its
    # batch (documented); float backends agree up to padding noise
    assert np.sum(lean * mixed, axis=1).min() >= (0.95 if key[1] == "int8" else tol)


@pytest.mark.slow
def test_info_keeps_name_and_dim_and_records_backend(encoders):
    infos = {k: e.info() for k, e in encoders.items()}
    assert len({(i["name"], i["dim"]) for i in infos.values()}) == 1
    assert infos[("onnx", "int8")]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    for (b, d), i in infos.items():
        assert i["backend"] == b and i["dtype"] == d


@pytest.mark.slow
def test_torch_thread_count_is_restored(encoders, reference):
    import torch

    before = torch.get_num_threads()
    e = encoders[("torch", "bfloat16")]
    e.encode(reference[0][:1])
    e.encode(reference[0][:40])
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_export_cache_is_reused(encoders, onnx_cache):
    from retgen_engine.search.encoders_onnx import OnnxEncoder

    first = encoders[("onnx", "float32")]
    d = first.export_dir
    assert d.parent == onnx_cache and (d / "meta.json").is_file()
    mtimes = {f.name: f.stat().st_mtime_ns for f in d.iterdir()}
    n = encoders_export.EXPORTS
    again = OnnxEncoder(None, dtype="int8", cache_dir=onnx_cache)
    assert encoders_export.EXPORTS == n  # no second export
    assert again.export_dir == d and {f.name: f.stat().st_mtime_ns for f in d.iterdir()} == mtimes
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".tmp-")]
    assert len(list(onnx_cache.iterdir())) == 1


@pytest.mark.slow
def test_model_built_with_torch_loads_with_onnx(tmp_path, encoders):
    from retgen_engine import RETGENConfig, RetgenEngine
    from retgen_engine.config import PatternConfig

    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:120]
    corpus = tmp_path / "small.tokens"
    corpus.write_text("".join(lines), encoding="utf-8")
    cfg = RETGENConfig()
    cfg.patterns = PatternConfig(lengths=[1, 2], min_counts=[1, 2])
    out = tmp_path / "model"
    RetgenEngine.build(corpus, out=out, config=cfg, encoder=encoders[("torch", "float32")],
                       progress=False)
    p = {}
    for key in [("torch", "float32"), ("onnx", "float32"), ("onnx", "int8")]:
        eng = RetgenEngine.load(out, encoder=encoders[key])
        p[key] = np.exp(eng.next_token_logprobs("The game was released in"))
        assert abs(p[key].sum() - 1) < 1e-5
    np.testing.assert_allclose(p[("onnx", "float32")], p[("torch", "float32")], atol=1e-4)
