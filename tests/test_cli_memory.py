"""``retgen memory add / delete / list``: documents added from files are read by the language
model after a reload, bad input is refused in one line with nothing written."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from retgen_engine import RetgenEngine
from retgen_engine.cli import main

PHRASE = "the zorblax quintessence flibbers over the purple mountain . "
# 12 tokens: the memory's query (the tokens before the refresh point, 8) holds "zorblax"
CONTEXT = "we saw the zorblax near the purple mountain , and the zorblax"
TARGET = "quintessence"


@pytest.fixture
def model(tmp_path, tiny_model_dir) -> Path:
    """A copy of the tiny model (its memory: the training corpus, one document)."""
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    return out


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` with the sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _p(eng: RetgenEngine, word: str, **kw) -> float:
    i = eng.vocab.stoi.get(word)
    assert i is not None, f"{word!r} is not in the vocabulary"
    return float(np.exp(eng.next_token_logprobs(CONTEXT, **kw)[i]))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_add_list_and_the_model_reads_the_documents_after_a_reload(model, tmp_path, capsys):
    a = _write(tmp_path / "a.txt", PHRASE * 3)
    b = _write(tmp_path / "b.txt", "an unrelated note about the game .\n")
    vocab = RetgenEngine.load(model).vocab
    new = {w for w in (PHRASE + Path(b).read_text()).split() if w not in vocab.stoi}
    assert {"zorblax", "quintessence", "flibbers"} <= new
    rc, out, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", a, b, "--quiet")
    assert rc == 0, err
    m = re.fullmatch(r"added 2 documents \((\d+) passages, (\d+) new words\) to the memory of "
                     r"(.+); it holds 3 documents, (\d+) passages\n", out)
    assert m, out
    assert int(m.group(1)) == 2 and int(m.group(2)) == len(new)
    assert m.group(3) == str(model)
    assert "encoding passages" not in err  # --quiet: no progress bar

    rc, out, _ = _run(capsys, "memory", "list", "--model", str(model))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "passages", "tokens", "source"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:-1]}
    assert set(rows) == {"wikitext2_sample.tokens", a, b}
    assert rows[a][0] == "1" and rows[a][2] == a and rows[b][2] == b
    assert rows[a][1] == str(len(PHRASE.split()) * 3)  # word level: one token per word
    assert re.fullmatch(r"3 documents, \d+ passages, \d+ tokens", lines[-1])

    eng = RetgenEngine.load(model)  # what was saved, read by a fresh load
    assert set(eng.memory.ids()) == {"wikitext2_sample.tokens", a, b}
    assert {d["id"]: d["metadata"] for d in eng.memory.documents()}[a] == {"source": a}
    with_memory, without = _p(eng, TARGET), _p(eng, TARGET, memory=False)
    assert with_memory > 3 * without, (with_memory, without)
    logp = eng.next_token_logprobs(CONTEXT)
    rank = int((logp > logp[eng.vocab.stoi[TARGET]]).sum())
    assert rank < 5, rank  # among the likeliest few (the back-off reads the new word as <unk>)


def test_progress_bar_unless_quiet(model, tmp_path, capsys):
    a = _write(tmp_path / "a.txt", PHRASE)
    rc, _, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", a)
    assert rc == 0 and "encoding passages" in err


def test_paragraphs_are_documents_named_as_the_corpus_reader_names_them(model, tmp_path, capsys):
    f = _write(tmp_path / "notes.txt", "first paragraph about the zorblax .\nstill the first .\n"
               "\n  \n\nsecond one .\n\n\nthird one , last .\n")
    rc, out, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", f,
                        "--paragraphs", "--quiet")
    assert rc == 0, err
    assert re.match(r"added 3 documents \(3 passages, \d+ new words\)", out), out
    rc, out, _ = _run(capsys, "memory", "list", "--model", str(model), "--json")
    docs = {d["id"]: d for d in json.loads(out)}
    assert set(docs) == {"wikitext2_sample.tokens", f"{f}#0", f"{f}#1", f"{f}#2"}
    assert all(docs[f"{f}#{n}"]["metadata"] == {"source": f} for n in range(3))
    assert docs[f"{f}#0"]["tokens"] == 6 + 4 + 2  # two lines of words, each with its <eos>
    assert docs == {d["id"]: d for d in RetgenEngine.load(model).memory.documents()}


def test_delete_known_and_unknown_ids(model, tmp_path, capsys):
    a = _write(tmp_path / "a.txt", PHRASE * 3)
    b = _write(tmp_path / "b.txt", "another note .\n")
    assert _run(capsys, "memory", "add", "--model", str(model), "--corpus", a, b, "--quiet")[0] == 0
    eng = RetgenEngine.load(model)
    before = _p(eng, TARGET)

    rc, out, _ = _run(capsys, "memory", "delete", "--model", str(model), "--id", a, "nope", a)
    assert rc == 0 and out == "deleted 1 of 2 ids (unknown ids are ignored)\n"
    eng = RetgenEngine.load(model)
    assert set(eng.memory.ids()) == {"wikitext2_sample.tokens", b}
    assert _p(eng, TARGET) < before / 3  # the deleted document is read no more

    snap = _snapshot(model)
    rc, out, _ = _run(capsys, "memory", "delete", "--model", str(model), "--id", "nope")
    assert rc == 0 and out == "deleted 0 of 1 ids (unknown ids are ignored)\n"
    assert _snapshot(model) == snap  # nothing deleted, nothing written
    rc, out, _ = _run(capsys, "memory", "list", "--model", str(model))
    assert out.splitlines()[-1].startswith("2 documents")


def test_a_model_without_memory_gets_one(model, tmp_path, capsys):
    shutil.rmtree(model / "memory")  # as a model saved before the memory existed
    rc, out, _ = _run(capsys, "memory", "list", "--model", str(model))
    assert rc == 0 and out.splitlines()[-1] == "0 documents, 0 passages, 0 tokens"
    rc, out, _ = _run(capsys, "memory", "list", "--model", str(model), "--json")
    assert json.loads(out) == []
    a = _write(tmp_path / "a.txt", PHRASE)
    rc, out, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", a, "--quiet")
    assert rc == 0, err
    assert out.endswith("it holds 1 documents, 1 passages\n")
    assert (model / "memory").is_dir()
    assert RetgenEngine.load(model).memory.ids() == [a]


def _bad_file(tmp_path: Path, kind: str) -> tuple[str, str]:
    """(the path given, a piece of the error message) of a file ``memory add`` refuses."""
    p = tmp_path / f"{kind}.txt"
    if kind == "missing":
        return str(p), "does not exist"
    if kind == "directory":
        p.mkdir()
        return str(p), "is a directory"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "whitespace":
        p.write_text(" \n\t\n\n   \n")
    elif kind == "not-utf8":
        p.write_bytes(b"caf\xe9 au lait\n")
        return str(p), "not UTF-8"
    return str(p), "empty or whitespace-only"


@pytest.mark.parametrize("paragraphs", [False, True])
@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "whitespace", "not-utf8"])
def test_bad_files_are_refused_and_nothing_is_written(model, tmp_path, capsys, kind, paragraphs):
    good = _write(tmp_path / "good.txt", PHRASE)
    bad, says = _bad_file(tmp_path, kind)
    snap = _snapshot(model)
    rc, out, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", good, bad,
                        "--quiet", *(["--paragraphs"] if paragraphs else []))
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("retgen: error: ")
    assert repr(bad) in err and says in err, err
    if kind == "not-utf8":  # the flag the CLI has, not the Python argument
        assert "--encoding-errors replace" in err and "encoding_errors=" not in err
    assert _snapshot(model) == snap  # the good file was not added either
    assert RetgenEngine.load(model).memory.ids() == ["wikitext2_sample.tokens"]


def test_files_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    bad, _ = _bad_file(tmp_path, "missing")
    rc, _, err = _run(capsys, "memory", "add", "--model", str(tmp_path / "nomodel"),
                      "--corpus", bad)
    assert rc == 2 and repr(bad) in err


def test_not_utf8_is_read_with_encoding_errors_replace(model, tmp_path, capsys):
    bad, _ = _bad_file(tmp_path, "not-utf8")
    rc, out, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", bad,
                        "--encoding-errors", "replace", "--quiet")
    assert rc == 0, err
    assert out.startswith("added 1 documents")
    docs = RetgenEngine.load(model).memory
    assert bad in docs.ids()


def test_a_file_given_twice_is_refused(model, tmp_path, capsys):
    a = _write(tmp_path / "a.txt", PHRASE)
    snap = _snapshot(model)
    rc, _, err = _run(capsys, "memory", "add", "--model", str(model), "--corpus", a, a)
    assert rc == 2 and f"{a!r} is given twice" in err
    assert _snapshot(model) == snap


def test_adding_a_file_again_replaces_its_document(model, tmp_path, capsys):
    a = tmp_path / "a.txt"
    _write(a, PHRASE * 40)  # more than one passage of 128 tokens
    assert _run(capsys, "memory", "add", "--model", str(model), "--corpus", str(a), "--quiet")[0] == 0
    n = {d["id"]: d["passages"] for d in RetgenEngine.load(model).memory.documents()}[str(a)]
    assert n > 1
    _write(a, "short now .\n")
    rc, out, _ = _run(capsys, "memory", "add", "--model", str(model), "--corpus", str(a),
                      "--quiet")
    assert rc == 0 and "it holds 2 documents" in out
    docs = {d["id"]: d for d in RetgenEngine.load(model).memory.documents()}
    assert docs[str(a)]["passages"] == 1 and docs[str(a)]["tokens"] == 4


@pytest.mark.parametrize("action", [["list"], ["delete", "--id", "x"]])
def test_the_model_directory_must_be_a_model(tmp_path, capsys, action):
    rc, _, err = _run(capsys, "memory", *action, "--model", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err and len(err.splitlines()) == 1
    (tmp_path / "plain").mkdir()
    rc, _, err = _run(capsys, "memory", *action, "--model", str(tmp_path / "plain"))
    assert rc == 2 and "not a RETGEN model" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [["memory"], ["memory", "add", "--model", "m"],
                                  ["memory", "delete", "--model", "m"], ["memory", "list"],
                                  ["memory", "add", "--model", "m", "--corpus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "usage: retgen memory" in capsys.readouterr().err
