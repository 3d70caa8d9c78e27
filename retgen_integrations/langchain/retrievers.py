"""LangChain retriever over :class:`RetgenVectorStore`: LangChain's ``VectorStoreRetriever``
plus an ``"energy"`` search type (energy reranking, see ``retgen_engine.search.energy``).

It only translates: every search goes through the store's public API, and every returned
Document's metadata gains ``score``, ``energy`` and ``weight``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Collection, Optional

from langchain_core.callbacks import (AsyncCallbackManagerForRetrieverRun,
                                      CallbackManagerForRetrieverRun)
from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import Field, model_validator

from retgen_engine.search.energy import EnergyModel

from .vectorstores import RetgenVectorStore

#: search parameters: each a field, a ``search_kwargs`` key and a per-call ``invoke`` keyword
PARAMS = ("k", "fetch_k", "filter", "lambda_mult", "w_sim", "w_div", "w_freq", "tau",
          "freq_key")
#: ``search_kwargs`` / per-call only, as in LangChain (``"similarity_score_threshold"``)
THRESHOLD = "score_threshold"


class RetgenRetriever(VectorStoreRetriever):
    """Top-``k`` documents; every Document's metadata gains ``score`` (relevance in [0, 1]),
    and, for ``search_type="energy"`` (default), ``energy`` (lower is better) and ``weight``
    (the softmax of -energy over the ``fetch_k`` candidates).

    ``"similarity"``, ``"similarity_score_threshold"`` and ``"mmr"`` skip the energy model
    (``energy`` and ``weight`` are None).

    Parameters (:data:`PARAMS`) are fields (``RetgenRetriever(vectorstore=vs, k=2)``) or, as
    for any ``VectorStoreRetriever``, ``search_kwargs`` (``search_kwargs={"k": 2}``, which
    also holds ``score_threshold``); per call, ``invoke(query, k=..., filter=...)`` overrides
    them (None: no override). Other per-call keywords are ignored.
    """

    vectorstore: RetgenVectorStore
    search_type: str = "energy"
    allowed_search_types: ClassVar[Collection[str]] = (
        *VectorStoreRetriever.allowed_search_types, "energy")

    k: int = Field(4, ge=1)
    fetch_k: int = Field(20, ge=1)
    filter: Optional[Any] = None
    lambda_mult: float = Field(0.5, ge=0.0, le=1.0)
    #: energy model weights and retrieval temperature (see retgen_engine.search.energy).
    w_sim: float = 1.0
    w_div: float = 0.5
    w_freq: float = 0.0
    tau: float = Field(0.5, gt=0.0)
    freq_key: str = "freq"

    @model_validator(mode="before")
    @classmethod
    def _check_search_kwargs(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        skw = values.get("search_kwargs") or {}
        unknown = sorted(set(skw) - {*PARAMS, THRESHOLD})
        if unknown:
            raise ValueError(f"unknown search_kwargs {unknown}; RetgenRetriever takes "
                             f"{(*PARAMS, THRESHOLD)}")
        clash = [p for p in PARAMS if p in skw and p in values and values[p] != skw[p]]
        if clash:
            raise ValueError(f"{clash} given both as fields and in search_kwargs, with "
                             "different values; give each once")
        return values

    def _params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Fields, then ``search_kwargs``, then the per-call keywords; None overrides nothing."""
        out = {p: getattr(self, p) for p in PARAMS} | {THRESHOLD: None}
        for src in (self.search_kwargs, overrides):
            out.update({p: v for p, v in src.items() if p in out and v is not None})
        return out

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        p = self._params(kwargs)
        k, fetch_k, flt, vs = p["k"], max(p["k"], p["fetch_k"]), p["filter"], self.vectorstore
        if self.search_type == "energy":
            model = EnergyModel(p["w_sim"], p["w_div"], p["w_freq"])
            hits = vs.search_with_energy(query, k, fetch_k, flt, model, p["tau"], p["freq_key"])
            return [_with_scores(Document(page_content=h.text, id=h.id, metadata=h.metadata),
                                 h.score, h.energy, h.weight) for h in hits]
        if self.search_type == "similarity":
            pairs = vs.similarity_search_with_score(query, k, flt)
        elif self.search_type == "similarity_score_threshold":
            pairs = vs.similarity_search_with_relevance_scores(
                query, k, filter=flt, score_threshold=p["score_threshold"])
        elif self.search_type == "mmr":
            docs = vs.max_marginal_relevance_search(query, k, fetch_k, p["lambda_mult"], flt)
            # MMR picks among the fetch_k nearest: their relevances are the scores
            score = {d.id: s for d, s in vs.similarity_search_with_score(query, fetch_k, flt)}
            pairs = [(d, score[d.id]) for d in docs]
        else:
            raise ValueError(f"search_type of {self.search_type} not allowed.")
        return [_with_scores(d, s) for d, s in pairs]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        return await run_in_executor(None, self._get_relevant_documents, query,
                                     run_manager=run_manager.get_sync(), **kwargs)


def _with_scores(doc: Document, score: float, energy: Optional[float] = None,
                 weight: Optional[float] = None) -> Document:
    return Document(page_content=doc.page_content, id=doc.id,
                    metadata={**doc.metadata, "score": score, "energy": energy,
                              "weight": weight})
