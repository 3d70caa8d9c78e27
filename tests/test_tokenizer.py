from collections import Counter

import pytest

from retgen_engine.text.tokenizer import EOS, UNK, Tokenizer, Vocabulary, detokenize_words


def make(mode, text):
    tok = Tokenizer(mode)
    counts = Counter(tok.split(text) if mode == "text" else tok.split_lines([text]))
    tok.vocab = Vocabulary.from_counts(counts)
    return tok


@pytest.mark.parametrize("text", [
    "Hello,  World!\n\nIt's 3.14 o'clock\t— naïve café_au_lait  \n  end ",
    "", " ", "\n\n", "a\r\nb", "ÜBER über 123abc __x__",
])
def test_text_mode_is_lossless(text):
    tok = make("text", text + " extra")
    assert tok.decode(tok.encode(text)) == text


def test_text_mode_keeps_case_and_spacing():
    tok = make("text", "The the  THE")
    ids = tok.encode("The the  THE")
    assert len(set(ids)) == 3 or len(set(ids)) == 4  # distinct case variants
    assert tok.decode(ids) == "The the  THE"


def test_words_mode_exact_on_tokens_lines():
    lines = [" = Title = \n", " a <unk> b @-@ c . \n", "\n"]
    tok = Tokenizer("words")
    toks = list(tok.split_lines(lines))
    assert toks == ["=", "Title", "=", EOS, "a", UNK, "b", "@-@", "c", ".", EOS, EOS]


def test_vocabulary_specials_and_unknown():
    v = Vocabulary.from_counts(Counter({"a": 3, "b": 1}), min_count=2)
    assert v.itos[:2] == [UNK, EOS]
    assert v.id("b") == v.unk_id and v.id("a") == 2
    with pytest.raises(ValueError):
        Vocabulary(["a", UNK, EOS])


def test_word_prompt_split_follows_wikitext():
    tok = make("words", "the game , 1 @,@ 000 don't state @-@ of")
    assert tok.split("the game, 1,000") == ["the", "game", ",", "1", "@,@", "000"]
    assert tok.split("state-of") == ["state", "@-@", "of"]


def test_detokenize_words():
    toks = ["The", "game", "(", "2011", ")", "was", "state", "@-@", "of", "the", "art", ",",
            "1", "@,@", "000", "it", "'s", "good", ".", EOS, "Next"]
    assert detokenize_words(toks) == "The game (2011) was state-of the art, 1,000 it's good.\nNext"
