"""LlamaIndex ``MetadataFilters`` -> the engine's dict filters (and a predicate over metadata).

A pure name translation onto :data:`retgen_engine.docstore.filters.OPERATORS`, where every
operator is defined (so a key missing from the metadata never matches, as in the LangChain
adapter; IS_EMPTY matches it). Operators: EQ NE GT GTE LT LTE IN NIN, TEXT_MATCH
(substring), TEXT_MATCH_INSENSITIVE, CONTAINS (list contains value), ANY / ALL (list shares
any / all of the values), IS_EMPTY (key missing, None, "" or []); conditions AND, OR, NOT,
nested.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,
                                                  MetadataFilters)

from retgen_engine.docstore.filters import OPERATORS, compile_filter

Predicate = Callable[[Mapping[str, Any]], bool]

#: LlamaIndex operator -> the engine's dict-filter operator
NAMES: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in", FilterOperator.NIN: "$nin",
    FilterOperator.TEXT_MATCH: "$text_match",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "$itext_match",
    FilterOperator.CONTAINS: "$has", FilterOperator.ANY: "$any", FilterOperator.ALL: "$all",
    FilterOperator.IS_EMPTY: "$empty",
}


def _operand(name: str, value: Any) -> Any:
    """The dict operand for a LlamaIndex value: list operators take a scalar as a one-item
    list; IS_EMPTY ignores its value."""
    kind = OPERATORS[name].operand
    if kind == "list":
        return list(value) if isinstance(value, (list, tuple, set)) else [value]
    return True if kind == "bool" else value


def _leaf(f: MetadataFilter) -> dict:
    op = FilterOperator(f.operator)
    if op not in NAMES:
        raise ValueError(f"filter operator {op.value!r} on {f.key!r} is not supported; allowed: "
                         f"{', '.join(o.value for o in NAMES)}")
    return {f.key: {NAMES[op]: _operand(NAMES[op], f.value)}}


def to_dict_filter(filters: Optional[MetadataFilters]) -> Optional[dict]:
    """The dict filter for ``filters`` (None for no filter); unsupported parts raise ValueError."""
    if filters is None:
        return None
    parts = [to_dict_filter(f) if isinstance(f, MetadataFilters) else _leaf(f)
             for f in filters.filters]
    cond = FilterCondition(filters.condition or FilterCondition.AND)
    every = {"$and": parts} if parts else {}  # {}: matches everything
    if cond == FilterCondition.AND:
        return every
    if cond == FilterCondition.OR:
        return {"$or": parts} if parts else {"$not": {}}  # no alternative: matches nothing
    if cond == FilterCondition.NOT:  # NOT of the and-ed sub-filters
        return {"$not": every}
    raise ValueError(f"filter condition {cond!r} is not supported (and, or, not)")


def to_predicate(filters: Optional[MetadataFilters]) -> Optional[Predicate]:
    """A predicate for ``filters`` (None for no filter); unsupported parts raise ValueError."""
    return compile_filter(to_dict_filter(filters))
