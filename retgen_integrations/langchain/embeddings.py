"""LangChain ``Embeddings`` over a RETGEN :class:`~retgen_engine.Encoder`."""
from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field

from retgen_engine import Encoder, load_encoder


class RetgenEmbeddings(BaseModel, Embeddings):
    """Unit-norm embeddings from a RETGEN encoder (e.g. ``load_encoder("minilm")``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    encoder: Any = Field(description="a retgen_engine.Encoder")
    batch_size: int = Field(256, ge=1)

    def model_post_init(self, _context: Any, /) -> None:
        if not isinstance(self.encoder, Encoder):
            raise TypeError(f"encoder must be a retgen_engine.Encoder, "
                            f"got {type(self.encoder).__name__}")

    @classmethod
    def from_name(cls, name: str = "minilm", dtype: str = "float32", **kw: Any
                  ) -> "RetgenEmbeddings":
        """``name`` as accepted by :func:`retgen_engine.load_encoder` ("minilm", "hashing:64")."""
        return cls(encoder=load_encoder(name, dtype), **kw)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(texts, batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode([text])[0].tolist()
