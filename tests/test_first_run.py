"""First run: progress that moves, clean generated text and traces, a readable CLI."""
import argparse
import json
import re
import time

import numpy as np
import pytest

from retgen_engine import HashingEncoder, RetgenEngine
from retgen_engine.cli import build_parser, main
from retgen_engine.text.tokenizer import Tokenizer
from retgen_testutil import SAMPLE, hashing_config, live

RAW = ("The castle was built in 1120 by the count , and it was rebuilt in the 5th century .\n"
       "It is a copyright of the town (C) and including the old walls , it stands today .\n"
       "\n"
       "The tower was built of stone , and the walls were built of brick .\n"
       "In 1990 the castle was restored , including the tower and the walls .\n") * 3


class SlowHashing(HashingEncoder):
    """The hashing encoder, slow enough per batch for tqdm to print each update."""

    def _encode_batch(self, texts):
        time.sleep(0.12)
        return super()._encode_batch(texts)


def _counts(err: str, desc: str) -> set[int]:
    return {int(m) for m in re.findall(re.escape(desc) + r":[^\r\n]*?(\d+)/\d+", err)}


def test_build_progress_moves_and_no_third_party_bars(tmp_path, capsys):
    cfg = hashing_config()
    cfg.encoder.batch_size = 512
    RetgenEngine.build(SAMPLE, out=tmp_path / "m", config=cfg, encoder=SlowHashing(64),
                       progress=True)
    err = capsys.readouterr().err
    assert len(_counts(err, "encoding contexts")) > 2, err[-2000:]
    assert "adding to the index" in err
    from retgen_engine.search.encoder import load_encoder

    load_encoder("minilm", backend="torch", dtype="float32")  # the real weights
    cap = capsys.readouterr()
    assert "Loading weights" not in cap.err + cap.out


