"""Metadata filters for the document store, compiled once into a predicate.

A filter is either a python callable ``metadata -> bool`` or a dict in a small Mongo-like
language::

    {"genre": "news"}                          # plain value: equality ($eq)
    {"year": {"$gte": 2000, "$lt": 2010}}      # several operators on one key: all must hold
    {"$or": [{"genre": "news"}, {"tags": {"$in": ["a", "b"]}}]}
    {"$not": {"genre": "news"}}

Field operators: ``$eq $ne $gt $gte $lt $lte $in $nin``; logical operators: ``$and $or``
(lists of filters) and ``$not`` (one filter). Several keys at the top level are and-ed.

Documented behaviour for a key missing from a record's metadata: the record does not match
any field operator, including ``$ne`` and ``$nin`` (a missing value is not "different", it is
unknown); wrap the condition in ``$not`` to select records without the key. Order comparisons
between incomparable types (e.g. a string and a number) do not match either. Unknown
operators and malformed operands raise ``ValueError`` when the filter is compiled, before
any search runs.
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Mapping, Union

Predicate = Callable[[Mapping[str, Any]], bool]
Filter = Union[Mapping[str, Any], Callable[[Mapping[str, Any]], bool]]

_MISSING = object()

_COMPARE = {
    "$eq": operator.eq, "$ne": operator.ne,
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le,
}
_MEMBERSHIP = ("$in", "$nin")
FIELD_OPERATORS = tuple(_COMPARE) + _MEMBERSHIP
LOGICAL_OPERATORS = ("$and", "$or", "$not")


def compile_filter(flt: Filter | None) -> Predicate | None:
    """A predicate over a metadata dict, or None for "no filter"; validates eagerly."""
    if flt is None:
        return None
    if callable(flt):
        return _safe_callable(flt)
    if not isinstance(flt, Mapping):
        raise ValueError(f"filter must be a dict or a callable(metadata) -> bool, "
                         f"got {type(flt).__name__}: {flt!r}")
    return _compile_dict(flt)


def _safe_callable(fn: Callable) -> Predicate:
    def pred(md: Mapping[str, Any]) -> bool:
        return bool(fn(md))
    return pred


def _compile_dict(flt: Mapping[str, Any]) -> Predicate:
    parts: list[Predicate] = []
    for key, value in flt.items():
        if not isinstance(key, str):
            raise ValueError(f"filter key {key!r} must be a string")
        if key.startswith("$"):
            parts.append(_compile_logical(key, value))
        else:
            parts.append(_compile_field(key, value))
    return _all(parts)


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda md: all(p(md) for p in parts)


def _compile_logical(op: str, value: Any) -> Predicate:
    if op == "$not":
        if not isinstance(value, Mapping):
            raise ValueError(f"$not takes one filter dict, got {value!r}")
        inner = _compile_dict(value)
        return lambda md: not inner(md)
    if op in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{op} takes a non-empty list of filter dicts, got {value!r}")
        subs = [compile_filter(v) if isinstance(v, Mapping) else _bad_sub(op, v) for v in value]
        if op == "$and":
            return lambda md: all(p(md) for p in subs)
        return lambda md: any(p(md) for p in subs)
    raise ValueError(f"unknown logical operator {op!r}; allowed: {', '.join(LOGICAL_OPERATORS)} "
                     f"(field operators go under a key: {{'field': {{'$gt': 1}}}})")


def _bad_sub(op: str, v: Any):
    raise ValueError(f"{op} items must be filter dicts, got {v!r}")


def _compile_field(key: str, cond: Any) -> Predicate:
    if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
        return _all([_compile_op(key, op, operand) for op, operand in cond.items()])
    return _compile_op(key, "$eq", cond)


def _compile_op(key: str, op: Any, operand: Any) -> Predicate:
    if op in _COMPARE:
        if isinstance(operand, (list, tuple, set, dict)) and op not in ("$eq", "$ne"):
            raise ValueError(f"{op} on {key!r} takes a scalar, got {operand!r}")
        fn = _COMPARE[op]

        def cmp(md: Mapping[str, Any]) -> bool:
            v = md.get(key, _MISSING)
            if v is _MISSING:
                return False
            try:
                return bool(fn(v, operand))
            except TypeError:  # e.g. "a" < 1: incomparable values do not match
                return False
        return cmp
    if op in _MEMBERSHIP:
        if not isinstance(operand, (list, tuple, set, frozenset)):
            raise ValueError(f"{op} on {key!r} takes a list of values, got {operand!r}")
        values = list(operand)
        negate = op == "$nin"

        def member(md: Mapping[str, Any]) -> bool:
            v = md.get(key, _MISSING)
            if v is _MISSING:
                return False
            return (v not in values) if negate else (v in values)
        return member
    raise ValueError(f"unknown filter operator {op!r} on key {key!r}; allowed: "
                     f"{', '.join(FIELD_OPERATORS)}")
