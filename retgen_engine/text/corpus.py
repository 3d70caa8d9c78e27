"""Corpus readers: files or a Hugging Face ``datasets`` dataset, streamed into token ids.

The corpus is read twice (once to count words, once to map them to ids) and never held as
Python strings: ids go into growing int32 numpy chunks.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .tokenizer import EOS, Tokenizer, Vocabulary

log = logging.getLogger(__name__)


@dataclass
class Document:
    name: str
    lines: Iterable[str]


class CorpusSource:
    """A re-iterable source of documents."""

    def __init__(self, paths: Sequence[str | os.PathLike] = (), dataset: Any = None,
                 text_column: str = "text", split_paragraphs: bool = False,
                 encoding_errors: str = "strict"):
        self.paths = [Path(p) for p in paths]
        self.dataset = dataset
        self.text_column = text_column
        self.split_paragraphs = split_paragraphs
        if encoding_errors not in ("strict", "replace", "ignore"):
            raise ValueError(f"encoding_errors={encoding_errors!r}: use strict, replace or ignore")
        self.encoding_errors = encoding_errors
        if not self.paths and dataset is None:
            raise ValueError("no corpus given: pass at least one path or a dataset")
        for p in self.paths:
            if not p.is_file():
                raise FileNotFoundError(f"corpus file {str(p)!r} does not exist or is not a file")
        if dataset is not None and text_column not in getattr(dataset, "column_names", [text_column]):
            raise ValueError(f"dataset has no column {text_column!r}; columns: "
                             f"{getattr(dataset, 'column_names', None)}")

    def default_mode(self) -> str:
        return "words" if any(p.suffix == ".tokens" for p in self.paths) else "text"

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    def _lines(self, path: Path) -> Iterator[str]:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8", errors=self.encoding_errors)
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{str(path)!r} line {lineno}: bytes that are not UTF-8 ({e.reason} at "
                        f"column {e.start}); pass encoding_errors='replace' (CLI: "
                        "--encoding-errors replace) to substitute them") from None

    def documents(self) -> Iterator[Document]:
        for path in self.paths:
            if path.suffix == ".tokens" or not self.split_paragraphs:
                yield Document(path.name, self._lines(path))
            else:
                yield from self._paragraphs(path)
        if self.dataset is not None:
            for i, row in enumerate(self.dataset):
                text = row[self.text_column]
                if not isinstance(text, str):
                    raise ValueError(f"dataset row {i}: column {self.text_column!r} is "
                                     f"{type(text).__name__}, expected str")
                yield Document(f"row-{i}", text.splitlines(keepends=True))

    def _paragraphs(self, path: Path) -> Iterator[Document]:
        buf: list[str] = []
        n = 0
        for line in self._lines(path):
            if line.strip():
                buf.append(line)
            elif buf:
                yield Document(f"{path.name}#{n}", buf)
                buf, n = [], n + 1
        if buf:
            yield Document(f"{path.name}#{n}", buf)


@dataclass
class TokenizedCorpus:
    ids: np.ndarray          # int32 [T]
    doc_offsets: np.ndarray  # int64 [D+1], document d spans ids[doc_offsets[d]:doc_offsets[d+1]]
    doc_names: list[str]
    vocab: Vocabulary
    tokenizer: Tokenizer


def _doc_tokens(tok: Tokenizer, doc: Document, bar=None) -> Iterator[str]:
    yield from tok.split_lines(doc.lines if bar is None else _counted(doc.lines, bar))
    if tok.mode == "text":
        yield EOS  # document separator in the token stream


def _counted(lines: Iterable[str], bar, every: int = 4096) -> Iterator[str]:
    """``lines``, advancing ``bar`` every ``every`` lines (a bar that moves inside a file)."""
    n = 0
    for line in lines:
        yield line
        n += 1
        if n == every:
            bar.update(n)
            n = 0
    bar.update(n)


def tokenize_corpus(source: CorpusSource, mode: str, min_count: int = 1,
                    vocab: Vocabulary | None = None, progress: bool = True) -> TokenizedCorpus:
    """Read ``source`` into a token-id stream (building the vocabulary unless given)."""
    tok = Tokenizer(mode)
    if vocab is None:
        counts: Counter = Counter()
        with tqdm(desc="counting words", unit="line", disable=not progress) as bar:
            for doc in source.documents():
                counts.update(_doc_tokens(tok, doc, bar))
        n_real = sum(c for w, c in counts.items() if w != EOS and w.strip())
        if n_real == 0:
            raise ValueError("the corpus is empty or blank: it contains no tokens to learn from")
        vocab = Vocabulary.from_counts(counts, min_count=min_count)
        log.info("vocabulary: %d types (min_count=%d) from %d tokens", len(vocab), min_count,
                 sum(counts.values()))
    tok.vocab = vocab
    chunks: list[np.ndarray] = []
    doc_offsets = [0]
    names: list[str] = []
    total = 0
    buf: list[int] = []
    bar = tqdm(desc="tokenizing", unit="line", disable=not progress)
    for doc in source.documents():
        for t in _doc_tokens(tok, doc, bar):
            buf.append(vocab.stoi.get(t, 0))
            if len(buf) >= 1 << 20:
                chunks.append(np.asarray(buf, dtype=np.int32))
                total += len(buf)
                buf = []
        total_doc = total + len(buf)
        if total_doc > doc_offsets[-1]:
            doc_offsets.append(total_doc)
            names.append(doc.name)
    bar.close()
    if buf:
        chunks.append(np.asarray(buf, dtype=np.int32))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    if ids.size == 0:
        raise ValueError("the corpus is empty or blank: it contains no tokens")
    return TokenizedCorpus(ids, np.asarray(doc_offsets, dtype=np.int64), names, vocab, tok)


def read_eval_tokens(path: str | os.PathLike, tokenizer: Tokenizer) -> np.ndarray:
    """Token ids of an evaluation file under the standard convention.

    ``words`` mode: every whitespace token plus one ``<eos>`` per line, blank lines included.
    ``text`` mode: the lossless tokenizer over the whole file. Unknown words map to ``<unk>``.
    """
    src = CorpusSource([path])
    assert tokenizer.vocab is not None
    stoi = tokenizer.vocab.stoi
    out: list[int] = []
    for doc in src.documents():
        out.extend(stoi.get(t, 0) for t in tokenizer.split_lines(doc.lines))
    if not out:
        raise ValueError(f"evaluation file {str(path)!r} contains no tokens")
    return np.asarray(out, dtype=np.int32)
