"""LlamaIndex vector store over :class:`retgen_engine.docstore.DocumentStore`.

Stores text (``stores_text=True``), so ``VectorStoreIndex.from_vector_store`` works without a
separate docstore. Nodes are kept as LlamaIndex's own metadata dict (``node_to_metadata_dict``:
the node's metadata at the top level, for filtering, plus its JSON), keyed by node id.
Similarities follow the store's convention: relevance ``1 - d / 4`` in [0, 1], higher better.
Query modes: DEFAULT and MMR (``mmr_threshold`` is MMR's lambda, default 0.5).

Persistence: ``persist(path)`` writes a docstore *directory* at ``path`` (also when
StorageContext names it ``default__vector_store.json``); load it with
:meth:`RetgenVectorStore.from_persist_path` or :meth:`RetgenVectorStore.from_persist_dir`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (BasePydanticVectorStore, MetadataFilters,
                                                  VectorStoreQuery, VectorStoreQueryMode,
                                                  VectorStoreQueryResult)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import PrivateAttr

from retgen_engine.config import IndexConfig
from retgen_engine.docstore import DocumentStore, Hit, Record

from .filters import to_dict_filter, to_predicate

log = logging.getLogger(__name__)

DEFAULT_PERSIST_NAME = "default__vector_store.json"   # what StorageContext.persist passes


class RetgenVectorStore(BasePydanticVectorStore):
    """Nodes, their embeddings and metadata in a RETGEN document store."""

    stores_text: bool = True
    flat_metadata: bool = False
    mmr_prefetch_k: int = 20

    _store: DocumentStore = PrivateAttr()

    def __init__(self, store: Optional[DocumentStore] = None,
                 index_config: Optional[IndexConfig] = None, vector_dtype: str = "float32",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store if store is not None else DocumentStore(
            index_config=index_config, vector_dtype=vector_dtype)

    @classmethod
    def class_name(cls) -> str:
        return "RetgenVectorStore"

    @property
    def client(self) -> DocumentStore:
        return self._store

    # -- writes ------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        nodes = list(nodes)
        if not nodes:
            return []
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise ValueError(f"nodes without an embedding: {missing[:5]}; embed them first "
                             "(e.g. through VectorStoreIndex with an embed_model)")
        ids = [n.node_id for n in nodes]
        texts = [n.get_content() for n in nodes]
        metas = [node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata)
                 for n in nodes]
        vectors = np.asarray([n.embedding for n in nodes], dtype=np.float32)
        return self._store.upsert(ids, texts, vectors, metas)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id`` (none: no error)."""
        self._store.delete([r.id for r in self._store.where({"ref_doc_id": ref_doc_id})])

    def delete_nodes(self, node_ids: Optional[List[str]] = None,
                     filters: Optional[MetadataFilters] = None, **delete_kwargs: Any) -> None:
        """Delete nodes by id and/or filter (both: nodes matching both). Unknown ids: ignored."""
        if node_ids is None and filters is None:
            return
        self._store.delete([r.id for r in self._select(node_ids, filters)])

    def clear(self) -> None:
        self._store.clear()

    # -- reads -------------------------------------------------------------------------
    def get_nodes(self, node_ids: Optional[List[str]] = None,
                  filters: Optional[MetadataFilters] = None) -> List[BaseNode]:
        """Nodes by id (in that order) and/or filter; neither: all nodes."""
        return [_node(r.text, r.metadata) for r in self._select(node_ids, filters)]

    def _select(self, node_ids: Optional[List[str]], filters: Optional[MetadataFilters]
                ) -> list[Record]:
        if node_ids is not None:
            pred = to_predicate(filters)
            recs = self._store.get(list(node_ids))
            return [r for r in recs if pred is None or pred(r.metadata)]
        return self._store.where(to_dict_filter(filters))  # evaluated by the store's engine

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.query_embedding is None:
            raise ValueError("RetgenVectorStore.query needs query.query_embedding "
                             "(this store searches by embedding only)")
        mode = VectorStoreQueryMode(query.mode)
        # a dict filter: the store evaluates it inside its engine (faiss or Milvus)
        pred = to_dict_filter(query.filters)
        # empty doc_ids / node_ids mean "no restriction" (VectorStoreIndex passes node_ids=[])
        if query.doc_ids:
            docs = {"ref_doc_id": {"$in": list(query.doc_ids)}}
            pred = {"$and": [docs, pred]} if pred else docs
        q = np.asarray(query.query_embedding, dtype=np.float32)
        k = query.similarity_top_k
        if mode == VectorStoreQueryMode.MMR:
            lam = 0.5 if query.mmr_threshold is None else query.mmr_threshold
            fetch_k = kwargs.get("mmr_prefetch_k", self.mmr_prefetch_k)
            hits = self._store.max_marginal_relevance(q, k, max(k, fetch_k), lam, pred,
                                                      ids=query.node_ids or None)
        elif mode == VectorStoreQueryMode.DEFAULT:
            hits = self._store.search(q, k, filter=pred, ids=query.node_ids or None)
        else:
            raise ValueError(f"query mode {mode.value!r} is not supported; allowed: "
                             f"{VectorStoreQueryMode.DEFAULT.value!r}, "
                             f"{VectorStoreQueryMode.MMR.value!r}")
        return _result(hits)

    # -- persistence -------------------------------------------------------------------
    def persist(self, persist_path: str, fs: Any = None) -> None:
        if fs is not None and getattr(fs, "protocol", "file") not in ("file", ("file", "local")):
            raise NotImplementedError("RetgenVectorStore persists to the local filesystem only")
        self._store.extra["adapter"] = "llama_index"  # other entries ("memory") are kept
        self._store.save(persist_path)

    @classmethod
    def from_persist_path(cls, persist_path: str | Path, **kwargs: Any) -> "RetgenVectorStore":
        return cls(store=DocumentStore.load(persist_path), **kwargs)

    @classmethod
    def from_persist_dir(cls, persist_dir: str | Path, namespace: str = "default",
                         **kwargs: Any) -> "RetgenVectorStore":
        """Load what ``StorageContext.persist(persist_dir)`` wrote for this store."""
        name = DEFAULT_PERSIST_NAME.replace("default", namespace, 1)
        return cls.from_persist_path(Path(persist_dir) / name, **kwargs)


def _node(text: str, metadata: dict) -> BaseNode:
    node = metadata_dict_to_node(metadata, text)
    node.set_content(text)
    return node


def _result(hits: list[Hit]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(nodes=[_node(h.text, h.metadata) for h in hits],
                                  similarities=[h.score for h in hits],
                                  ids=[h.id for h in hits])
