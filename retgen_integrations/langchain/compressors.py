"""The RETGEN energy reranker as a LangChain document compressor (works with any retriever)."""
from __future__ import annotations

from typing import Optional, Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field

from retgen_engine.docstore.ranking import freq_prior, rank_by_energy
from retgen_engine.search.energy import EnergyModel


class RetgenEnergyCompressor(BaseDocumentCompressor):
    """Rerank documents by RETGEN energy: similarity to the query, redundancy with better
    candidates and an optional frequency prior (``metadata[freq_key]``, default 1).

    Returns the ``top_n`` lowest-energy documents as copies whose metadata gain ``score``
    (relevance ``1 - d/4`` in [0, 1]), ``energy`` and ``weight``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    embeddings: Embeddings
    top_n: int = Field(4, ge=1)
    w_sim: float = 1.0
    w_div: float = 0.5
    w_freq: float = 0.0
    tau: float = Field(0.5, gt=0.0)
    freq_key: str = "freq"

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        q = self.embeddings.embed_query(query)
        v = self.embeddings.embed_documents([d.page_content for d in docs])
        ranked = rank_by_energy(q, v, [freq_prior(d.metadata, self.freq_key) for d in docs],
                                EnergyModel(self.w_sim, self.w_div, self.w_freq), self.tau,
                                self.top_n)
        return [Document(page_content=docs[i].page_content, id=docs[i].id,
                         metadata={**docs[i].metadata, "score": score, "energy": e, "weight": w})
                for i, score, e, w in ranked]

