"""Dict filters (:mod:`.filters`) as Milvus boolean expressions, evaluated inside Milvus.

Each record's metadata is stored as the JSON field ``metadata``; next to it the JSON field
``md_kinds`` holds, per top-level key, the kind of its value (:func:`kinds_of`: ``n`` number,
``b`` bool, ``s`` string, ``z`` None, ``e`` empty list, ``l`` other list, ``o`` dict). The kinds
make every operator exact where Milvus' own JSON semantics differ from the faiss store's:

- a missing key and an explicit ``None`` are both "null" to Milvus; the faiss store treats
  ``None`` as a present value (``{"k": {"$ne": 1}}`` matches ``{"k": None}``);
- Milvus compares values of different types as *unknown* (three-valued logic: ``not`` of
  unknown is unknown), the faiss store as *false* (``$not`` of it matches);
- Milvus has no expression for "is a list" or "is an empty list".

Every leaf is therefore ``(exists md_kinds["k"] and <kind test> and <comparison>)``, which is
true or false, never unknown, so ``$and $or $not`` combine exactly as in Python. Keys are
validated (no quotes, backslashes or control characters: they go inside ``metadata["..."]``)
and every value is written as a literal (:func:`literal`: strings quoted with the only escapes
Milvus' grammar has), so no key or value can change the expression's structure.

Not expressible exactly (``ValueError`` naming the operator): ``$eq``/``$ne``/``$in``/``$nin``/
``$has`` with a list or dict operand (``$eq: []`` is allowed); ``$text_match`` of an operand
holding the LIKE wildcards ``%`` or ``_`` or a backslash (Milvus Lite's LIKE has no escape
character); ``$itext_match`` of an operand with cased letters (Milvus has no case-insensitive
match; an operand without cased letters is the same as ``$text_match``). A callable filter
cannot run in Milvus (:class:`CallableFilterError`).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional, Sequence

from .filters import FIELD_OPERATORS, LOGICAL_OPERATORS, check_operand

META = "metadata"
KINDS = "md_kinds"
PK = "pk"
TRUE, FALSE = "true", "false"
_BAD_KEY = re.compile(r"[\"'\\\x00-\x1f\x7f\[\]]")
_NUMERIC = ("n", "b")   # Python compares bools as numbers (True == 1, True > 0)
_MAX_INT = 2 ** 63 - 1


class NotExpressibleError(ValueError):
    """A valid filter that Milvus cannot evaluate exactly (a store made with
    ``callable_filters="client"`` evaluates it here instead)."""


class CallableFilterError(TypeError):
    """A callable filter was given to a store whose filters run inside Milvus."""


def kinds_of(md: Mapping[str, Any]) -> dict[str, str]:
    """The kind of each top-level metadata value (the ``md_kinds`` field)."""
    return {k: _kind(v) for k, v in md.items()}


def _kind(v: Any) -> str:
    if v is None:
        return "z"
    if isinstance(v, bool):
        return "b"
    if isinstance(v, (int, float)):
        return "n"
    if isinstance(v, str):
        return "s"
    if isinstance(v, (list, tuple)):
        return "l" if len(v) else "e"
    return "o"


def check_key(key: Any) -> str:
    """A metadata key safe inside ``metadata["..."]``; ValueError names a bad one."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"filter key {key!r} must be a non-empty string")
    if _BAD_KEY.search(key):
        raise NotExpressibleError(f"filter key {key!r} cannot be used in a Milvus filter: keys may not "
                         "contain quotes, backslashes, brackets or control characters")
    return key


def quote(s: str) -> str:
    """``s`` as a Milvus string literal (the escapes both Milvus and Milvus Lite read)."""
    out = s.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def literal(v: Any, op: str) -> str:
    """A scalar as a Milvus literal; ValueError for what a literal cannot hold."""
    if isinstance(v, bool):
        return TRUE if v else FALSE
    if isinstance(v, int):
        if abs(v) > _MAX_INT:
            raise ValueError(f"{op}: integer {v} does not fit Milvus' int64")
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise NotExpressibleError(f"{op}: {v!r} cannot be written in a Milvus filter")
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    raise NotExpressibleError(f"{op}: operand {v!r} ({type(v).__name__}) cannot be expressed exactly "
                     "in a Milvus filter")


def ids_expr(ids: Sequence[str]) -> str:
    """``pk in [...]`` for string ids (``false`` for none)."""
    return f"{PK} in [{', '.join(quote(x) for x in ids)}]" if ids else FALSE


def to_expr(flt: Any) -> Optional[str]:
    """The Milvus expression for a dict filter (None: no filter); ValueError for a malformed
    or inexpressible one, :class:`CallableFilterError` for a callable."""
    if flt is None:
        return None
    if callable(flt):
        raise CallableFilterError(
            "a callable filter cannot run inside Milvus; pass a dict filter (every operator of "
            "retgen_engine.docstore.filters), or create the store with callable_filters='client'"
            " to evaluate callables in this process over every record's metadata")
    if not isinstance(flt, Mapping):
        raise ValueError(f"filter must be a dict or a callable(metadata) -> bool, "
                         f"got {type(flt).__name__}: {flt!r}")
    return _dict(flt)


def _dict(flt: Mapping[str, Any]) -> str:
    parts = []
    for key, value in flt.items():
        if not isinstance(key, str):
            raise ValueError(f"filter key {key!r} must be a string")
        parts.append(_logical(key, value) if key.startswith("$") else _field(key, value))
    return _join(parts, "and") if parts else TRUE


def _join(parts: list[str], op: str) -> str:
    return parts[0] if len(parts) == 1 else "(" + f" {op} ".join(parts) + ")"


