"""An inner-product view of an L2 residual IVF-PQ index (``IndexConfig.ip_scan``): the same
codes scored with one query table for every inverted list."""
from __future__ import annotations

import numpy as np


class IPScan:
    """An inner-product view of an L2 residual IVF-PQ index: the same quantizer, PQ and
    inverted lists (shared, not copied), searched with ``search_preassigned`` after the L2
    probe. For unit vectors ``x = c + r`` the L2 order is the order of ``<q, c> + <q, r>``
    up to ``|x^|^2``; faiss scores that inner product with one query table for every list
    (it adds ``<q, c>`` per list itself), where L2 without faiss' (nlist * M * 256-float)
    precomputed table needs one table per list."""

    def __init__(self, index):
        import faiss

        self._owner = index  # keeps the lists and quantizer the view borrows alive
        ivf = self.ivf = faiss.downcast_index(index)
        self.view = faiss.IndexIVFPQ(ivf.quantizer, ivf.d, ivf.nlist, ivf.pq.M, ivf.pq.nbits,
                                     faiss.METRIC_INNER_PRODUCT)
        self.view.pq = ivf.pq  # a copy of the codebooks (M * 2^nbits * dsub floats)
        self.view.replace_invlists(ivf.invlists, False)
        self.view.is_trained = True

    @staticmethod
    def applies(index) -> bool:
        import faiss

        ivf = faiss.downcast_index(index)
        return (type(ivf) is faiss.IndexIVFPQ and ivf.by_residual and ivf.is_trained  # not PQR
                and ivf.metric_type == faiss.METRIC_L2 and ivf.pq.nbits == 8
                and ivf.polysemous_ht == 0)

    def nbytes(self) -> int:
        return int(self.view.pq.centroids.size()) * 4

    def search(self, q: np.ndarray, k: int, nprobe: int, selector,
               store_pairs: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) as L2 distances (exact for unit ``x``); with ``store_pairs`` I holds
        ``list << 32 | offset`` instead of ids."""
        import faiss

        Dq, Iq = self.ivf.quantizer.search(q, nprobe)  # faiss ignores Dq when scanning by IP
        qn = np.einsum("ij,ij->i", q, q)[:, None]
        S = np.empty((len(q), k), dtype=np.float32)
        I = np.empty((len(q), k), dtype=np.int64)
        params = (faiss.SearchParametersIVF(nprobe=nprobe, sel=selector) if selector is not None
                  else faiss.SearchParametersIVF(nprobe=nprobe))
        self.view.ntotal = self.ivf.ntotal
        self.view.search_preassigned_c(len(q), faiss.swig_ptr(q), k, faiss.swig_ptr(Iq),
                                       faiss.swig_ptr(Dq), faiss.swig_ptr(S), faiss.swig_ptr(I),
                                       store_pairs, params)
        hit = I >= 0  # empty slots hold -FLT_MAX: convert the hits only
        D = np.where(hit, qn + 1.0 - 2.0 * np.where(hit, S, 0.0), np.inf).astype(np.float32)
        return D, I

    def search_and_reconstruct(self, q: np.ndarray, k: int, nprobe: int):
        """(D, I, R) for one query, the hits decoded straight from their (list, offset)."""
        import faiss

        D, P = self.search(q, k, nprobe, None, store_pairs=True)
        ids = np.full(P.shape, -1, dtype=np.int64)
        R = np.zeros(P.shape + (self.ivf.d,), dtype=np.float32)
        inv = self.ivf.invlists
        for j, p in enumerate(P[0].tolist()):
            if p >= 0:
                lst, off = p >> 32, p & 0xFFFFFFFF
                ids[0, j] = inv.get_single_id(lst, off)
                self.ivf.reconstruct_from_offset(lst, off, faiss.swig_ptr(R[0, j]))
        return D, ids, R
