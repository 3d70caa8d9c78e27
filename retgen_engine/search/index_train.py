"""Training a faiss index with a progress bar that moves.

``index.train`` is one faiss call: for an IVF index it runs the coarse k-means (``cp.niter``
iterations over up to 256 vectors per list) and then trains the encoder (the PQ codebooks on
the residuals), all before the bar could move once. An IVF index over a flat coarse quantizer
is therefore trained in steps here: its k-means one iteration per faiss call (faiss's
``Clustering`` continues from the centroids it holds, with the same seeded sample, so the
centroids equal those of one call exactly: tests/test_index.py), then the rest in one call,
which skips the coarse quantizer since it holds its ``nlist`` trained centroids. Other indexes
train in one call.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _staged_ivf(index: Any):
    """The index as an IVF that can be trained in steps (flat L2 coarse quantizer, nothing in
    it yet, no transform in front), or None."""
    import faiss

    idx = faiss.downcast_index(index)
    if not isinstance(idx, faiss.IndexIVF):
        return None
    q = faiss.downcast_index(idx.quantizer)
    if not isinstance(q, faiss.IndexFlat) or idx.metric_type != faiss.METRIC_L2 or q.ntotal:
        return None
    return idx


def train_index(index: Any, sample: np.ndarray, desc: str = "training index",
                progress: bool = False) -> None:
    """``index.train(sample)``, with a bar of one step per k-means iteration plus one."""
    import faiss
    from tqdm.auto import tqdm

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    ivf = _staged_ivf(index)
    niter = int(ivf.cp.niter) if ivf is not None else 0
    with tqdm(total=niter + 1, desc=desc, unit="step", disable=not progress) as bar:
        if ivf is not None:
            clus = faiss.Clustering(ivf.d, ivf.nlist, ivf.cp)
            clus.niter = 1
            assign = faiss.IndexFlatL2(ivf.d)
            for _ in range(niter):
                clus.train(sample, assign)
                bar.update(1)
            q = ivf.quantizer
            q.reset()
            q.add(faiss.vector_to_array(clus.centroids).reshape(ivf.nlist, ivf.d))
        index.train(sample)
        bar.update(1)