def test_build_quiet_prints_nothing(tmp_path, capsys):
    RetgenEngine.build(SAMPLE, out=tmp_path / "m", config=hashing_config(),
                       encoder=HashingEncoder(64), progress=False)
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    cfg = tmp_path / "cfg.json"
    hashing_config().save(cfg)
    assert main(["build", "--corpus", str(SAMPLE), "--out", str(tmp_path / "q"), "--config",
                 str(cfg), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out.startswith("built ")


@pytest.fixture(scope="module")
def raw_engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    (d / "corpus.txt").write_text(RAW, encoding="utf-8")
    return RetgenEngine.build([d / "corpus.txt"], out=d / "m", config=hashing_config(),
                              encoder=HashingEncoder(64), progress=False)


def test_raw_paragraph_roundtrip_is_lossless(raw_engine):
    para = RAW.split("\n\n")[0]
    tok = raw_engine.generator.tokenizer if hasattr(raw_engine, "generator") else None
    tok = tok or Tokenizer("text", raw_engine.vocab)
    assert tok.mode == "text"
    assert tok.detokenize(tok.split(para)) == para
    assert tok.decode(tok.encode(para)) == para


def test_raw_generation_keeps_the_corpus_spacing(raw_engine):
    words = set(re.findall(r"[^\W\d_]+", RAW))
    numbers = set(re.findall(r"\d+", RAW))
    for seed in range(12):
        for prompt in ("The castle", "", "It is a copyright"):
            res = raw_engine.generate(prompt, max_new_tokens=40, seed=seed)
            text = prompt + res.text
            assert "<eos>" not in text and "<unk>" not in text
            glued = [w for w in re.findall(r"[^\W\d_]+", text) if w not in words]
            assert not glued, (glued, text)
            assert set(re.findall(r"\d+", text)) <= numbers, text
            for t in res.tokens:
                for e in t.trace:
                    assert "<eos>" not in e.snippet and "<eos>" not in e.context


def test_generate_trace_text_first_then_deduplicated_one_line_sources(tmp_path, capsys,
                                                                      raw_engine):
    model = str(raw_engine.model_dir)
    assert main(["generate", "--model", model, "--prompt", "The castle", "--max-new-tokens",
                 "12", "--seed", "3", "--trace"]) == 0
    out = capsys.readouterr().out
    res = raw_engine.generate("The castle", max_new_tokens=12, seed=3)
    head, _, sources = out.partition("\nsources per token:\n")
    assert head.rstrip("\n") == "The castle" + res.text
    lines = [ln for ln in sources.splitlines() if ln.startswith("    ")]
    assert lines and "<eos>" not in sources
    for ln in lines:
        assert " 0.0% " not in ln
    blocks = re.split(r"\n  \S", "\n" + sources)
    for b in blocks:
        srcs = [ln.split(": ...")[0].split()[-1] for ln in b.splitlines() if ln.startswith("    ")]
        assert len(srcs) == len(set(srcs)), b


def _actions(p: argparse.ArgumentParser):
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                yield from _actions(sp)
        elif not isinstance(a, argparse._HelpAction):
            yield p, a


def test_help_describes_every_option_with_its_default(capsys):
    p = build_parser()
    assert "``" not in p.format_help() and ":mod:" not in p.format_help()
    for sp, a in _actions(p):
        assert a.help, f"{sp.prog} {a.option_strings or a.dest} has no help"
        if a.option_strings and not a.required:
            shown = sp._get_formatter()._get_help_string(a)
            assert "default" in shown, f"{sp.prog} {a.option_strings} shows no default"
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--encoder-backend {auto,torch,onnx}" in capsys.readouterr().out


def test_cli_verify_overwrite_and_encoder_flags(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    hashing_config().save(cfg)
    out = tmp_path / "m"
    assert main(["build", "--corpus", str(SAMPLE), "--out", str(out), "--config", str(cfg),
                 "--quiet", "--encoder-backend", "torch", "--encoder-dtype", "float32"]) == 0
    capsys.readouterr()
    saved = json.loads((live(out) / "config.json").read_text())
    assert saved["encoder"]["backend"] == "torch" and saved["encoder"]["dtype"] == "float32"
    assert main(["build", "--corpus", str(SAMPLE), "--out", str(out), "--config", str(cfg),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and len(err.splitlines()) == 1
    assert main(["info", "--model", str(out), "--verify"]) == 0
    cap = capsys.readouterr()
    n = len(json.loads(cap.out)["files"]) if "files" in json.loads(cap.out) else None
    m = re.search(r"verified: (\d+) files, sha256 of each and of the manifest", cap.err)
    assert m and int(m.group(1)) > 0 and (n is None or int(m.group(1)) == n)
    for cmd in (["info", "--model", str(out)],
                ["generate", "--model", str(out), "--prompt", "The game", "--max-new-tokens", "3",
                 "--seed", "0"]):
        assert main(cmd + ["--encoder-backend", "onnx", "--encoder-dtype", "int8"]) == 0
        capsys.readouterr()
    assert main(["info", "--model", str(out), "--encoder-backend", "torch",
                 "--encoder-dtype", "int8"]) == 2  # int8 needs onnx: one line, exit 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bm25s_index_builds_do_not_reach_the_console():
    """bm25s sets its own logger to DEBUG on import; with the CLI's logging (root at WARNING,
    a handler of no level) its "Building index" lines were printed on every memory sync."""
    import logging

    import bm25s  # noqa: F401  (its import sets the level)

    from retgen_engine.memory.keys import LexicalKeys

    logging.getLogger("bm25s").setLevel(logging.DEBUG)  # as bm25s leaves it
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record)

    root, h = logging.getLogger(), Keep()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.WARNING)
    try:
        keys = LexicalKeys()
        keys.rebuild(np.arange(2), ["the tower was built", "the game was released"])
        assert keys.search(["tower"], 1)[0][0, 0] == 0
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    assert [r.getMessage() for r in got if r.name.startswith("bm25s")] == []
