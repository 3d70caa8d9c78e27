"""LangChain ``VectorStore`` over :class:`retgen_engine.docstore.DocumentStore`.

Scores: ``similarity_search_with_score`` returns the store's one relevance convention,
``1 - d / 4`` in [0, 1] (d = squared L2 between unit vectors; equal to ``(1 + cos) / 2``),
higher is better; ``_select_relevance_score_fn`` is therefore the identity.

Filters: a dict (``$eq $ne $gt $gte $lt $lte $in $nin``, the list operators ``$has $any
$all``, ``$text_match $itext_match $empty``, combined with ``$and $or $not``; plain values mean
``$eq``) or a callable ``metadata -> bool``; every operator is documented in
:mod:`retgen_engine.docstore.filters`. They are applied inside the faiss search. A key missing
from a document's metadata never matches (but ``{"$empty": True}``).
"""
from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from retgen_engine.config import IndexConfig
from retgen_engine.docstore import DocumentStore, Hit
from retgen_engine.search.energy import EnergyModel
from retgen_engine.docstore.filters import Filter

log = logging.getLogger(__name__)


def _doc(hit_or_rec: Any) -> Document:
    return Document(page_content=hit_or_rec.text, metadata=dict(hit_or_rec.metadata),
                    id=hit_or_rec.id)


def _check_query(query: Any) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty; give some text to search for")
    return query


class RetgenVectorStore(VectorStore):
    """Documents embedded with any LangChain ``Embeddings`` in a RETGEN document store."""

    def __init__(self, embedding: Embeddings, store: Optional[DocumentStore] = None, *,
                 index_config: Optional[IndexConfig] = None, vector_dtype: str = "float32"
                 ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a langchain Embeddings, "
                            f"got {type(embedding).__name__}")
        self.embedding = embedding
        self.store = store if store is not None else DocumentStore(
            index_config=index_config, vector_dtype=vector_dtype)

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    # -- writes ------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: Optional[list[dict]] = None, *,
                  ids: Optional[list[Optional[str]]] = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        if ids is None:
            ids = [None] * len(texts)
        ids = list(ids)
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        for i, x in enumerate(ids):
            if x is not None and not isinstance(x, str):
                raise TypeError(f"id {i} is {x!r} ({type(x).__name__}); ids must be strings")
        ids = [x if x is not None else str(uuid.uuid4()) for x in ids]
        if not texts:
            return []
        vectors = np.asarray(self.embedding.embed_documents(texts), dtype=np.float32)
        return self.store.upsert(ids, texts, vectors, metadatas)

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete by id (unknown ids are ignored); ``ids=None`` deletes everything."""
        if ids is None:
            self.store.clear()
        else:
            self.store.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_doc(r) for r in self.store.get(ids)]

    # -- search ------------------------------------------------------------------------
    def _embed_query(self, query: str) -> np.ndarray:
        return np.asarray(self.embedding.embed_query(_check_query(query)), dtype=np.float32)

    def similarity_search(self, query: str, k: int = 4, filter: Filter | None = None,
                          **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4,
                                     filter: Filter | None = None, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """(document, relevance in [0, 1], higher better), best first."""
        return self.similarity_search_with_score_by_vector(self._embed_query(query), k, filter,
                                                           **kwargs)

    def similarity_search_with_score_by_vector(self, embedding: Sequence[float], k: int = 4,
                                               filter: Filter | None = None, **kwargs: Any
                                               ) -> list[tuple[Document, float]]:
        hits = self.store.search(np.asarray(embedding, dtype=np.float32), k, filter=filter,
                                 nprobe=kwargs.get("nprobe"))
        return [(_doc(h), h.score) for h in hits]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: Filter | None = None, **kwargs: Any
                                    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter,
                                                                          **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # scores are already relevances in [0, 1] (see the module docstring)
        return lambda score: score

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5, filter: Filter | None = None,
                                      **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embed_query(query), k, fetch_k, lambda_mult, filter, **kwargs)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4,
                                                fetch_k: int = 20, lambda_mult: float = 0.5,
                                                filter: Filter | None = None, **kwargs: Any
                                                ) -> list[Document]:
        hits = self.store.max_marginal_relevance(np.asarray(embedding, dtype=np.float32), k,
                                                 fetch_k, lambda_mult, filter)
        return [_doc(h) for h in hits]

    def search_with_energy(self, query: str, k: int = 4, fetch_k: int = 20,
                           filter: Filter | None = None, model: Optional[EnergyModel] = None,
                           tau: float = 0.5, freq_key: str = "freq") -> list[Hit]:
        """Energy-reranked hits (score, distance, energy, weight); see ``DocumentStore``."""
        return self.store.search_energy(self._embed_query(query), k, fetch_k, filter, model,
                                        tau, freq_key)

    # -- construction and persistence ----------------------------------------------------
    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: Optional[list[dict]] = None, *, ids: Optional[list[str]] = None,
                   **kwargs: Any) -> "RetgenVectorStore":
        vs = cls(embedding, **kwargs)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    def save_local(self, folder_path: str | Path) -> Path:
        """Persist to a directory (faiss index, SQLite docstore, .npy vectors, manifest).
        The store's other ``extra`` entries (e.g. the document memory's ``"memory"``) are
        kept."""
        self.store.extra.update({"adapter": "langchain",
                                 "embedding": _embedding_info(self.embedding)})
        return self.store.save(folder_path)

    @classmethod
    def load_local(cls, folder_path: str | Path, embeddings: Embeddings
                   ) -> "RetgenVectorStore":
        """Load a directory written by :meth:`save_local` (JSON/SQLite/npy/faiss, no pickle)."""
        store = DocumentStore.load(folder_path)
        saved = store.extra.get("embedding")
        if saved and saved != _embedding_info(embeddings):
            log.warning("store at %s was built with embeddings %s; loading with %s",
                        folder_path, saved, _embedding_info(embeddings))
        return cls(embeddings, store)


def _embedding_info(emb: Embeddings) -> dict[str, Any]:
    enc = getattr(emb, "encoder", None)
    info = {"class": type(emb).__name__}
    if enc is not None and hasattr(enc, "info"):
        info.update(enc.info())
    return info
