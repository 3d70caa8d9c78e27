"""RETGEN for LangChain: vector store, retriever, energy reranker, chat model, LLM, embeddings."""
from .chat_models import ChatRetgen
from .compressors import RetgenEnergyCompressor
from .embeddings import RetgenEmbeddings
from .llms import RetgenLLM
from .retrievers import RetgenRetriever
from .vectorstores import RetgenVectorStore

__all__ = ["ChatRetgen", "RetgenLLM", "RetgenEmbeddings", "RetgenVectorStore",
           "RetgenRetriever", "RetgenEnergyCompressor"]
