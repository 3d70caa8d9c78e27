"""The document memory: passages the language model copies from, kept in a document store.

The memory holds the training corpus cut into passages at build time (:mod:`.passages`) and any
document added later. Each passage is a record of a :class:`~retgen_engine.docstore.store.
DocumentStore` (text, MiniLM vector, metadata), the same store class the LangChain and
LlamaIndex adapters use: a store shared with an adapter is read here, so a document added
through the framework is a passage of the memory at the next call. What the memory derives from
the records (token ids, the n-gram tables of :mod:`.ngrams`, the BM25 index of :mod:`.keys`)
is rebuilt from the store when its :attr:`~DocumentStore.revision` changes and never saved.

A query is the ``query_length`` tokens before a refresh point (every ``refresh`` tokens, past
tokens only); the ``k`` passages found are weighted by :func:`~.keys.passage_weights` and their
n-gram statistics make the neighbour distribution of :mod:`.mixture`.

Words the training corpus did not have get new vocabulary ids when the memory first reads them;
the list of such words is saved with the memory, so ids are stable across loads.

The store is the faiss ``DocumentStore`` (default) or a Milvus one (``DocumentStore(backend=
"milvus", uri=..., collection=...)``, :class:`~retgen_engine.docstore.milvus.MilvusStore`): the
passages' texts, vectors and metadata then live in Milvus, dense keys are Milvus searches, and
what is derived (token ids, n-gram tables, BM25) stays in this process. A Milvus store tells
writes through it at once and writes by other clients within its ``revision_check_s``; a sync
reads only what changed when the store can say (``store.changes``), else it rescans the store
(``store.items()``); ``sync(force=True)`` always rescans. Saved, a Milvus memory is the store's
checksummed manifest (for Milvus Lite with the database inside the memory directory), and
loading reconnects.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..checks import ArgumentError, str_list_arg
from ..config import MemoryConfig
from ..docstore.milvus import MilvusStore
from ..docstore.store import DocumentStore
from ..persist.errors import ModelFormatError
from ..text.tokenizer import Tokenizer
from .keys import LexicalKeys
from .lookup import PassageLookup, StepMemory
from .ngrams import NGramTable
from .saved import check_saved, describe
from .passages import RESERVED, check_documents, passage_spans, passage_text, record_id

log = logging.getLogger(__name__)



STORES = (DocumentStore, MilvusStore)


def store_label(store: Any) -> str:
    """How errors and stats name a store: its backend, and for Milvus the collection and the URI
    (without credentials)."""
    if isinstance(store, MilvusStore):
        return f"Milvus collection {store.collection!r} at {redact_uri(store.uri)!r}"
    return "faiss DocumentStore"


def redact_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part."""
    import re

    return re.sub(r"(://)[^/@]*@", r"\1***@", str(uri))


