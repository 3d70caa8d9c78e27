"""What a saved memory records about itself, and the checks when it is loaded: the format, the
encoder its vectors came from, the model (training vocabulary) it belongs to, and the words it
added to the vocabulary (in id order, so ids are stable across loads)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from ..persist.errors import ModelFormatError

MEMORY_FORMAT = "retgen-memory"
MEMORY_FORMAT_VERSION = 1


def vocab_fingerprint(itos: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(itos), ensure_ascii=False).encode()).hexdigest()


def describe(mem: Any) -> dict:
    vocab = mem.tokenizer.vocab
    return {"format": MEMORY_FORMAT, "format_version": MEMORY_FORMAT_VERSION,
            "encoder": mem.encoder.info(), "base_vocab_size": mem.base_vocab_size,
            "base_vocab_sha256": vocab_fingerprint(vocab.itos[:mem.base_vocab_size]),
            "new_words": vocab.itos[mem.base_vocab_size:], "config": mem.config.model_dump()}


def check_saved(m: Any, path: Path, encoder: Any, vocab: Any, base_vocab_size: int) -> dict:
    """The saved description ``m`` of the memory at ``path``, checked against the model's
    encoder and vocabulary (a ModelFormatError says what does not fit)."""
    if not isinstance(m, dict) or m.get("format") != MEMORY_FORMAT:
        raise ModelFormatError(f"{str(path)!r} is a document store, not a RETGEN memory")
    if m.get("format_version") != MEMORY_FORMAT_VERSION:
        raise ModelFormatError(f"memory {str(path)!r} has format version "
                               f"{m.get('format_version')!r}; this release reads "
                               f"{MEMORY_FORMAT_VERSION}")
    enc = m.get("encoder") or {}
    if enc.get("name") != encoder.name or enc.get("dim") != encoder.dim:
        raise ModelFormatError(f"memory {str(path)!r} was built with encoder {enc.get('name')!r} "
                               f"(dim {enc.get('dim')}); the model's encoder is "
                               f"{encoder.name!r} (dim {encoder.dim})")
    if (m.get("base_vocab_size") != base_vocab_size or m.get("base_vocab_sha256")
            != vocab_fingerprint(vocab.itos[:base_vocab_size])):
        raise ModelFormatError(f"memory {str(path)!r} belongs to another model (its vocabulary "
                               "differs from this model's)")
    new = m.get("new_words") or []
    if not isinstance(new, list) or not all(isinstance(w, str) for w in new):
        raise ModelFormatError(f"memory {str(path)!r}: new_words is malformed")
    if vocab.itos[base_vocab_size:] != new[:len(vocab) - base_vocab_size]:
        raise ModelFormatError(f"memory {str(path)!r}: the vocabulary already holds other new words")
    return m
