"""The document vector store shared by the LangChain and LlamaIndex adapters.

``store`` holds ids, records, the lock and search; ``rows`` the vector rows in their four
storage modes (raw vectors, refine codes, in-index codes, float16 vectors on disk);
``training`` index training and the switch to codes; ``codes`` the refine codecs and the
large-store profiles; ``diskvectors`` float16 rows on disk; ``ranking`` relevance, MMR and
energy reranking; ``filters`` the metadata filter operators; ``records`` the record types;
``persist`` and ``formats`` the on-disk format.
"""
from .store import *  # noqa: F401,F403
from .store import __all__  # noqa: F401
