"""LangChain retriever over :class:`RetgenVectorStore` with energy reranking."""
from __future__ import annotations

from typing import Any, Literal, Optional

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from retgen_engine.search.energy import EnergyModel

from .vectorstores import RetgenVectorStore


class RetgenRetriever(BaseRetriever):
    """Top-``k`` documents; every Document's metadata gains ``score`` (relevance in [0, 1]),
    and, for ``search_type="energy"`` (default), ``energy`` (lower is better) and ``weight``
    (the softmax of -energy over the ``fetch_k`` candidates).

    ``search_type="similarity"`` and ``"mmr"`` skip the energy model (``energy`` is None).
    Per call, ``invoke(query, k=..., filter=...)`` overrides ``k`` and ``filter``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vectorstore: RetgenVectorStore
    k: int = Field(4, ge=1)
    fetch_k: int = Field(20, ge=1)
    search_type: Literal["energy", "similarity", "mmr"] = "energy"
    filter: Optional[Any] = None
    lambda_mult: float = Field(0.5, ge=0.0, le=1.0)
    #: energy model weights and retrieval temperature (see retgen_engine.search.energy).
    w_sim: float = 1.0
    w_div: float = 0.5
    w_freq: float = 0.0
    tau: float = Field(0.5, gt=0.0)
    freq_key: str = "freq"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: Optional[int] = None, filter: Any = None,
                                **kwargs: Any) -> list[Document]:
        k = self.k if k is None else k
        flt = self.filter if filter is None else filter
        store = self.vectorstore
        q = store._embed_query(query)
        if self.search_type == "energy":
            model = EnergyModel(self.w_sim, self.w_div, self.w_freq)
            hits = store.store.search_energy(q, k, max(k, self.fetch_k), flt, model, self.tau,
                                             self.freq_key)
        elif self.search_type == "mmr":
            hits = store.store.max_marginal_relevance(q, k, max(k, self.fetch_k),
                                                      self.lambda_mult, flt)
        else:
            hits = store.store.search(q, k, filter=flt)
        return [Document(page_content=h.text, id=h.id,
                         metadata={**h.metadata, "score": h.score, "energy": h.energy,
                                   "weight": h.weight})
                for h in hits]
