"""The learned parts: the energy reranker with its lambda gate, the retrieval policy with its
skip stage, the leakage-masked held-out queries they are fitted on, and ``retgen train``."""
