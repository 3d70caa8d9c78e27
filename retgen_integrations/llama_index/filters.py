"""LlamaIndex ``MetadataFilters`` -> a predicate over a record's metadata.

Comparison operators reuse :mod:`retgen_engine.docstore.filters` (so a key missing from the metadata
never matches, as in the LangChain adapter). Also supported: TEXT_MATCH (substring),
TEXT_MATCH_INSENSITIVE, CONTAINS (list contains value), ANY / ALL (list shares any / all of
the values), IS_EMPTY (key missing, None, "" or []); conditions AND, OR, NOT, nested.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,
                                                  MetadataFilters)

from retgen_engine.docstore.filters import compile_filter

Predicate = Callable[[Mapping[str, Any]], bool]

_DICT_OPS = {FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
             FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte",
             FilterOperator.IN: "$in", FilterOperator.NIN: "$nin"}


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple, set)) else [v]


def _text(md, key, value, fold: bool) -> bool:
    v = md.get(key)
    if not isinstance(v, str) or not isinstance(value, str):
        return False
    return value.lower() in v.lower() if fold else value in v


_PY_OPS: dict[FilterOperator, Callable[[Mapping[str, Any], str, Any], bool]] = {
    FilterOperator.TEXT_MATCH: lambda md, k, v: _text(md, k, v, False),
    FilterOperator.TEXT_MATCH_INSENSITIVE: lambda md, k, v: _text(md, k, v, True),
    FilterOperator.CONTAINS: lambda md, k, v: isinstance(md.get(k), list) and v in md[k],
    FilterOperator.ANY: lambda md, k, v: isinstance(md.get(k), list)
    and any(x in md[k] for x in _as_list(v)),
    FilterOperator.ALL: lambda md, k, v: isinstance(md.get(k), list)
    and all(x in md[k] for x in _as_list(v)),
    FilterOperator.IS_EMPTY: lambda md, k, v: md.get(k) in (None, "", []),
}


def _leaf(f: MetadataFilter) -> Predicate:
    op = FilterOperator(f.operator)
    if op in _DICT_OPS:
        value = _as_list(f.value) if op in (FilterOperator.IN, FilterOperator.NIN) else f.value
        return compile_filter({f.key: {_DICT_OPS[op]: value}})
    if op in _PY_OPS:
        fn, key, value = _PY_OPS[op], f.key, f.value
        return lambda md: bool(fn(md, key, value))
    raise ValueError(f"filter operator {op.value!r} on {f.key!r} is not supported; allowed: "
                     f"{', '.join(o.value for o in (*_DICT_OPS, *_PY_OPS))}")


def to_predicate(filters: Optional[MetadataFilters]) -> Optional[Predicate]:
    """A predicate for ``filters`` (None for no filter); unsupported parts raise ValueError."""
    if filters is None:
        return None
    parts = [to_predicate(f) if isinstance(f, MetadataFilters) else _leaf(f)
             for f in filters.filters]
    cond = FilterCondition(filters.condition or FilterCondition.AND)
    if cond == FilterCondition.AND:
        return lambda md: all(p(md) for p in parts)
    if cond == FilterCondition.OR:
        return lambda md: any(p(md) for p in parts)
    if cond == FilterCondition.NOT:  # NOT of the and-ed sub-filters
        return lambda md: not all(p(md) for p in parts)
    raise ValueError(f"filter condition {cond!r} is not supported (and, or, not)")
