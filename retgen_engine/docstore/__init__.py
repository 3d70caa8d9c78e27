"""The document vector store shared by the LangChain and LlamaIndex adapters.

``store`` holds ids, records, the lock and search; ``rows`` the vector rows in their four
storage modes (raw vectors, refine codes, in-index codes, float16 vectors on disk);
``training`` index training and the switch to codes; ``codes`` the refine codecs and the
large-store profiles; ``diskvectors`` float16 rows on disk; ``ranking`` relevance, MMR and
energy reranking; ``filters`` the metadata filter operators; ``records`` the record types;
``persist`` and ``formats`` the on-disk format.

The Milvus backend (``DocumentStore(backend="milvus", uri=..., collection=...)``): ``milvus``
the store, ``milvus_collection`` its schema and index, ``milvus_index`` index and search
parameters and what Milvus built, ``milvus_expr`` filters as Milvus expressions,
``milvus_persist`` its manifest and the backend dispatch. pymilvus is imported only when a
Milvus store is made.
"""
from .milvus import MilvusStore  # noqa: F401
from .milvus_expr import CallableFilterError  # noqa: F401
from .store import *  # noqa: F401,F403
from .store import __all__ as _store_all

__all__ = [*_store_all, "MilvusStore", "CallableFilterError"]
