"""Refitting the memory's weights on documents added to it (held out as new text)."""
import shutil

import numpy as np
import pytest

from retgen_engine import RetgenEngine
from retgen_engine.checks import ArgumentError
from retgen_engine.cli import main
from retgen_engine.learn.memory_tuning import added_documents, document_tokens


def _engine(tiny_model_dir, tmp_path):
    return RetgenEngine.load(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def _topic_docs(n=6, seed=0):
    """Documents on one new topic: the same phrases (with words the corpus never had) in
    another order and mix in each document."""
    rng = np.random.default_rng(seed)
    phrases = ["the zorblat reactor hums under the quarvian dome",
               "engineers of the quarvian guild tune the zorblat coils",
               "a zorblat coil glows when the quarvian tide rises",
               "the guild logs every hum of the reactor at dawn"]
    return [". ".join(phrases[j] for j in rng.permutation(len(phrases)).tolist() * 3) + "."
            for _ in range(n)]


def test_tuning_on_added_documents_raises_the_memory_weight_for_new_text(tiny_model_dir, tmp_path):
    eng = _engine(tiny_model_dir, tmp_path)
    before = list(eng.memory.config.weights)
    ids = eng.memory.add(_topic_docs(), ids=[f"t{i}" for i in range(6)])
    assert sorted(added_documents(eng.memory)) == sorted(ids)
    rep = eng.tune_memory(progress=False)
    pp = rep["perplexity"]
    assert rep["documents"] >= 1 and rep["excluded_passages"] >= rep["documents"]
    assert pp["after"] < 0.8 * pp["before"]
    assert sum(eng.memory.config.weights) > sum(before)
    assert eng.memory.config is eng.config.memory
    # in force at once, and saved with the memory
    p = np.exp(eng.next_token_logprobs("the zorblat"))
    assert abs(p.sum() - 1) < 1e-6 and p.min() > 0
    eng.save_memory()
    again = RetgenEngine.load(eng.model_dir)
    assert again.memory.config.weights == eng.memory.config.weights
    assert again.memory.config.gate == eng.memory.config.gate == rep["after"]["gate"]
    # the learned gate is fitted with the weights, and only when asked
    eng.memory.config = eng.config.memory = again.memory.config.model_copy(
        update={"weights": before, "gate": [], "gate_center": [], "gate_scale": []})
    plain = eng.tune_memory(progress=False, gate=False)
    assert plain["after"]["gate"] == [] and eng.memory.config.gate == []
    if rep["after"]["gate"]:  # kept only where it beat the weights alone on the held-out text
        assert rep["perplexity"]["after"] < plain["perplexity"]["after"]


def test_held_out_documents_cannot_read_themselves(tiny_model_dir, tmp_path):
    """Each document its own random words: another document cannot help, so with the leakage
    mask the refit ends (almost) where the memory off is (it may only undo the harm the
    build-time weights did on such text); reading itself it would predict most tokens."""
    eng = _engine(tiny_model_dir, tmp_path)
    itos = eng.vocab.itos
    rng = np.random.default_rng(1)
    words = rng.permutation(np.arange(10, len(itos)))
    docs = [" ".join(itos[w] for w in rng.choice(words[i * 40:(i + 1) * 40], 300)) for i in range(5)]
    eng.memory.add(docs, ids=[f"r{i}" for i in range(5)])
    rep = eng.tune_memory(progress=False, max_tokens=2000)
    pp = rep["perplexity"]
    assert pp["after"] <= pp["before"] and pp["after"] > 0.97 * pp["without_memory"]
    # the documents are rebuilt from the memory's passages exactly
    toks = document_tokens(eng.memory, "r0")
    assert [itos[t] for t in toks] == docs[0].split()


def test_tuning_arguments_are_checked(tiny_model_dir, tmp_path):
    eng = _engine(tiny_model_dir, tmp_path)
    with pytest.raises(ArgumentError, match="0 added documents"):
        eng.tune_memory(progress=False)
    eng.memory.add(_topic_docs(2), ids=["a", "b"])
    with pytest.raises(ArgumentError, match=r"\['nope'\] are not documents"):
        eng.tune_memory(["a", "nope"], progress=False)
    with pytest.raises(ArgumentError, match="1 added documents"):
        eng.tune_memory(["a"], progress=False)
    with pytest.raises(ArgumentError, match="max_tokens"):
        eng.tune_memory(max_tokens=0, progress=False)


def test_memory_tune_commands(tiny_model_dir, tmp_path, capsys):
    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    files = []
    for i, text in enumerate(_topic_docs(4)):
        f = tmp_path / f"doc{i}.txt"
        f.write_text(text)
        files.append(str(f))
    w0 = RetgenEngine.load(model).memory.config.weights
    assert main(["memory", "add", "--model", str(model), "--corpus", *files, "--tune",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "memory weights refitted on" in out and "added 4 documents" in out
    w1 = RetgenEngine.load(model).memory.config.weights
    assert w1 != w0
    assert main(["memory", "tune", "--model", str(model), "--id", files[0], files[1],
                 "--max-tokens", "500", "--quiet", "--no-gate"]) == 0
    out = capsys.readouterr().out
    assert "held-out added documents" in out and "no learned gate" in out
    assert RetgenEngine.load(model).memory.config.gate == []
    assert main(["memory", "tune", "--model", str(model), "--max-tokens", "0"]) == 2
    assert "max_tokens=0" in capsys.readouterr().err
