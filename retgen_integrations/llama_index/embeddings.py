"""LlamaIndex ``BaseEmbedding`` over a RETGEN :class:`~retgen_engine.Encoder`."""
from __future__ import annotations

from typing import Any, List

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from retgen_engine import Encoder, load_encoder


class RetgenEmbedding(BaseEmbedding):
    """Unit-norm embeddings from a RETGEN encoder (e.g. ``load_encoder("minilm")``)."""

    _encoder: Encoder = PrivateAttr()

    def __init__(self, encoder: Encoder, **kwargs: Any) -> None:
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder must be a retgen_engine.Encoder, "
                            f"got {type(encoder).__name__}")
        kwargs.setdefault("model_name", encoder.name)
        super().__init__(**kwargs)
        self._encoder = encoder

    @classmethod
    def from_name(cls, name: str = "minilm", dtype: str = "float32", **kw: Any
                  ) -> "RetgenEmbedding":
        return cls(load_encoder(name, dtype), **kw)

    @classmethod
    def class_name(cls) -> str:
        return "RetgenEmbedding"

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._encoder.encode([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._encoder.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._encoder.encode(texts, batch_size=self.embed_batch_size).tolist()
