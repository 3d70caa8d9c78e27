"""The store's record and search-result types, and the checks of what callers pass in."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..checks import str_list_arg

VECTOR_DTYPES = ("float32", "float16")


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass
class Hit:
    """One search result. ``score`` is the relevance ``1 - distance / 4`` (higher better)."""

    id: str
    text: str
    metadata: dict[str, Any]
    distance: float
    score: float
    vector: Optional[np.ndarray] = field(default=None, repr=False)
    energy: Optional[float] = None
    weight: Optional[float] = None


def check_ids(ids: Iterable[Any], what: str = "id") -> list[str]:
    """``ids`` as a list of strings (one string is refused as a whole: it is not a list of
    ids); the refusal names the first element that is not a string."""
    return str_list_arg("ids", ids, item=what)


def check_batch(ids: Sequence[Any], texts: Sequence[Any],
                metadatas: Optional[Sequence[Any]]) -> tuple[list[str], list[str], list]:
    """``(ids, texts, metadatas)`` of one upsert as lists (``metadatas=None``: no metadata);
    TypeError or ValueError for mismatched lengths, duplicate ids or wrong types."""
    ids = check_ids(ids)
    texts = list(texts)
    n = len(ids)
    metadatas = [None] * n if metadatas is None else list(metadatas)
    if not (len(texts) == n == len(metadatas)):
        raise ValueError(f"got {n} ids, {len(texts)} texts and {len(metadatas)} metadatas; "
                         "they must have the same length")
    if n == 0:
        return ids, texts, metadatas
    if len(set(ids)) != n:
        dup = sorted({x for x in ids if ids.count(x) > 1})[:5]
        raise ValueError(f"duplicate ids in one batch: {dup}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
    for i, m in enumerate(metadatas):
        if m is not None and not isinstance(m, Mapping):
            raise TypeError(f"metadata {i} is {type(m).__name__}, expected a dict or None")
    return ids, texts, metadatas


def check_settings(dim: Optional[int], vector_dtype: str, refine_factor: int,
                   retrain_growth: float, refine_codes: Optional[str], disk_vectors: bool,
                   disk_dir: Optional[str | os.PathLike]) -> None:
    """ValueError or TypeError for bad :class:`~retgen_engine.docstore.DocumentStore`
    arguments."""
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim={dim!r} must be a positive int (or None: set by the first add)")
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector_dtype={vector_dtype!r}; allowed: {', '.join(VECTOR_DTYPES)}")
    if refine_factor < 1:
        raise ValueError(f"refine_factor={refine_factor} must be >= 1")
    if retrain_growth <= 1.0:
        raise ValueError(f"retrain_growth={retrain_growth} must be > 1")
    if refine_codes is not None and (not isinstance(refine_codes, str) or not refine_codes):
        raise ValueError(f"refine_codes={refine_codes!r} must be 'auto', 'index' (the "
                         "index's codes only), a faiss index_factory string (e.g. 'PQ96') "
                         "or None (keep raw vectors)")
    if not isinstance(disk_vectors, bool):
        raise TypeError(f"disk_vectors={disk_vectors!r} must be a bool")
    if disk_vectors and refine_codes != "index":
        raise ValueError(f"disk_vectors=True needs refine_codes='index' (got "
                         f"{refine_codes!r}): the float16 rows on disk re-score the "
                         "index's candidates")
    if disk_dir is not None and not Path(disk_dir).is_dir():
        raise ValueError(f"disk_dir={str(disk_dir)!r} is not a directory")


__all__ = ["Record", "Hit", "check_ids", "check_batch", "check_settings", "VECTOR_DTYPES"]
