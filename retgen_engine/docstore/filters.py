"""Metadata filters for the document store, compiled once into a predicate.

A filter is either a python callable ``metadata -> bool`` or a dict in a small Mongo-like
language::

    {"genre": "news"}                          # plain value: equality ($eq)
    {"year": {"$gte": 2000, "$lt": 2010}}      # several operators on one key: all must hold
    {"$or": [{"genre": "news"}, {"tags": {"$in": ["a", "b"]}}]}
    {"$not": {"genre": "news"}}
    {"tags": {"$any": ["a", "b"]}, "title": {"$itext_match": "weather"}}

Every operator is defined once, in :data:`OPERATORS` (name -> :class:`Operator`); the
LangChain adapter passes these dicts through, the LlamaIndex adapter translates its
``FilterOperator`` names onto them, and another backend can translate the same table.
Field operators (``{"key": {"$op": operand}}``; ``v`` is the record's value of ``key``):

- ``$eq`` / ``$ne``: ``v == operand`` / ``v != operand`` (the operand may be any value);
- ``$gt $gte $lt $lte``: order comparisons with a scalar operand; incomparable types (e.g. a
  string and a number) do not match;
- ``$in`` / ``$nin``: ``v`` is / is not one of the operand's values (a list);
- ``$has``: ``v`` is a list that contains the operand (LlamaIndex's CONTAINS);
- ``$any`` / ``$all``: ``v`` is a list holding at least one / every value of the operand (a
  list; ``$all`` of an empty list matches any list);
- ``$text_match`` / ``$itext_match``: ``v`` is a string containing the operand as a substring
  (``$itext_match``: ignoring case); a non-string operand matches nothing;
- ``$empty``: with ``true``, the key is missing or ``v`` is ``None``, ``""`` or ``[]``; with
  ``false``, ``v`` is present and none of those.

Logical operators: ``$and`` / ``$or`` (a non-empty list of filters) and ``$not`` (one filter).
Several keys at the top level are and-ed; ``{}`` matches everything.

Documented behaviour for a key missing from a record's metadata: the record does not match
any field operator, including ``$ne`` and ``$nin`` (a missing value is not "different", it is
unknown) -- the one exception is ``{"$empty": true}``; wrap the condition in ``$not`` to
select records without the key. Unknown operators and malformed operands raise
``ValueError`` when the filter is compiled, before any search runs.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

Predicate = Callable[[Mapping[str, Any]], bool]
Filter = Union[Mapping[str, Any], Callable[[Mapping[str, Any]], bool]]

_MISSING = object()
_LISTS = (list, tuple, set, frozenset)


@dataclass(frozen=True)
class Operator:
    """One filter operator: its name, ``kind`` (``"field"``: under a key; ``"logical"``: combines
    filters), what its ``operand`` is (``"any"``, ``"scalar"``, ``"list"``, ``"bool"``,
    ``"filter"``, ``"filters"``), whether it can match a record without the key, and a one-line
    description. ``test(value, operand)`` decides a present value (field operators)."""

    name: str
    kind: str
    operand: str
    doc: str
    matches_missing: bool = False
    test: Callable[[Any, Any], bool] | None = field(default=None, repr=False, compare=False)


def _compare(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def test(v: Any, operand: Any) -> bool:
        try:
            return bool(fn(v, operand))
        except TypeError:  # e.g. "a" < 1: incomparable values do not match
            return False
    return test


def _text(fold: bool) -> Callable[[Any, Any], bool]:
    def test(v: Any, operand: Any) -> bool:
        if not isinstance(v, str) or not isinstance(operand, str):
            return False
        return operand.lower() in v.lower() if fold else operand in v
    return test


def _empty(v: Any) -> bool:
    return v in (None, "", [])


_FIELD = [
    Operator("$eq", "field", "any", "equal to the operand", test=_compare(operator.eq)),
    Operator("$ne", "field", "any", "not equal to the operand", test=_compare(operator.ne)),
    Operator("$gt", "field", "scalar", "greater than", test=_compare(operator.gt)),
    Operator("$gte", "field", "scalar", "greater than or equal", test=_compare(operator.ge)),
    Operator("$lt", "field", "scalar", "less than", test=_compare(operator.lt)),
    Operator("$lte", "field", "scalar", "less than or equal", test=_compare(operator.le)),
    Operator("$in", "field", "list", "one of the values", test=lambda v, vs: v in vs),
    Operator("$nin", "field", "list", "none of the values", test=lambda v, vs: v not in vs),
    Operator("$has", "field", "any", "a list containing the operand",
             test=lambda v, x: isinstance(v, list) and x in v),
    Operator("$any", "field", "list", "a list holding at least one of the values",
             test=lambda v, vs: isinstance(v, list) and any(x in v for x in vs)),
    Operator("$all", "field", "list", "a list holding every one of the values",
             test=lambda v, vs: isinstance(v, list) and all(x in v for x in vs)),
    Operator("$text_match", "field", "any", "a string containing the operand",
             test=_text(False)),
    Operator("$itext_match", "field", "any", "a string containing the operand, ignoring case",
             test=_text(True)),
    Operator("$empty", "field", "bool", "true: missing, None, '' or []; false: anything else",
             matches_missing=True, test=lambda v, want: _empty(v) == want),
]
_LOGICAL = [
    Operator("$and", "logical", "filters", "every filter of the list matches"),
    Operator("$or", "logical", "filters", "at least one filter of the list matches"),
    Operator("$not", "logical", "filter", "the filter does not match"),
]
#: Every operator of the dict language, by name (field operators first, in documented order).
OPERATORS: dict[str, Operator] = {op.name: op for op in _FIELD + _LOGICAL}
FIELD_OPERATORS = tuple(op.name for op in _FIELD)
LOGICAL_OPERATORS = tuple(op.name for op in _LOGICAL)


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


def check_operand(key: str, name: Any, operand: Any) -> tuple["Operator", Any]:
    """(the field operator ``name``, its operand as it takes it: a list for list operators);
    ValueError for an unknown operator or an operand of the wrong kind. Every backend's
    translation starts here, so all refuse the same filters."""
    op = OPERATORS.get(name) if isinstance(name, str) else None
    if op is None or op.kind != "field":
        raise ValueError(f"unknown filter operator {name!r} on key {key!r}; allowed: "
                         f"{', '.join(FIELD_OPERATORS)}")
    if op.operand == "scalar" and isinstance(operand, (list, tuple, set, dict)):
        raise ValueError(f"{name} on {key!r} takes a scalar, got {operand!r}")
    if op.operand == "list":
        if not isinstance(operand, _LISTS):
            raise ValueError(f"{name} on {key!r} takes a list of values, got {operand!r}")
        operand = list(operand)
    if op.operand == "bool" and not isinstance(operand, bool):
        raise ValueError(f"{name} on {key!r} takes true or false, got {operand!r}")
    return op, operand


def _compile_op(key: str, name: Any, operand: Any) -> Predicate:
    op, operand = check_operand(key, name, operand)
    test, missing = op.test, op.matches_missing and operand is True

    def pred(md: Mapping[str, Any]) -> bool:
        v = md.get(key, _MISSING)
        if v is _MISSING:
            return missing
        return test(v, operand)
    return pred


__all__ = ["Operator", "OPERATORS", "FIELD_OPERATORS", "LOGICAL_OPERATORS", "Filter",
           "Predicate", "compile_filter", "check_operand"]
