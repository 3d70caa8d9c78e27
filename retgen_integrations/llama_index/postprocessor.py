"""The RETGEN energy reranker as a LlamaIndex node postprocessor (works with any retriever)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field

from retgen_engine.docstore.ranking import freq_prior, rank_by_energy
from retgen_engine.search.energy import EnergyModel

#: metadata keys the reranker adds (hidden from the LLM and embedding views of the node).
ENERGY_KEYS = ("retgen_energy", "retgen_weight")


class RetgenEnergyRerank(BaseNodePostprocessor):
    """Rerank nodes by RETGEN energy (similarity, redundancy with better candidates, optional
    frequency prior ``metadata[freq_key]``) and keep the ``top_n`` lowest-energy ones.

    Each returned node's ``score`` is its relevance ``1 - d/4`` in [0, 1]; its metadata gains
    ``retgen_energy`` and ``retgen_weight`` (excluded from LLM/embedding metadata views).
    Node embeddings are used when present, otherwise the texts are embedded.
    """

    embed_model: BaseEmbedding
    top_n: int = Field(4, ge=1)
    w_sim: float = 1.0
    w_div: float = 0.5
    w_freq: float = 0.0
    tau: float = Field(0.5, gt=0.0)
    freq_key: str = "freq"

    @classmethod
    def class_name(cls) -> str:
        return "RetgenEnergyRerank"

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("RetgenEnergyRerank needs the query (query_bundle)")
        if not nodes:
            return []
        q = np.asarray(query_bundle.embedding or
                       self.embed_model.get_query_embedding(query_bundle.query_str), np.float32)
        freq = [freq_prior(n.node.metadata, self.freq_key) for n in nodes]
        out = []
        for i, score, e, w in rank_by_energy(q, self._node_vectors(nodes), freq,
                                             EnergyModel(self.w_sim, self.w_div, self.w_freq),
                                             self.tau, self.top_n):
            node = nodes[i].node.model_copy(deep=True)
            node.metadata.update(retgen_energy=e, retgen_weight=w)
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                keys.extend(k for k in ENERGY_KEYS if k not in keys)
            out.append(NodeWithScore(node=node, score=score))
        return out

    def _node_vectors(self, nodes: List[NodeWithScore]) -> np.ndarray:
        if all(n.node.embedding is not None for n in nodes):
            v = np.asarray([n.node.embedding for n in nodes], dtype=np.float32)
        else:
            texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            v = np.asarray(self.embed_model.get_text_embedding_batch(texts), dtype=np.float32)
        return v
