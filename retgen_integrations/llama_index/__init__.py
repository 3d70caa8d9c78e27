"""RETGEN for LlamaIndex: vector store, energy reranker, LLM and embedding model."""
from .embeddings import RetgenEmbedding
from .llms import RetgenLLM
from .postprocessor import RetgenEnergyRerank
from .vector_store import RetgenVectorStore

__all__ = ["RetgenVectorStore", "RetgenEnergyRerank", "RetgenLLM", "RetgenEmbedding"]
