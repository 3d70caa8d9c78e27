"""Passages: documents cut into pieces of a fixed number of tokens, and their texts.

A document of T tokens gives passages starting at 0, stride, 2 stride, ... (the last one may be
shorter; with stride < length consecutive passages overlap). Each passage is one record of the
memory's document store: id ``<document id>#<part>``, its text, and metadata ``doc_id``,
``part`` and ``offset`` (its first token's offset in the document) next to the document's own.
"""
from __future__ import annotations

import uuid
from typing import Any, Mapping, Optional, Sequence

from ..checks import ArgumentError, str_list_arg

from ..text.tokenizer import EOS, Tokenizer

#: metadata keys the memory sets on every passage record
RESERVED = ("doc_id", "part", "offset")


def passage_spans(n_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) of each passage of a document of ``n_tokens`` tokens."""
    if n_tokens <= 0:
        return []
    spans, s = [], 0
    while True:
        e = min(s + length, n_tokens)
        spans.append((s, e))
        if e >= n_tokens:
            return spans
        s += stride


def passage_text(tokenizer: Tokenizer, tokens: Sequence[str]) -> str:
    """The text a passage is stored as; splitting it again gives the same tokens in ``words``
    mode (tokens joined by spaces, ``<eos>`` as a line break) and the exact text in ``text``
    mode."""
    if tokenizer.mode == "words":
        return " ".join("\n" if t == EOS else t for t in tokens)
    return tokenizer.detokenize(list(tokens))


def record_id(doc_id: str, part: int) -> str:
    return f"{doc_id}#{part}"


def corpus_passages(tokenizer: Tokenizer, stream, doc_offsets, doc_names: Sequence[str],
                    length: int, stride: int) -> tuple[list[str], list[str], list[dict]]:
    """(record ids, texts, metadatas) of the training corpus cut into passages per document."""
    itos = tokenizer.vocab.itos
    rids, texts, metas = [], [], []
    seen: set[str] = set()
    for d, name in enumerate(doc_names):
        doc = name if name not in seen else f"{name}@{d}"
        seen.add(doc)
        toks = stream[int(doc_offsets[d]):int(doc_offsets[d + 1])]
        for part, (s, e) in enumerate(passage_spans(len(toks), length, stride)):
            rids.append(record_id(doc, part))
            texts.append(passage_text(tokenizer, [itos[t] for t in toks[s:e].tolist()]))
            metas.append({"doc_id": doc, "part": part, "offset": s, "source": "corpus"})
    return rids, texts, metas


def check_documents(texts: Any, ids: Any, metadatas: Any
                    ) -> tuple[list[str], list[str], Optional[list]]:
    """The arguments of :meth:`PassageMemory.add`, checked (an ArgumentError names the item);
    ids default to new random ones."""
    texts = str_list_arg("texts", texts, item="texts item")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ArgumentError(f"texts item {i} is empty or whitespace-only: a memory "
                                "document needs some text")
    if ids is None:
        ids = [uuid.uuid4().hex for _ in texts]
    else:
        ids = str_list_arg("ids", ids, item="ids item")
        if len(ids) != len(texts):
            raise ArgumentError(f"ids has {len(ids)} items for {len(texts)} texts")
        seen: set[str] = set()
        for x in ids:
            if not x:
                raise ArgumentError("ids item '' is empty: a document id needs a character")
            if x in seen:
                raise ArgumentError(f"ids: {x!r} appears twice in one call")
            seen.add(x)
    if metadatas is not None:
        metadatas = list(metadatas)
        if len(metadatas) != len(texts):
            raise ArgumentError(f"metadatas has {len(metadatas)} items for {len(texts)} texts")
        for i, m in enumerate(metadatas):
            if m is not None and not isinstance(m, Mapping):
                raise ArgumentError(f"metadatas item {i} is a {type(m).__name__}, "
                                    "expected a dict or None")
    return texts, ids, metadatas
