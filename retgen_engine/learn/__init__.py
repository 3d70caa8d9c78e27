"""The learned parts: the energy reranker with its lambda gate, the retrieval policy with its
skip stage, the leakage-masked held-out queries they are fitted on, and ``retgen train``; and
the build-time tuning of the mixture's weights on a held-out slice of the corpus
(:mod:`.tuning`, its stages in :mod:`.stages`, the held-out slice in :mod:`.heldout`)."""
