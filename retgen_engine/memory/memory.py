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
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..checks import ArgumentError, str_list_arg
from ..config import MemoryConfig
from ..docstore.store import DocumentStore
from ..persist.errors import ModelFormatError
from ..text.tokenizer import Tokenizer
from .keys import LexicalKeys, dense_search, fuse, passage_weights
from .mixture import MemoryParams, neighbour_probs
from .ngrams import NGramTable
from .saved import check_saved, describe
from .passages import RESERVED, check_documents, passage_spans, passage_text, record_id

log = logging.getLogger(__name__)

_CHUNK = 8192  # stream positions per table lookup


@dataclass
class StepMemory:
    """What the memory gave one generation step (for traces)."""

    pids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    H: np.ndarray = field(default_factory=lambda: np.zeros(0))
    C: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lam: float = 0.0


class PassageMemory:
    def __init__(self, tokenizer: Tokenizer, encoder: Any, config: MemoryConfig,
                 base_vocab_size: int, store: Optional[DocumentStore] = None):
        if store is not None and not isinstance(store, DocumentStore):
            raise ArgumentError(f"memory store is a {type(store).__name__}; the memory reads a "
                                "RETGEN DocumentStore (faiss backend)")
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
                    doc_offsets, doc_names: Sequence[str], progress: bool = False
                    ) -> "PassageMemory":
        """The memory of a training corpus (its token stream cut into passages per document)."""
        from .passages import corpus_passages

        mem = cls(tokenizer, encoder, config, len(tokenizer.vocab))
        rids, texts, metas = corpus_passages(tokenizer, stream, doc_offsets, doc_names,
                                             config.passage_length,
                                             config.stride or config.passage_length)
        mem.store.upsert(rids, texts, mem._encode(texts, progress, "encoding passages"), metas)
        mem.sync()
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

    def sync(self) -> None:
        """Bring the derived state up to the store's records (cheap when nothing changed)."""
        with self._lock:
            rev = self.store.revision
            if rev == self._rev or self._frozen:
                return
            if self.store.dim not in (None, self.encoder.dim):
                raise ArgumentError(f"memory store holds {self.store.dim}-dimensional vectors; "
                                    f"the encoder {self.encoder.name!r} makes {self.encoder.dim}")
            items = self.store.items()
            live = {iid for iid, _ in items}
            have = set(self._table.pids())
            gone = have - live
            self._table.remove(gone)
            for p in gone:
                self._texts.pop(p, None)
                self._meta.pop(p, None)
            new = [(iid, r) for iid, r in items if iid not in have]
            self._table.add([(iid, self._token_ids(r.text)) for iid, r in new])
            for iid, r in new:
                self._texts[iid] = r.text
                self._meta[iid] = (r.id, r.metadata)
            docs: dict[str, list[int]] = {}
            for iid, r in items:
                docs.setdefault(str(r.metadata.get("doc_id", r.id)), []).append(iid)
            self._docs = docs
            self._found.clear()
            self._rev = rev

    # -- finding passages --------------------------------------------------------------
    def _query_text(self, toks: np.ndarray) -> str:
        itos = self.tokenizer.vocab.itos
        return self.tokenizer.context_text([itos[int(t)] for t in toks])

    def _dense_one(self, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.store.search(v, k=k)
        ids = [self.store.int_id(h.id) for h in hits]
        keep = [i for i, x in enumerate(ids) if x is not None]
        return (np.array([ids[i] for i in keep], np.int64),
                np.array([hits[i].score for i in keep]))

    def find(self, queries: Sequence[np.ndarray], params: MemoryParams,
             exclude: Optional[Sequence[set]] = None, progress: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """(pids [n, k], scores [n, k]) of the passages found for each query (token ids), best
        first; -1 / 0 where none. ``exclude``: per query, pids it may not retrieve."""
        self.sync()
        n, k = len(queries), params.k
        texts = [self._query_text(q) for q in queries]
        has = np.array([bool(t.strip()) for t in texts], dtype=bool)
        pids, scores = np.full((n, k), -1, np.int64), np.zeros((n, k))
        if not len(self._table) or not has.any():
            return pids, scores
        kk = k + (max(len(e) for e in exclude) if exclude else 0)
        q = [t for t, h in zip(texts, has) if h]
        with self._lock:
            found = []
            if params.keys in ("lexical", "fused"):
                if self._lex_rev != self._rev:
                    order = sorted(self._texts)
                    self._lexical.rebuild(np.array(order), [self._texts[p] for p in order])
                    self._lex_rev = self._rev
                found.append(self._lexical.search(q, kk))
            if params.keys in ("dense", "fused"):
                vecs = self._encode(q, progress, "encoding memory queries", "query")
                found.append(dense_search(self._dense_one, vecs, kk))
        P, S = found[0] if len(found) == 1 else fuse(found[0], found[1], kk, self.config.rrf_k)
        if exclude:
            for i, e in enumerate(e for e, h in zip(exclude, has) if h):
                if e:
                    bad = np.isin(P[i], list(e))
                    o = np.argsort(bad, kind="stable")
                    P[i], S[i] = np.where(bad, -1, P[i])[o], np.where(bad, 0.0, S[i])[o]
        pids[has], scores[has] = P[:, :k], S[:, :k]
        return pids, scores

    def stream_queries(self, seq: np.ndarray, pos: np.ndarray, refresh: int
                       ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(refresh points, index of each position's point, the query tokens of each point):
        position i queries at (i // refresh) * refresh with the ``query_length`` tokens before."""
        uq, inv = np.unique((np.asarray(pos) // refresh) * refresh, return_inverse=True)
        Lq = self.config.query_length
        return uq, inv, [np.asarray(seq[max(0, b - Lq):b], np.int64) for b in uq]

    # -- the neighbour distribution ----------------------------------------------------
    def stream_counts(self, seq: np.ndarray, pos: np.ndarray, params: MemoryParams,
                      found: Optional[tuple[np.ndarray, np.ndarray]] = None,
                      exclude: Optional[Sequence[set]] = None, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[N, n] (F, H, C) of :meth:`NGramTable.target_counts` at positions ``pos`` of ``seq``,
        each position reading the passages its refresh point found (``found``: the
        :meth:`find` result of :meth:`stream_queries`' queries, computed when not given, at
        k >= params.k; ``exclude``: per refresh point, pids it may not retrieve)."""
        seq = np.asarray(seq, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.int64)
        N = self.config.order
        F, H, C = (np.zeros((N, len(pos))) for _ in range(3))
        self.sync()
        if not len(self._table) or not len(pos):
            return F, H, C
        _, inv, queries = self.stream_queries(seq, pos, params.refresh)
        pids, scores = found if found is not None else self.find(queries, params, exclude, progress)
        pids, scores = pids[:, :params.k], scores[:, :params.k]
        w = passage_weights(scores, pids, params.temperature)
        for lo in range(0, len(pos), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            F[:, sl], H[:, sl], C[:, sl] = self._table.target_counts(
                seq, pos[sl], pids[inv[sl]], w[inv[sl]], seq[pos[sl]])
        return F, H, C

    def stream_terms(self, seq: np.ndarray, pos: np.ndarray, params: MemoryParams,
                     found: Optional[tuple[np.ndarray, np.ndarray]] = None,
                     exclude: Optional[Sequence[set]] = None, progress: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(p_mem of each position's own token, lam_mem) at positions ``pos`` of ``seq``."""
        F, H, C = self.stream_counts(seq, pos, params, found, exclude, progress)
        return neighbour_probs(F, H, C, self.config.weights, self.config.kappa)

    def step_terms(self, history: Sequence[int], params: MemoryParams, vocab_size: int
                   ) -> tuple[np.ndarray, float, StepMemory]:
        """(p_mem [V], lam_mem, what was read) after ``history``: the stream's terms at one
        position, for every token."""
        self.sync()
        pos = len(history)
        if not len(self._table) or pos == 0:
            return np.zeros(vocab_size), 0.0, StepMemory()
        S, Lq = params.refresh, self.config.query_length
        b = (pos // S) * S
        q = tuple(int(t) for t in history[max(0, b - Lq):b])
        key = (q, params)
        with self._lock:
            hit = self._found.get(key)
            if hit is None:
                pids, scores = self.find([np.array(q, np.int64)], params)
                hit = pids, passage_weights(scores, pids, params.temperature)
                self._found[key] = hit
                if len(self._found) > 256:
                    self._found.popitem(last=False)
        pids, w = hit[0][0], hit[1][0]
        tail = list(history[-(self.config.order - 1):]) if self.config.order > 1 else []
        seq = np.asarray(tail + [0], dtype=np.int64)  # all the tables read: the last N-1 tokens
        F, H, C = self._table.dense_counts(seq, len(tail), pids, w, vocab_size)
        cfg = self.config
        p, lam = neighbour_probs(F, H, C, cfg.weights, cfg.kappa)
        return p, float(lam), StepMemory(pids, w, H, C, float(lam))

    # -- description and persistence --------------------------------------------------
    def stats(self) -> dict:
        self.sync()
        return {"documents": len(self._docs), "passages": len(self._table),
                "tokens": self._table.total_tokens, "table_bytes": self._table.nbytes,
                "store_bytes": self.store.nbytes(),
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
