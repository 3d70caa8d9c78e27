import numpy as np
import pytest

from retgen_engine.lm.sampling import SamplingParams, sample


def test_same_seed_same_text(tiny_engine):
    a = tiny_engine.generate("The game", max_new_tokens=25, seed=7)
    b = tiny_engine.generate("The game", max_new_tokens=25, seed=7)
    c = tiny_engine.generate("The game", max_new_tokens=25, seed=8)
    assert a.text == b.text and [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
    assert a.text != c.text
    assert a.completion_tokens == 25 and a.finish_reason == "length"


def test_stream_equals_generate(tiny_engine):
    res = tiny_engine.generate("The tower", max_new_tokens=15, seed=3)
    streamed = list(tiny_engine.stream("The tower", max_new_tokens=15, seed=3))
    assert "".join(t.text for t in streamed) == res.text
    assert [t.token for t in streamed] == [t.token for t in res.tokens]


def test_greedy_is_argmax(tiny_engine):
    res = tiny_engine.generate("The game was", max_new_tokens=1, temperature=0, trace=False)
    lp = tiny_engine.next_token_logprobs("The game was")
    lp[tiny_engine.vocab.unk_id] = -np.inf
    assert res.tokens[0].token_id == int(np.argmax(lp))
    top1 = tiny_engine.generate("The game was", max_new_tokens=1, top_k=1, seed=5, trace=False)
    assert top1.tokens[0].token_id == res.tokens[0].token_id


def test_traces_point_into_the_corpus(tiny_engine):
    res = tiny_engine.generate("The game was", max_new_tokens=10, seed=1)
    for tok in res.tokens:
        assert tok.trace, "every token has at least one source"
        total = sum(e.weight for e in tok.trace)
        assert 0 < total <= 1 + 1e-9
        for e in tok.trace:
            assert e.offset >= 0 and e.snippet
            if e.kind == "context":  # repeated from the prompt or earlier output
                assert e.document == "<context>"
                continue
            assert e.document in tiny_engine.doc_names
            if e.kind == "ngram" or e.order < 5:
                # the cited snippet ends with the generated token
                assert e.snippet.split()[-1].endswith(tok.token.replace("@-@", "-")[-1:]) or \
                    tok.token in ("<eos>",)


def test_context_cache_traces_point_into_the_prompt(tiny_engine):
    prompt = "The Valkyria Chronicles game : Valkyria"
    res = tiny_engine.generate(prompt, max_new_tokens=6, seed=0, temperature=0)
    ctx = [e for t in res.tokens for e in t.trace if e.kind == "context"]
    assert ctx, "greedy decoding after a repeated name uses the context cache"
    words = tiny_engine.tokenizer.split(prompt) + [t.token for t in res.tokens]
    for e in ctx:
        assert 0 <= e.offset < len(words)


def test_stop_strings_truncate(tiny_engine):
    full = tiny_engine.generate("The game", max_new_tokens=40, seed=11, trace=False)
    stop = full.text[5:8]
    assert stop.strip()
    res = tiny_engine.generate("The game", max_new_tokens=40, seed=11, stop=[stop], trace=False)
    assert res.finish_reason == "stop"
    assert res.text == full.text[: full.text.find(stop)]
    streamed = "".join(t.text for t in tiny_engine.stream("The game", max_new_tokens=40,
                                                          seed=11, stop=stop, trace=False))
    assert streamed == res.text


def test_unk_never_sampled_by_default(tiny_engine):
    res = tiny_engine.generate("<unk> <unk>", max_new_tokens=60, seed=0, trace=False)
    assert all(t.token != "<unk>" for t in res.tokens)


def test_repetition_penalty_changes_choices(tiny_engine):
    a = tiny_engine.generate("the the the", max_new_tokens=20, temperature=0, trace=False)
    b = tiny_engine.generate("the the the", max_new_tokens=20, temperature=0, trace=False,
                             repetition_penalty=3.0)
    assert len(set(t.token_id for t in b.tokens)) >= len(set(t.token_id for t in a.tokens))
    assert a.text != b.text


def test_max_new_tokens_zero_and_empty_prompt(tiny_engine):
    assert tiny_engine.generate("x", max_new_tokens=0).text == ""
    res = tiny_engine.generate("", max_new_tokens=5, seed=0)  # documented: starts after a line break
    assert res.completion_tokens == 5 and res.prompt_tokens == 0


def test_unseen_prompt_words_are_reported(tiny_engine):
    res = tiny_engine.generate("Zyxwvut qwertyuiop", max_new_tokens=3, seed=0)
    assert res.unknown_prompt_words == ["Zyxwvut", "qwertyuiop"]
    assert res.completion_tokens == 3


def test_top_p_keeps_the_nucleus():
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    picks = {sample(logp, SamplingParams(top_p=0.7, typical_p=1.0, allow_unk=True), rng)
             for _ in range(300)}
    assert picks == {0, 1}
    picks = {sample(logp, SamplingParams(top_k=3, typical_p=1.0, allow_unk=True), rng)
             for _ in range(300)}
    assert picks == {0, 1, 2}


@pytest.mark.parametrize("kw,match", [
    ({"temperature": -0.1}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"), ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"k": 0}, "k=0"), ({"lam": 1.0}, "lam"), ({"max_new_tokens": -1}, "max_new_tokens"),
])
def test_bad_generation_arguments(tiny_engine, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_engine.generate("The game", **kw)


def test_nprobe_above_nlist(tiny_engine):
    assert tiny_engine.index.nlist > 0
    with pytest.raises(ValueError, match="nprobe"):
        tiny_engine.generate("The game", nprobe=tiny_engine.index.nlist + 1)


def test_long_prompt_only_embeds_the_recent_context(tiny_engine):
    prompt = " ".join(["the game was released"] * 400)  # far beyond the encoder's 256 pieces
    res = tiny_engine.generate(prompt, max_new_tokens=3, seed=0)
    assert res.completion_tokens == 3 and res.prompt_tokens == 1600
