"""Index and search parameters of the Milvus backend (:mod:`.milvus`), and what Milvus built.

Requested index: ``index_type`` (FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ, HNSW) or, when it is None,
the one :class:`~retgen_engine.config.IndexConfig`'s faiss ``spec`` names (``"auto"`` and
``"Flat"``: FLAT; ``"IVF1024,Flat"``, ``"IVF1024,SQ8"``, ``"IVF1024,PQ48"`` / ``"PQ48x4"``,
``"HNSW32"``). Build parameters: ``nlist`` from ``IndexConfig.nlist`` (default 128, Milvus'
own), ``m``/``nbits`` from ``pq_nsplits``/``pq_nbits``, HNSW ``M=16, efConstruction=200``;
``index_params`` overrides any of them. Search: ``nprobe`` (IVF; default
``IndexConfig.nprobe``) or ``ef`` (HNSW; default 64, never below the number of candidates).
The metric is inner product: for unit vectors the store's distance is ``d = 2 - 2 ip``.

Read-back (:func:`read_back`): ``describe_index`` says what the engine *reports*; on a Milvus
server that is what it built. Milvus Lite reports the requested type whatever it does: it
builds FLAT, IVF_FLAT, IVF_SQ8 and HNSW per flushed segment (in a background thread; rows not
yet flushed are searched by brute force), but IVF_PQ fails in its background build and every
segment is then searched by brute force. The read-back asks Milvus Lite's own index factory
whether it can build the requested type, and counts the index files of its segments.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..config import IndexConfig

log = logging.getLogger(__name__)

INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW")
METRIC = "IP"
VECTOR = "vector"
DEFAULT_NLIST = 128
HNSW_DEFAULTS = {"M": 16, "efConstruction": 200}
DEFAULT_EF = 64
_IVF = re.compile(r"^IVF(\d+),(Flat|SQ8|PQ(\d+)(?:x(\d+))?)(np|fs)?$")
_HNSW = re.compile(r"^HNSW(\d+)(,Flat)?$")


def requested_index(index_type: Optional[str], cfg: IndexConfig,
                    overrides: Optional[Mapping[str, Any]] = None) -> tuple[str, dict]:
    """``(index_type, build params)`` for ``index_type`` or ``cfg.spec`` (module docstring)."""
    params: dict[str, Any] = {}
    if index_type is None:
        spec = cfg.spec.strip()
        m_ivf, m_hnsw = _IVF.match(spec), _HNSW.match(spec)
        if spec in ("auto", "Flat", "IDMap2,Flat"):
            index_type = "FLAT"
        elif m_ivf:
            params["nlist"] = int(m_ivf.group(1))
            kind = m_ivf.group(2)
            index_type = {"Flat": "IVF_FLAT", "SQ8": "IVF_SQ8"}.get(kind, "IVF_PQ")
            if index_type == "IVF_PQ":
                params.update(m=int(m_ivf.group(3)), nbits=int(m_ivf.group(4) or 8))
        elif m_hnsw:
            index_type, params["M"] = "HNSW", int(m_hnsw.group(1))
        else:
            raise ValueError(f"index_config.spec={spec!r} has no Milvus equivalent; pass "
                             f"index_type= one of {', '.join(INDEX_TYPES)}")
    index_type = str(index_type).upper()
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type={index_type!r}; allowed: {', '.join(INDEX_TYPES)}")
    if index_type.startswith("IVF"):
        params.setdefault("nlist", cfg.nlist or DEFAULT_NLIST)
    if index_type == "IVF_PQ":
        params.setdefault("m", cfg.pq_nsplits)
        params.setdefault("nbits", cfg.pq_nbits)
    if index_type == "HNSW":
        params = {**HNSW_DEFAULTS, **params}
    params.update(dict(overrides or {}))
    return index_type, params


def check_dim(index_type: str, params: Mapping[str, Any], dim: int) -> None:
    if index_type == "IVF_PQ" and dim % int(params["m"]):
        raise ValueError(f"IVF_PQ m={params['m']} must divide the dimension {dim}")


def search_params(index_type: str, k: int, nprobe: Optional[int], ef: Optional[int],
                  default_nprobe: int) -> dict:
    """Per-call search parameters (``nprobe`` for IVF, ``ef`` for HNSW)."""
    for name, v in (("nprobe", nprobe), ("ef", ef)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or v < 1):
            raise ValueError(f"{name}={v!r} must be an int >= 1")
    if index_type.startswith("IVF"):
        return {"metric_type": METRIC, "params": {"nprobe": int(nprobe or default_nprobe)}}
    if index_type == "HNSW":
        return {"metric_type": METRIC, "params": {"ef": max(int(ef or DEFAULT_EF), k)}}
    return {"metric_type": METRIC, "params": {}}


def lite_path(uri: str) -> Optional[str]:
    """The local directory of a Milvus Lite URI (a path ending in ``.db``), else None."""
    if "://" in uri:
        return None
    return os.path.abspath(uri) if uri.endswith(".db") else None


def read_back(client: Any, collection: str, requested: str, params: Mapping[str, Any],
              lite: Optional[str], dim: int) -> dict:
    """What the engine reports and (as far as it can be known) built for the vector index:
    ``reported`` (describe_index's type and params), ``built``, ``honoured``, and on Milvus
    Lite ``segments`` / ``indexed_segments`` (flushed segments and their index files)."""
    try:
        desc = client.describe_index(collection, VECTOR) or {}
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        desc = {"error": str(e)}
    reported = str(desc.get("index_type", "unknown")).upper()
    out = {"requested": requested, "requested_params": dict(params), "reported": reported,
           "reported_params": {k: v for k, v in desc.items()
                               if k not in ("index_type", "field_name", "index_name")}}
    built, note = reported, None
    if lite is not None:
        ok, why = _lite_can_build(requested, dict(params), dim)
        if not ok:
            built, note = "BRUTE_FORCE", (f"Milvus Lite reports {reported} but cannot build "
                                         f"it ({why}); every segment is searched by brute force")
        out.update(lite_segments(lite, collection, requested))
    elif reported != requested:
        note = f"requested {requested}, the server reports {reported}"
    out.update(built=built, honoured=built == requested, warning=note)
    return out


def _lite_can_build(index_type: str, params: dict, dim: int) -> tuple[bool, str]:
    try:
        from milvus_lite.index.factory import build_index_from_spec
        from milvus_lite.index.spec import IndexSpec
    except ImportError as e:
        return True, f"cannot check: {e}"
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((max(512, 4 * 2 ** int(params.get("nbits", 8))), dim))
    small = {**params, **({"nlist": 4} if "nlist" in params else {})}  # only: can it build?
    try:
        build_index_from_spec(IndexSpec(VECTOR, index_type, METRIC, small),
                              probe.astype(np.float32))
    except NotImplementedError as e:
        return False, str(e).split(";")[0]
    except Exception as e:  # noqa: BLE001 - a failed probe build is what we report
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def lite_segments(lite: str, collection: str, index_type: str) -> dict:
    root = Path(lite) / "collections" / collection / "partitions"
    segs = list(root.glob("*/data/*.parquet"))
    idx = [p for p in root.glob("*/indexes/*") if f".{VECTOR}.{index_type.lower()}." in p.name]
    return {"segments": len(segs), "indexed_segments": len(idx)}


__all__ = ["INDEX_TYPES", "METRIC", "VECTOR", "requested_index", "check_dim", "search_params",
           "lite_path", "read_back",
           "lite_segments"]
