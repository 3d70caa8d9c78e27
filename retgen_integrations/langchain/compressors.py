"""The RETGEN energy reranker as a LangChain document compressor (works with any retriever)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field

from retgen_engine.docstore import energy_scores, freq_prior, relevance
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
        q = np.asarray(self.embeddings.embed_query(query), dtype=np.float32)
        v = np.asarray(self.embeddings.embed_documents([d.page_content for d in docs]),
                       dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        dist = np.clip(2.0 - 2.0 * (v @ qn), 0.0, 4.0)
        by_sim = np.argsort(dist, kind="stable")  # redundancy is measured against better ones
        freq = [freq_prior(docs[i].metadata, self.freq_key) for i in by_sim]
        e, w = energy_scores(q, v[by_sim], EnergyModel(self.w_sim, self.w_div, self.w_freq),
                             self.tau, freq)
        out = []
        for j in np.argsort(e, kind="stable")[: self.top_n]:
            i = by_sim[j]
            d = docs[i]
            out.append(Document(page_content=d.page_content, id=d.id,
                                metadata={**d.metadata, "score": float(relevance(dist[i])),
                                          "energy": float(e[j]), "weight": float(w[j])}))
        return out

