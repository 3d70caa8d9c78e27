import numpy as np
import pytest

from retgen_engine import HashingEncoder, RetgenEngine

from retgen_testutil import hashing_config


def build(tmp_path, text: bytes, name="c.txt", **kw):
    p = tmp_path / name
    p.write_bytes(text)
    return RetgenEngine.build(p, out=tmp_path / "m", config=hashing_config(),
                              encoder=HashingEncoder(64), progress=False, **kw)


@pytest.mark.parametrize("text", [b"", b"\n\n   \n\t\n"])
def test_empty_or_blank_corpus(tmp_path, text):
    with pytest.raises(ValueError, match="empty or blank"):
        build(tmp_path, text)
    assert not (tmp_path / "m").exists()


def test_undecodable_bytes(tmp_path):
    with pytest.raises(ValueError, match=r"line 2: bytes that are not UTF-8.*encoding_errors"):
        build(tmp_path, b"good line\nbad \xff\xfe line\n")
    eng = build(tmp_path, b"good line\nbad \xff\xfe line\n", encoding_errors="replace")
    assert "\ufffd" in "".join(eng.vocab.itos)


def test_missing_corpus_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RetgenEngine.build(tmp_path / "nope.txt", config=hashing_config(),
                           encoder=HashingEncoder(64), progress=False)


def test_tiny_corpus_falls_back_to_exact_index(tmp_path):
    eng = build(tmp_path, b"the cat sat on the mat . the dog sat on the log .\n")
    assert eng.index.spec == "IDMap2,Flat"
    p = np.exp(eng.next_token_logprobs("the cat"))
    assert abs(p.sum() - 1) < 1e-5 and p.min() > 0


def test_raw_text_model_round_trips_text(tmp_path):
    text = "Alpha beta, gamma.\n\nDelta  epsilon!\n"
    eng = build(tmp_path, text.encode(), name="doc.txt", split_paragraphs=True)
    assert eng.tokenizer.mode == "text"
    assert eng.tokenizer.decode(eng.tokenizer.encode(text)) == text
    assert eng.doc_names == ["doc.txt#0", "doc.txt#1"]
    res = eng.generate("Alpha", max_new_tokens=4, seed=0)
    assert res.completion_tokens == 4


def test_words_never_seen_map_to_unk(tiny_engine):
    ids = tiny_engine.tokenizer.encode("qqqzzz the")
    assert ids[0] == tiny_engine.vocab.unk_id and ids[1] != tiny_engine.vocab.unk_id
