import json

import pytest


from retgen_engine.cli import main

from retgen_testutil import hashing_config, live


def test_build_eval_generate_info(tmp_path, sample_corpus, capsys):
    cfg = tmp_path / "cfg.json"
    hashing_config().save(cfg)
    out = tmp_path / "m"
    assert main(["build", "--corpus", str(sample_corpus), "--out", str(out), "--config", str(cfg),
                 "--quiet"]) == 0
    assert "patterns" in capsys.readouterr().out
    data = tmp_path / "v.tokens"
    data.write_text(" the game was released . \n")
    assert main(["eval", "--model", str(out), "--data", str(data), "--json", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["tokens"] == 6 and rep["perplexity"] > 1 and "ms_per_token" in rep
    assert main(["eval", "--model", str(out), "--data", str(data), "--json", "--quiet",
                 "--cache-unigram", "0", "--cache-bigram", "0", "--lam", "0"]) == 0
    rep0 = json.loads(capsys.readouterr().out)
    assert rep0["perplexity"] == rep0["backoff_perplexity"]  # no cache, no retrieval
    assert main(["generate", "--model", str(out), "--prompt", "The game", "--max-new-tokens", "5",
                 "--seed", "1", "--trace"]) == 0
    text = capsys.readouterr().out
    assert "ngram" in text or "pattern" in text
    assert main(["generate", "--model", str(out), "--prompt", "The game", "--max-new-tokens", "5",
                 "--seed", "1", "--stream"]) == 0
    assert capsys.readouterr().out.startswith("The game")
    assert main(["info", "--model", str(out), "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_patterns"] > 0 and info["index_bytes"] > 0
    assert info["flat_float32_bytes"] == info["index_ntotal"] * info["encoder"]["dim"] * 4
    assert info["index_table_bytes"] == 0 or "PQ" in info["index_spec"]  # IVF-PQ only


def test_errors_are_clear(tmp_path, capsys, tiny_model_dir):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "a", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"retrieval": {"k": 0}}')
    assert main(["build", "--corpus", "x", "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "k" in capsys.readouterr().err


def test_train_command_picks_part_and_method(tmp_path, capsys, tiny_model_dir):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    assert main(["train", "--model", str(model), "--policy-only", "--policy-method", "reinforce",
                 "--queries", "600", "--fraction", "0.1", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "policy" in rep and "reranker" not in rep
    pol = rep["policy"]  # a kept training step beats the start, else the start comes back
    assert (pol["val_reward_after"] > pol["val_reward_before"] if pol["best_step"] > 0
            else pol["val_reward_after"] == pytest.approx(pol["val_reward_before"], abs=1e-12))
    assert rep["policy"]["skip"]["budget"] == 0.7  # the skip stage's default budget
    assert (live(model) / "policy" / "model.safetensors").is_file()
    # the retrieval budget per call: allowed with the trained policy, checked by value
    assert main(["generate", "--model", str(model), "--prompt", "the game", "--budget", "0.4",
                 "--max-new-tokens", "3", "--seed", "0"]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "a", "--budget", "0.5"]) == 2
    assert "budget=0.5 needs the learned policy" in capsys.readouterr().err
    assert main(["info", "--model", str(model), "--verify"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", str(model), "--policy-method", "sgd"])
    assert e.value.code == 2 and "invalid choice: 'sgd'" in capsys.readouterr().err
