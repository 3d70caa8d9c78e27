"""The backend dispatch of ``DocumentStore``: ``DocumentStore(backend="milvus", uri=...,
collection=..., token=None, ...)`` returns a :class:`~retgen_engine.docstore.milvus.MilvusStore`;
``backend="faiss"`` (the default) builds the faiss store. ``DocumentStore.load`` of a saved
Milvus store reconnects (:func:`load_if_milvus`). pymilvus is imported only when needed."""
from __future__ import annotations

import os
from typing import Any

from .milvus_persist import is_milvus_store

BACKENDS = ("faiss", "milvus")


class StoreDispatch(type):
    """Metaclass of ``DocumentStore``: picks the backend (module docstring)."""

    def __call__(cls, *args: Any, backend: str = "faiss", **kwargs: Any) -> Any:
        if backend == "faiss":
            return super().__call__(*args, **kwargs)
        if backend == "milvus":
            from .milvus import MilvusStore

            return MilvusStore(*args, **kwargs)
        raise ValueError(f"backend={backend!r}; allowed: {', '.join(BACKENDS)}")


def load_if_milvus(path: str | os.PathLike, verify: bool = True) -> Any:
    """The Milvus store saved at ``path``, or None when ``path`` holds another store."""
    if not is_milvus_store(path):
        return None
    from .milvus import MilvusStore

    return MilvusStore.load(path, verify)


__all__ = ["StoreDispatch", "load_if_milvus", "BACKENDS"]