def _logical(op: str, value: Any) -> str:
    if op == "$not":
        if not isinstance(value, Mapping):
            raise ValueError(f"$not takes one filter dict, got {value!r}")
        return f"(not {_dict(value)})"
    if op in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{op} takes a non-empty list of filter dicts, got {value!r}")
        for v in value:
            if not isinstance(v, Mapping):
                raise ValueError(f"{op} items must be filter dicts, got {v!r}")
        return _join([_dict(v) for v in value], op[1:])
    raise ValueError(f"unknown logical operator {op!r}; allowed: {', '.join(LOGICAL_OPERATORS)} "
                     f"(field operators go under a key: {{'field': {{'$gt': 1}}}})")


def _field(key: str, cond: Any) -> str:
    check_key(key)
    if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
        return _join([_op(key, op, operand) for op, operand in cond.items()], "and")
    return _op(key, "$eq", cond)


def _op(key: str, name: Any, operand: Any) -> str:
    _, operand = check_operand(key, name, operand)
    return _LEAVES[name](key, operand, name)


# -- leaves: each is true or false for every record (module docstring) ----------------
def _path(key: str) -> str:
    return f'{META}["{key}"]'


def _kinds(key: str, kinds: Sequence[str]) -> str:
    k = f'{KINDS}["{key}"]'
    alts = " or ".join(f'{k} == "{x}"' for x in kinds)
    return f"(exists {k} and ({alts}))"


def _present(key: str) -> str:
    return f'(exists {KINDS}["{key}"])'


def _eq(key: str, x: Any, op: str) -> str:
    if x is None:
        return _kinds(key, ["z"])
    if isinstance(x, (list, tuple)) and not x:
        return _kinds(key, ["e"])
    if isinstance(x, (list, tuple, set, dict)):
        raise NotExpressibleError(f"{op} on {key!r}: comparing with a list or dict ({x!r}) cannot be "
                         "expressed exactly in a Milvus filter")
    kinds = ["s"] if isinstance(x, str) else list(_NUMERIC)
    return f"({_kinds(key, kinds)} and {_path(key)} == {literal(x, op)})"


def _ne(key: str, x: Any, op: str) -> str:
    return f"({_present(key)} and not {_eq(key, x, op)})"


def _order(sym: str):
    def leaf(key: str, x: Any, op: str) -> str:
        if x is None:
            return FALSE  # Python: v < None raises TypeError, i.e. no match
        kinds = ["s"] if isinstance(x, str) else list(_NUMERIC)
        return f"({_kinds(key, kinds)} and {_path(key)} {sym} {literal(x, op)})"
    return leaf


def _in(key: str, xs: list, op: str) -> str:
    return _join([_eq(key, x, op) for x in xs], "or") if xs else FALSE


def _nin(key: str, xs: list, op: str) -> str:
    return f"({_present(key)} and not {_in(key, xs, op)})" if xs else _present(key)


def _list_values(xs: Sequence[Any], op: str) -> str:
    for x in xs:
        if x is None or isinstance(x, (list, tuple, set, dict)):
            raise NotExpressibleError(f"{op}: list item {x!r} cannot be expressed exactly in a Milvus "
                             "filter (only strings, numbers and booleans)")
    return "[" + ", ".join(literal(x, op) for x in xs) + "]"


def _has(key: str, x: Any, op: str) -> str:
    return f"({_kinds(key, ['l'])} and json_contains({_path(key)}, {_list_values([x], op)[1:-1]}))"


def _any(key: str, xs: list, op: str) -> str:
    if not xs:
        return FALSE
    return f"({_kinds(key, ['l'])} and json_contains_any({_path(key)}, {_list_values(xs, op)}))"


def _all(key: str, xs: list, op: str) -> str:
    if not xs:
        return _kinds(key, ["l", "e"])
    return f"({_kinds(key, ['l'])} and json_contains_all({_path(key)}, {_list_values(xs, op)}))"


def _text(fold: bool):
    def leaf(key: str, x: Any, op: str) -> str:
        if not isinstance(x, str):
            return FALSE
        if fold and x.lower() != x.upper():
            raise NotExpressibleError(f"{op} on {key!r}: Milvus has no case-insensitive match, so "
                             f"{x!r} cannot be matched exactly; use $text_match, or a "
                             "callable filter with callable_filters='client'")
        if any(c in x for c in "%_\\"):
            raise NotExpressibleError(f"{op} on {key!r}: the operand {x!r} holds a LIKE wildcard (% or "
                             "_) or a backslash, which Milvus Lite's LIKE cannot escape")
        return f"({_kinds(key, ['s'])} and {_path(key)} like {quote('%' + x + '%')})"
    return leaf


def _empty(key: str, want: bool, op: str) -> str:
    empty = f'({_kinds(key, ["z", "e"])} or ({_kinds(key, ["s"])} and {_path(key)} == ""))'
    if want:
        return f"((not {_present(key)}) or {empty})"
    return f"({_present(key)} and not {empty})"


_LEAVES = {"$eq": _eq, "$ne": _ne, "$gt": _order(">"), "$gte": _order(">="),
           "$lt": _order("<"), "$lte": _order("<="), "$in": _in, "$nin": _nin, "$has": _has,
           "$any": _any, "$all": _all, "$text_match": _text(False),
           "$itext_match": _text(True), "$empty": _empty}
assert set(_LEAVES) == set(FIELD_OPERATORS), "every field operator has a Milvus translation"

__all__ = ["to_expr", "ids_expr", "kinds_of", "check_key", "quote", "literal",
           "CallableFilterError", "META", "KINDS", "PK"]