class PassageMemory(PassageLookup):
    def __init__(self, tokenizer: Tokenizer, encoder: Any, config: MemoryConfig,
                 base_vocab_size: int, store: Optional[DocumentStore | MilvusStore] = None):
        if store is not None and not isinstance(store, STORES):
            raise ArgumentError(f"store={type(store).__name__}(...): the memory reads a RETGEN "
                                "DocumentStore (backend 'faiss' or 'milvus')")
        if store is not None and store.dim not in (None, encoder.dim):
            raise ArgumentError(f"memory store holds {store.dim}-dimensional vectors; the "
                                f"encoder {encoder.name!r} makes {encoder.dim}")
        self.tokenizer, self.encoder, self.config = tokenizer, encoder, config
        self.base_vocab_size = int(base_vocab_size)
        self.store = store if store is not None else DocumentStore(dim=encoder.dim)
        self._lock = threading.RLock()
        self._table = NGramTable(config.order)
        self._lexical = LexicalKeys()
        self._rev: Optional[int] = None
        self._lex_rev: Optional[int] = None
        self._texts: dict[int, str] = {}
        self._meta: dict[int, tuple[str, dict]] = {}  # pid -> (record id, metadata)
        self._docs: dict[str, list[int]] = {}
        self._found: OrderedDict = OrderedDict()  # step mode: query -> (pids, weights)
        self._frozen = 0

    # -- documents ---------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of documents (a document is one or more passages)."""
        self.sync()
        return len(self._docs)

    @property
    def passages(self) -> int:
        self.sync()
        return len(self._table)

    def ids(self) -> list[str]:
        self.sync()
        return list(self._docs)

    @property
    def revision(self) -> Optional[int]:
        """The store revision the derived state was last synced to (None: never synced)."""
        return self._rev

    @property
    def lock(self) -> threading.RLock:
        """Held while documents change and while a distribution reads the memory."""
        return self._lock

    @property
    def table(self) -> NGramTable:
        return self._table

    def record_of(self, pid: int) -> Optional[tuple[str, dict, np.ndarray]]:
        """(record id, metadata, token ids) of passage ``pid``, None if it is gone."""
        with self._lock:
            if pid not in self._meta:
                return None
            rid, meta = self._meta[pid]
            return rid, meta, self._table.tokens(pid)

    def contributions(self, history: Sequence[int], step: "StepMemory", token: int,
                      top: int = 3) -> list[dict]:
        """See :func:`.trace.contributions`."""
        from .trace import contributions

        return contributions(self, history, step, token, top)

    def passages_of(self, doc_id: str) -> list[int]:
        """The passage ids of document ``doc_id`` ([] if the memory has no such document)."""
        self.sync()
        with self._lock:
            return list(self._docs.get(doc_id, []))

    def documents(self) -> list[dict]:
        """One entry per document: id, passages, tokens and its metadata (of the first passage,
        without the memory's own keys)."""
        self.sync()
        with self._lock:
            out = []
            for d, pids in self._docs.items():
                meta = {k: v for k, v in self._meta[pids[0]][1].items() if k not in RESERVED}
                out.append({"id": d, "passages": len(pids),
                            "tokens": int(sum(len(self._table.tokens(p)) for p in pids)),
                            "metadata": meta})
            return out

    def add(self, texts: Sequence[str], ids: Optional[Sequence[str]] = None,
            metadatas: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
            progress: bool = False) -> list[str]:
        """Add documents (each cut into passages); returns their ids. Re-adding an id replaces
        that document. The next call of the language model already reads them."""
        texts, ids, metadatas = check_documents(texts, ids, metadatas)
        L = self.config.passage_length
        stride = self.config.stride or L
        rids, ptexts, metas = [], [], []
        for doc, text, m in zip(ids, texts, metadatas or [None] * len(texts)):
            toks = self.tokenizer.split(text)
            for part, (s, e) in enumerate(passage_spans(len(toks), L, stride)):
                rids.append(record_id(doc, part))
                ptexts.append(passage_text(self.tokenizer, toks[s:e]))
                metas.append({**(m or {}), "doc_id": doc, "part": part, "offset": s})
        vectors = self._encode(ptexts, progress, "encoding passages")
        with self._lock:
            self.sync()
            old = {self._meta[p][0] for d in ids for p in self._docs.get(d, [])}
            self.store.upsert(rids, ptexts, vectors, metas)
            self.store.delete(sorted(old - set(rids)))
            self.sync()
        log.info("memory: added %d documents (%d passages)", len(ids), len(rids))
        return list(ids)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (unknown ids are ignored, as the store does); the number
        deleted. Nothing of theirs is read afterwards."""
        ids = str_list_arg("ids", ids, allow_one=False, item="ids item")
        with self._lock:
            self.sync()
            found = [d for d in dict.fromkeys(ids) if d in self._docs]
            rids = [self._meta[p][0] for d in found for p in self._docs[d]]
            self.store.delete(rids)
            self.sync()
        return len(found)

    def _encode(self, texts: list[str], progress: bool, desc: str, unit: str = "passage"
                ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.encoder.dim), np.float32)
        with tqdm(total=len(texts), desc=desc, unit=unit, disable=not progress) as bar:
            try:
                return self.encoder.encode(texts, on_batch=bar.update)
            except TypeError:  # a duck-typed encoder without progress
                v = self.encoder.encode(texts)
                bar.update(len(texts))
                return v

    @classmethod
    def from_corpus(cls, tokenizer: Tokenizer, encoder: Any, config: MemoryConfig, stream,
                    doc_offsets, doc_names: Sequence[str], progress: bool = False,
                    store: Optional[DocumentStore | MilvusStore] = None) -> "PassageMemory":
        """The memory of a training corpus (its token stream cut into passages per document),
        written into ``store`` (an empty store, e.g. ``DocumentStore(backend="milvus",
        uri=..., collection=..., dim=encoder.dim)``; None: a new faiss DocumentStore)."""
        from .passages import corpus_passages

        if store is not None and isinstance(store, STORES) and len(store):
            raise ArgumentError(f"store={store_label(store)} already holds {len(store)} records; "
                                "the memory of a corpus is built into an empty store (give "
                                "another collection, or clear this one first)")
        mem = cls(tokenizer, encoder, config, len(tokenizer.vocab), store)
        rids, texts, metas = corpus_passages(tokenizer, stream, doc_offsets, doc_names,
                                             config.passage_length,
                                             config.stride or config.passage_length)
        vectors = mem._encode(texts, progress, "encoding passages")
        with mem._lock:
            mem.sync()  # the empty store: the passages then come as one change
            mem.store.upsert(rids, texts, vectors, metas)
            mem.sync()
        log.info("memory: %d corpus passages in the %s", len(rids), store_label(mem.store))
        return mem

    # -- derived state -----------------------------------------------------------------
    def _token_ids(self, text: str) -> np.ndarray:
        vocab = self.tokenizer.vocab
        return np.asarray([vocab.add(t) for t in self.tokenizer.split(text)], dtype=np.int64)

    @contextlib.contextmanager
    def frozen(self):
        """Hold the memory still while one distribution is computed: synced once on entry;
        documents added meanwhile (through the memory or straight into a shared store) are read
        by the next call, never halfway through this one (they may grow the vocabulary)."""
        with self._lock:
            self.sync()
            self._frozen += 1
            try:
                yield self
            finally:
                self._frozen -= 1

    def sync(self, force: bool = False) -> None:
        """Bring the derived state up to the store's records (cheap when nothing changed):
        only what changed when the store can say (a Milvus store's ``changes``), else a rescan
        of every record. ``force``: rescan now, whatever the store's revision says (for a
        Milvus collection that other clients write: their writes are otherwise seen within
        the store's ``revision_check_s``). A frozen memory (:meth:`frozen`) is not synced."""
        with self._lock:
            if self._frozen:
                return
            rev = self.store.revision
            if rev == self._rev and not force:
                return
            if self.store.dim not in (None, self.encoder.dim):
                raise ArgumentError(f"memory store holds {self.store.dim}-dimensional vectors; "
                                    f"the encoder {self.encoder.name!r} makes {self.encoder.dim}")
            changes = getattr(self.store, "changes", None)
            delta = None if force or self._rev is None or changes is None else changes(self._rev)
            if delta is None:
                self._rescan()
            else:
                rev, added, removed = delta
                self._apply(added, removed)
            self._found.clear()
            self._rev = rev

    def _rescan(self) -> None:
        items = self.store.items()
        live = {iid for iid, _ in items}
        self._apply(items, [p for p in self._table.pids() if p not in live])
        docs: dict[str, list[int]] = {}  # in the store's order
        for iid, r in items:
            docs.setdefault(str(r.metadata.get("doc_id", r.id)), []).append(iid)
        self._docs = docs

    def _apply(self, added: list, removed: list) -> None:
        """Apply a store's net change (records added, int ids removed); idempotent."""
        have = set(self._table.pids())
        gone = [p for p in dict.fromkeys(removed) if p in have]
        self._table.remove(set(gone))
        for p in gone:
            self._texts.pop(p, None)
            rid, meta = self._meta.pop(p)
            d = str(meta.get("doc_id", rid))
            pids = [q for q in self._docs.get(d, []) if q != p]
            if pids:
                self._docs[d] = pids
            else:
                self._docs.pop(d, None)
        new = [(iid, r) for iid, r in added if iid not in have]
        self._table.add([(iid, self._token_ids(r.text)) for iid, r in new])
        for iid, r in new:
            self._texts[iid] = r.text
            self._meta[iid] = (r.id, r.metadata)
            self._docs.setdefault(str(r.metadata.get("doc_id", r.id)), []).append(iid)

    # -- description and persistence --------------------------------------------------
    def stats(self) -> dict:
        """Documents, passages, tokens, the n-gram tables' bytes, new words, and ``store``:
        the backend (for Milvus: collection, URI without credentials, records, and ``index``,
        what Milvus really built: requested, built, honoured, warning, segments).
        ``store_bytes``: the faiss store's RAM (None on Milvus, which holds the passages)."""
        self.sync()
        st = self.store
        if isinstance(st, MilvusStore):
            rep = st.index_report()
            store = {"backend": "milvus", "uri": redact_uri(st.uri), "lite": st.lite is not None,
                     "collection": st.collection, "records": len(st),
                     "index": {k: rep.get(k) for k in ("requested", "requested_params",
                                                       "reported", "built", "honoured",
                                                       "warning", "segments",
                                                       "indexed_segments") if k in rep},
                     "revision_check_s": st.revision_check_s}
            nbytes = None
        else:
            nbytes = st.nbytes()
            store = {"backend": "faiss", "records": len(st), "index_spec": st.spec,
                     "mode": st.storage_mode}
        return {"documents": len(self._docs), "passages": len(self._table),
                "tokens": self._table.total_tokens, "table_bytes": self._table.nbytes,
                "store_bytes": nbytes, "store": store,
                "new_words": len(self.tokenizer.vocab) - self.base_vocab_size}

    def save(self, path: str | Path) -> Path:
        """Commit the memory to directory ``path`` (its own committed, checksummed version)."""
        with self._lock:
            self.store.extra["memory"] = describe(self)
            return self.store.save(path)

    @classmethod
    def load(cls, path: str | Path, tokenizer: Tokenizer, encoder: Any,
             base_vocab_size: int, verify: bool = True) -> "PassageMemory":
        path = Path(path)
        store = DocumentStore.load(path, verify=verify)
        m = check_saved(store.extra.get("memory"), path, encoder, tokenizer.vocab, base_vocab_size)
        for w in m.get("new_words") or []:  # first: the ids the saved memory gave them
            tokenizer.vocab.add(w)
        try:
            config = MemoryConfig.model_validate(m["config"])
        except (KeyError, ValueError) as e:
            raise ModelFormatError(f"memory {str(path)!r}: its config is missing or invalid ({e})") from None
        mem = cls(tokenizer, encoder, config, base_vocab_size, store)
        mem.sync()
        return mem
