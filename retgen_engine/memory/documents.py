"""Text files as documents of the memory: :func:`read_documents` gives ``(ids, texts,
metadatas)`` for :meth:`PassageMemory.add <retgen_engine.memory.memory.PassageMemory.add>`,
:func:`add_documents` adds them and says what they brought, :func:`document_table` lays out
``memory.documents()`` as text (what ``retgen memory add / list`` print);
:func:`added_documents` and :func:`document_tokens` read the documents added after the build
back from the memory (for tuning on them and for the back-off's live counts).

Each file is one document, its id the path as given; with ``paragraphs`` each blank-line
separated paragraph of a raw text file is one, its id ``<path>#<n>`` (the numbering of
:class:`~retgen_engine.text.corpus.CorpusSource`, which reads the bytes, with its encoding
handling; a ``.tokens`` file stays one document, as at build time). Every file is checked
before any is returned, so a caller can refuse the whole call before it changes anything.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..checks import ArgumentError
from ..text.corpus import CorpusSource


def read_documents(paths: Sequence[str | os.PathLike], paragraphs: bool = False,
                   encoding_errors: str = "strict") -> tuple[list[str], list[str], list[dict]]:
    """(ids, texts, metadatas ``{"source": path}``) of the documents in ``paths``."""
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ArgumentError(f"paths={paths!r}: give a list of one or more text files")
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict] = []
    seen: set[str] = set()
    for p in paths:
        path, given = Path(p), str(p)
        if given in seen:
            raise ArgumentError(f"corpus file {given!r} is given twice")
        seen.add(given)
        if path.is_dir():
            raise IsADirectoryError(f"corpus file {given!r} is a directory; give text files")
        if not path.is_file():
            raise FileNotFoundError(f"corpus file {given!r} does not exist or is not a file")
        if not os.access(path, os.R_OK):
            raise PermissionError(f"corpus file {given!r} is not readable")
        src = CorpusSource([path], split_paragraphs=paragraphs, encoding_errors=encoding_errors)
        docs = [(d.name, "".join(d.lines)) for d in src.documents()]
        docs = [(n, t) for n, t in docs if t.strip()]
        if not docs:
            raise ArgumentError(f"corpus file {given!r} is empty or whitespace-only: a memory "
                                "document needs some text")
        for name, text in docs:
            # CorpusSource names a paragraph "<file name>#<n>"; the id keeps the path as given
            ids.append(given + name[len(path.name):])
            texts.append(text)
            metas.append({"source": given})
    return ids, texts, metas


def add_documents(memory, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict],
                  progress: bool = False) -> dict:
    """Add the documents to ``memory`` (a :class:`~retgen_engine.memory.memory.PassageMemory`);
    what they brought: ``{"documents", "passages", "new_words"}``."""
    words = memory.stats()["new_words"]
    memory.add(list(texts), ids=list(ids), metadatas=list(metadatas), progress=progress)
    added = set(ids)
    return {"documents": len(added), "new_words": memory.stats()["new_words"] - words,
            "passages": sum(d["passages"] for d in memory.documents() if d["id"] in added)}


def document_table(documents: Sequence[dict]) -> list[str]:
    """The lines of a table of ``memory.documents()``: id, passages, tokens, source; then a total
    line."""
    rows = [("id", "passages", "tokens", "source")] + [
        (d["id"], d["passages"], d["tokens"], d["metadata"].get("source", "")) for d in documents]
    w = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}".rstrip() for r in rows]
    return lines + [f"{len(documents)} documents, {sum(d['passages'] for d in documents)} "
                    f"passages, {sum(d['tokens'] for d in documents)} tokens"]


def added_documents(memory: Any) -> list[str]:
    """Ids of the memory's documents that did not come from the training corpus."""
    return [d["id"] for d in memory.documents() if d["metadata"].get("source") != "corpus"]


def document_tokens(memory: Any, doc_id: str) -> np.ndarray:
    """A document's token ids, put together from its passages (at their offsets)."""
    parts = []
    for pid in memory.passages_of(doc_id):
        rec = memory.record_of(pid)
        if rec is not None:
            parts.append((int(rec[1].get("offset", 0)), rec[2]))
    if not parts:
        return np.zeros(0, np.int64)
    out = np.zeros(max(o + len(t) for o, t in parts), np.int64)
    for o, t in sorted(parts, key=lambda p: p[0]):
        out[o:o + len(t)] = t
    return out
