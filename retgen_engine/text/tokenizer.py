"""Tokenizers and the vocabulary.

Two modes share one :class:`Vocabulary`:

* ``words``: the word-level convention of WikiText/PTB ``.tokens`` files. Every whitespace
  token is a token (``<unk>`` is an ordinary word) and every line ends with one ``<eos>``.
* ``text``: a lossless tokenizer for raw text. Each token is a word, a number, a run of
  punctuation or whitespace, with at most one leading space, so
  ``decode(encode(text)) == text`` whenever every token is in the vocabulary.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Iterable, Iterator, Sequence

UNK = "<unk>"
EOS = "<eos>"

# Every character is matched by one alternative, so the concatenation of matches is the text.
_TEXT_RE = re.compile(r" ?[^\W\d_]+| ?\d+| ?_+| ?[^\s\w]+|\s+(?!\S)|\s+")
# Prompts in "words" mode: split words from punctuation the way WikiText does.
_WORD_SPLIT_RE = re.compile(r"<unk>|<eos>|\d+(?:[.,]\d+)*|\w+(?:'\w+)?|'\w+|[^\w\s]")
_WIKI_NUM_SEP = {",": "@,@", ".": "@.@", "-": "@-@"}


class Vocabulary:
    """Bidirectional token <-> id map. Id 0 is ``<unk>``, id 1 is ``<eos>``."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [UNK, EOS]:
            raise ValueError("a vocabulary must start with '<unk>', '<eos>'")
        self.itos: list[str] = tokens
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")

    unk_id = 0
    eos_id = 1

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def id(self, token: str) -> int:
        return self.stoi.get(token, 0)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, 0) for t in tokens]

    def add(self, token: str) -> int:
        """The id of ``token``, appended at the end if it is new (the vocabulary grows when the
        document memory reads words the training corpus did not have)."""
        i = self.stoi.get(token)
        if i is None:
            i = self.stoi[token] = len(self.itos)
            self.itos.append(token)
        return i

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 1) -> "Vocabulary":
        words = [w for w, c in counts.items() if c >= min_count and w not in (UNK, EOS)]
        words.sort(key=lambda w: (-counts[w], w))
        return cls([UNK, EOS] + words)

    def to_json(self) -> str:
        return json.dumps(self.itos, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        return cls(json.loads(text))


class Tokenizer:
    """Splits text into tokens and joins tokens back into text, for one mode."""

    def __init__(self, mode: str, vocab: Vocabulary | None = None):
        if mode not in ("words", "text"):
            raise ValueError(f"tokenizer mode {mode!r} is not one of 'words', 'text'")
        self.mode = mode
        self.vocab = vocab

    # -- splitting ---------------------------------------------------------------------
    def split_lines(self, lines: Iterable[str]) -> Iterator[str]:
        """Tokens of a corpus read line by line (lines keep their trailing newline)."""
        if self.mode == "words":
            for line in lines:
                yield from line.split()
                yield EOS
        else:
            for line in lines:
                yield from _TEXT_RE.findall(line)

    def split(self, text: str) -> list[str]:
        """Tokens of a piece of text (a prompt or a document)."""
        if self.mode == "text":
            return _TEXT_RE.findall(text)
        out: list[str] = []
        lines = text.split("\n")
        for i, line in enumerate(lines):
            for tok in line.split():
                if self.vocab is not None and tok in self.vocab:
                    out.append(tok)
                else:
                    out.extend(self._split_word(tok))
            if i < len(lines) - 1:
                out.append(EOS)
        return out

    def _split_word(self, tok: str) -> list[str]:
        parts: list[str] = []
        for m in _WORD_SPLIT_RE.finditer(tok):
            piece = m.group(0)
            if re.fullmatch(r"\d+(?:[.,]\d+)+", piece):  # 1,000.5 -> 1 @,@ 000 @.@ 5
                for sub in re.split(r"([.,])", piece):
                    parts.append(_WIKI_NUM_SEP.get(sub, sub))
            elif "-" == piece and self.vocab is not None and "@-@" in self.vocab and parts:
                parts.append("@-@")
            else:
                parts.append(piece)
        return parts

    # -- ids ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.vocab is None:
            raise RuntimeError("tokenizer has no vocabulary")
        return self.vocab.ids(self.split(text))

    def decode(self, ids: Iterable[int]) -> str:
        if self.vocab is None:
            raise RuntimeError("tokenizer has no vocabulary")
        return self.detokenize([self.vocab.itos[i] for i in ids])

    def detokenize(self, tokens: Sequence[str]) -> str:
        if self.mode == "text":
            return detokenize_text(tokens)
        return detokenize_words(tokens)

    def context_text(self, tokens: Sequence[str]) -> str:
        """The text a context is embedded as (readable, newlines as spaces, no markers)."""
        if self.mode == "text":
            return detokenize_text(tokens).replace("\n", " ").strip()
        return detokenize_words([t for t in tokens if t != EOS]).strip()


def detokenize_text(tokens: Sequence[str]) -> str:
    """Join raw-text tokens: the exact concatenation, each token carrying its own spacing.

    ``<eos>`` (the document separator of the token stream, never produced by splitting text)
    renders as a line break, or as nothing where the text already ends a line or is empty."""
    out: list[str] = []
    for tok in tokens:
        if tok == EOS:
            if out and not out[-1].endswith("\n"):
                out.append("\n")
            continue
        out.append(tok)
    return "".join(out)


def char_class(ch: str) -> int:
    """0 whitespace, 1 letter, 2 digit, 3 underscore, 4 other (punctuation, symbols)."""
    if ch.isspace():
        return 0
    if ch == "_":
        return 3
    if ch.isdecimal():  # what the regex's \d matches
        return 2
    return 1 if ch.isalnum() else 4


def glue_classes(itos: Sequence[str]) -> tuple[list[int], list[int]]:
    """Per token of a ``text``-mode vocabulary: the class of its first character (-1 where it
    starts with whitespace, or is a marker) and of its last (0 for markers).

    The raw-text tokenizer never ends one token and starts the next inside a run of one class
    (``" is"`` + ``"th"`` is always the single token ``" isth"``), so a token whose start class
    equals the previous token's end class (non-whitespace) would glue two words together."""
    start, end = [], []
    for t in itos:
        if t in (UNK, EOS) or not t:
            start.append(-1)
            end.append(0)
            continue
        c = char_class(t[0])
        start.append(c if c else -1)
        end.append(char_class(t[-1]))
    return start, end


_NO_SPACE_BEFORE = {",", ".", ":", ";", "!", "?", ")", "]", "}", "%", "'s", "'", "n't", "'re",
                    "'ve", "'ll", "'d", "'m"}
_NO_SPACE_AFTER = {"(", "[", "{", "$"}
_JOINERS = {"@-@": "-", "@,@": ",", "@.@": "."}


def detokenize_words(tokens: Sequence[str]) -> str:
    """Join word-level tokens into readable text (WikiText/PTB conventions undone)."""
    out: list[str] = []
    glue_next = True
    for tok in tokens:
        if tok == EOS:
            out.append("\n")
            glue_next = True
            continue
        if tok in _JOINERS:
            out.append(_JOINERS[tok])
            glue_next = True
            continue
        if not glue_next and tok not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(tok)
        glue_next = tok in _NO_SPACE_AFTER
    return "".join(out)
