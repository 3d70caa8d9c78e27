"""Ranking helpers for document search: the relevance convention, input normalization,
maximal marginal relevance and energy reranking of candidate documents.

One score convention everywhere: vectors are L2-normalized, the faiss metric is L2, the
distance ``d`` is squared L2 in [0, 4] and the relevance is ``1 - d / 4`` in [0, 1], higher is
better (equal to ``(1 + cos) / 2``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..search.energy import EnergyModel


def relevance(distance: np.ndarray | float) -> np.ndarray | float:
    """Squared L2 distance between unit vectors (in [0, 4]) -> relevance in [0, 1]."""
    return np.clip(1.0 - np.asarray(distance, dtype=np.float64) / 4.0, 0.0, 1.0)


def normalize_rows(vectors: Any, dim: Optional[int], what: str = "vectors") -> np.ndarray:
    """float32 [n, dim] unit rows; clear errors for bad shapes, non-finite or zero vectors."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {v.shape}")
    if dim is not None and v.shape[1] != dim:
        raise ValueError(f"embedding dimension mismatch: {what} have dimension {v.shape[1]}, "
                         f"the store holds dimension {dim}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{what} contain an all-zero vector, which has no direction")
    return np.ascontiguousarray(v / norms, dtype=np.float32)


def batch_rows(vectors: Any, dim: Optional[int], n: int) -> np.ndarray:
    """The unit rows of an upsert of ``n`` records (:func:`normalize_rows`, one per id)."""
    v = normalize_rows(vectors, dim)
    if len(v) != n:
        raise ValueError(f"got {len(v)} vectors for {n} ids")
    return v


def unit_rows(v: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length, for vectors decoded from codes (an all-zero row stays
    zero; unlike :func:`normalize_rows`, which validates caller input)."""
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.where(n > 0, n, 1.0), dtype=np.float32)


def mmr_select(query: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Maximal marginal relevance over unit vectors: indices into ``vectors``, in pick order.

    score(j) = lambda * cos(q, j) - (1 - lambda) * max_{s picked} cos(j, s).
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(f"lambda_mult={lambda_mult} must be in [0, 1]")
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    rel = vectors @ query
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        red = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = np.where(free, lambda_mult * rel - (1.0 - lambda_mult) * red, -np.inf)
        j = int(np.argmax(score))
        picked.append(j)
        free[j] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[j])
    return picked


def energy_scores(query: np.ndarray, vectors: np.ndarray, model: Optional[EnergyModel] = None,
                  tau: float = 0.5, freq: Optional[Sequence[float]] = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(energies [k], weights [k]) of candidate documents for one query.

    Features are those of :class:`~retgen_engine.search.energy.EnergyModel`: similarity
    ``-d / tau`` (d squared L2 between unit vectors), MMR-style redundancy (the largest cosine
    to any earlier candidate, so the order of ``vectors`` matters: pass them best first) and
    the log of a per-document frequency prior (1 when not given).
    """
    model = model or EnergyModel(w_sim=1.0, w_div=0.5, w_freq=0.0)
    v = normalize_rows(vectors, None, "candidate vectors") if len(vectors) else \
        np.zeros((0, len(query)), np.float32)
    q = normalize_rows(query, v.shape[1] if len(v) else None, "query vector")[0]
    d = np.clip(2.0 - 2.0 * (v @ q), 0.0, 4.0)[None, :]
    valid = np.ones_like(d, dtype=bool)
    f = None if freq is None else np.asarray(freq, dtype=np.float64)[None, :]
    e = model.energies(d, valid, tau, f, v[None])
    w = model.weights(d, valid, tau, f, v[None])
    return e[0], w[0]


def energy_rerank(query: np.ndarray, hits: list, model: Optional[EnergyModel] = None,
                  tau: float = 0.5, freq_key: str = "freq") -> list:
    """Hits (with vectors) sorted by energy weight, each given ``energy`` and ``weight``."""
    if not hits:
        return []
    if any(h.vector is None for h in hits):
        raise ValueError("energy reranking needs the candidates' vectors (with_vectors=True)")
    freq = [freq_prior(h.metadata, freq_key) for h in hits]
    e, w = energy_scores(query, np.stack([h.vector for h in hits]), model, tau, freq)
    for h, ei, wi in zip(hits, e, w):
        h.energy, h.weight = float(ei), float(wi)
    return [hits[i] for i in np.argsort(e, kind="stable")]


def rank_by_energy(query: np.ndarray, vectors: np.ndarray, freq: Optional[Sequence[float]] = None,
                   model: Optional[EnergyModel] = None, tau: float = 0.5,
                   top_n: Optional[int] = None) -> list[tuple[int, float, float, float]]:
    """The energy reranking of the adapters' rerankers (LangChain's compressor, LlamaIndex's
    postprocessor): candidates ordered by similarity (redundancy counts against better-ranked
    ones), scored by :func:`energy_scores`, and the ``top_n`` lowest energies returned best
    first as ``(candidate index, relevance, energy, weight)``."""
    v = normalize_rows(vectors, None, "candidate vectors")
    q = normalize_rows(query, v.shape[1], "query vector")[0]
    dist = np.clip(2.0 - 2.0 * (v @ q), 0.0, 4.0)
    by_sim = np.argsort(dist, kind="stable")
    f = None if freq is None else [freq[i] for i in by_sim]
    e, w = energy_scores(q, v[by_sim], model, tau, f)
    out = []
    for j in np.argsort(e, kind="stable")[:top_n]:
        i = int(by_sim[j])
        out.append((i, float(relevance(dist[i])), float(e[j]), float(w[j])))
    return out


class RerankedSearch:
    """MMR and energy reranking over a store's own ``search`` (``with_vectors=True``) and
    ``dim``: one implementation for every backend."""

    def max_marginal_relevance(self, query: Any, k: int = 4, fetch_k: int = 20,
                               lambda_mult: float = 0.5, filter: Any = None,
                               ids: Optional[Sequence[str]] = None) -> list:
        """MMR over the ``fetch_k`` nearest matching records (``lambda_mult=1``: plain search)."""
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float, np.number)) \
                or not 0.0 <= lambda_mult <= 1.0:
            raise ValueError(f"lambda_mult={lambda_mult!r} must be a number in [0, 1]")
        hits = self.search(query, max(k, fetch_k), filter=filter, with_vectors=True, ids=ids)
        if not hits:
            return []
        q = normalize_rows(query, self.dim, "query vector")[0]
        order = mmr_select(q, np.stack([h.vector for h in hits]), k, lambda_mult)
        return [hits[i] for i in order]

    def search_energy(self, query: Any, k: int = 4, fetch_k: int = 20, filter: Any = None,
                      model: Optional[EnergyModel] = None, tau: float = 0.5,
                      freq_key: str = "freq", ids: Optional[Sequence[str]] = None) -> list:
        """Nearest ``fetch_k`` candidates reranked by energy; the best ``k`` with energy/weight."""
        hits = self.search(query, max(k, fetch_k), filter=filter, with_vectors=True, ids=ids)
        q = normalize_rows(query, self.dim, "query vector")[0]
        return energy_rerank(q, hits, model, tau, freq_key)[:k]


def freq_prior(md: Mapping[str, Any], key: str) -> float:
    v = md.get(key, 1)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else 1.0


__all__ = ["relevance", "normalize_rows", "mmr_select", "energy_scores", "energy_rerank",
           "rank_by_energy", "freq_prior", "RerankedSearch", "batch_rows"]
