"""The ``retgen memory`` commands: add text files to a model's document memory, refit its
weights on added documents, delete documents by id, list them. Registered on the main parser
by :mod:`.cli`."""
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
    if a.tune:
        _tune(eng, None, a)
    eng.save_memory()
    print(f"added {r['documents']} documents ({r['passages']} passages, {r['new_words']} new "
          f"words) to the memory of {a.model}; it holds {len(eng.memory)} documents, "
          f"{eng.memory.passages} passages")
    return 0


def _tune(eng, ids, a: argparse.Namespace) -> None:
    rep = eng.tune_memory(ids, max_tokens=a.max_tokens, seed=a.seed, progress=not a.quiet,
                          gate=not a.no_gate)
    pp = rep["perplexity"]
    print(f"memory weights refitted on {rep['documents']} held-out added documents "
          f"({rep['tokens']} tokens): perplexity {pp['before']:.2f} -> {pp['after']:.2f} "
          f"(without the memory {pp['without_memory']:.2f}); weights {rep['after']['weights']}; "
          f"{'learned gate fitted' if rep['after']['gate'] else 'no learned gate'}")


def memory_tune(a: argparse.Namespace, load_engine: Callable) -> int:
    eng = load_engine(a)
    _tune(eng, a.id, a)
    eng.save_memory()
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
    """Add ``memory add|tune|delete|list`` with ``cmd`` (the main parser's command factory);
    ``load_engine(args)`` opens the model the commands work on."""
    msub = cmd("memory", "add, tune, delete or list the documents of a model's memory").add_subparsers(
        dest="memory_cmd", required=True, metavar="ACTION", help="add, tune, delete or list")
    ma = cmd("add", "add text files to the memory (a document added again is replaced)",
             partial(memory_add, load_engine=load_engine), True, msub)
    ma.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                    help="text files, each one document, its id the path as given (required)")
    ma.add_argument("--paragraphs", action="store_true", help="raw text files hold blank-line "
                    "separated documents, their ids PATH#N (N counts from 0)")
    ma.add_argument("--encoding-errors", default="strict", choices=["strict", "replace", "ignore"],
                    help="what to do with bytes that are not UTF-8")
    ma.add_argument("--quiet", action="store_true", help="no progress bars")
    ma.add_argument("--tune", action="store_true", help="then refit the memory's weights on "
                    "held-out added documents (as 'retgen memory tune')")
    mt = cmd("tune", "refit the memory's weights on documents added to it, some held out as "
             "new text", partial(memory_tune, load_engine=load_engine), True, msub)
    mt.add_argument("--id", nargs="+", metavar="ID", help="the documents to draw from "
                    "(default: every document added after the build)")
    mt.add_argument("--quiet", action="store_true", help="no progress bars")
    for q in (ma, mt):
        q.add_argument("--max-tokens", type=int, default=20000,
                       help="held-out tokens at most (default: 20000)")
        q.add_argument("--seed", type=int, default=0,
                       help="which documents are held out (default: 0)")
        q.add_argument("--no-gate", action="store_true", help="refit the per-order weights only, "
                       "without the memory's learned gate (default: fit the gate too)")
    md = cmd("delete", "delete documents from the memory by id",
             partial(memory_delete, load_engine=load_engine), True, msub)
    md.add_argument("--id", nargs="+", required=True, metavar="ID",
                    help="document ids, as 'retgen memory list' shows them (required)")
    ml = cmd("list", "list the documents of the memory",
             partial(memory_list, load_engine=load_engine), True, msub)
    ml.add_argument("--json", action="store_true", help="print the documents as JSON")
