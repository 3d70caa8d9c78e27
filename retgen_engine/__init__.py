"""RETGEN: a retrieval-enhanced, interpretable, non-parametric language model.

The standalone engine: no LangChain or LlamaIndex imports here.
"""
import logging
from importlib import metadata

try:
    __version__ = metadata.version("retgen")  # one version: pyproject.toml's
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
    __version__ = "unknown"

from .config import RETGENConfig  # noqa: E402
from .search.encoder import Encoder, HashingEncoder, SentenceTransformerEncoder, load_encoder  # noqa: E402
from .engine import RetgenEngine  # noqa: E402
from .lm.generator import GeneratedToken, GenerationResult, TraceEntry  # noqa: E402
from .persist.modeldir import ModelFormatError  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["RETGENConfig", "RetgenEngine", "Encoder", "HashingEncoder",
           "SentenceTransformerEncoder", "load_encoder", "GeneratedToken", "GenerationResult",
           "TraceEntry", "ModelFormatError", "__version__"]
