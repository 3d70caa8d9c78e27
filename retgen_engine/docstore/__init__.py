"""The document vector store shared by the LangChain and LlamaIndex adapters.

``store`` holds ids, records, the lock and search; ``ranking`` relevance, MMR and energy
reranking; ``codes`` the compressed codes and the large-store profiles; ``diskvectors`` float16
rows on disk; ``filters`` metadata filters; ``persist`` the on-disk format.
"""
from .store import *  # noqa: F401,F403
from .store import __all__  # noqa: F401
