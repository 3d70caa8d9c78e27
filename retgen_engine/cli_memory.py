"""The ``retgen memory`` commands: add text files to a model's document memory, delete
documents by id, list them. Registered on the main parser by :mod:`.cli`."""
from __future__ import annotations

import argparse
import json
from functools import partial
from typing import Callable


def memory_add(a: argparse.Namespace, load_engine: Callable) -> int:
    from .memory.documents import add_documents, read_documents

    ids, texts, metas = read_documents(a.corpus, a.paragraphs, a.encoding_errors)  # files first
    eng = load_engine(a)
    r = add_documents(eng.memory, ids, texts, metas, progress=not a.quiet)
    eng.save_memory()
    print(f"added {r['documents']} documents ({r['passages']} passages, {r['new_words']} new "
          f"words) to the memory of {a.model}; it holds {len(eng.memory)} documents, "
          f"{eng.memory.passages} passages")
    return 0


def memory_delete(a: argparse.Namespace, load_engine: Callable) -> int:
    eng = load_engine(a)
    n = eng.memory.delete(a.id)
    if n:  # nothing deleted: the memory on disk stays as it is
        eng.save_memory()
    print(f"deleted {n} of {len(set(a.id))} ids (unknown ids are ignored)")
    return 0


def memory_list(a: argparse.Namespace, load_engine: Callable) -> int:
    from .memory.documents import document_table

    docs = load_engine(a).memory.documents()
    print(json.dumps(docs, indent=2, ensure_ascii=False, default=str) if a.json else
          "\n".join(document_table(docs)))
    return 0


def register(cmd: Callable, load_engine: Callable) -> None:
    """Add ``memory add|delete|list`` with ``cmd`` (the main parser's command factory);
    ``load_engine(args)`` opens the model the commands work on."""
    msub = cmd("memory", "add, delete or list the documents of a model's memory").add_subparsers(
        dest="memory_cmd", required=True, metavar="ACTION", help="add, delete or list")
    ma = cmd("add", "add text files to the memory (a document added again is replaced)",
             partial(memory_add, load_engine=load_engine), True, msub)
    ma.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                    help="text files, each one document, its id the path as given (required)")
    ma.add_argument("--paragraphs", action="store_true", help="raw text files hold blank-line "
                    "separated documents, their ids PATH#N (N counts from 0)")
    ma.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"],
                    help="what to do with bytes that are not UTF-8")
    ma.add_argument("--quiet", action="store_true", help="no progress bars")
    md = cmd("delete", "delete documents from the memory by id",
             partial(memory_delete, load_engine=load_engine), True, msub)
    md.add_argument("--id", nargs="+", required=True, metavar="ID",
                    help="document ids, as 'retgen memory list' shows them (required)")
    ml = cmd("list", "list the documents of the memory",
             partial(memory_list, load_engine=load_engine), True, msub)
    ml.add_argument("--json", action="store_true", help="print the documents as JSON")
