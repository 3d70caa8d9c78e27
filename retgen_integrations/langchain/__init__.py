"""RETGEN for LangChain: vector store, retriever, energy reranker, chat model, LLM, embeddings."""
from .embeddings import RetgenEmbeddings
from .vectorstores import RetgenVectorStore

__all__ = ["RetgenEmbeddings", "RetgenVectorStore"]
