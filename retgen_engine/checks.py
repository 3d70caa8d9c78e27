"""Validation at the API boundary, shared by the engine, the document store, the CLI and the
adapters: every refusal is an :class:`ArgumentError` (both a ``ValueError`` and a
``TypeError``) that names the argument, the value and what is allowed. Numpy scalars are
accepted wherever Python numbers are.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np


class ArgumentError(ValueError, TypeError):
    """A refused argument: the message names it, its value and what is allowed."""


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def int_arg(name: str, v: Any, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """``v`` as an int within [lo, hi] (bounds inclusive, None: unbounded)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ArgumentError(f"{name}={_show(v)}: must be an int{_range(lo, hi)}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ArgumentError(f"{name}={v}: must be an int{_range(lo, hi)}")
    return v


def float_arg(name: str, v: Any, lo: Optional[float] = None, hi: Optional[float] = None,
              lo_open: bool = False, hi_open: bool = False) -> float:
    """``v`` as a finite float within its bounds (``*_open``: the bound itself excluded)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{name}={_show(v)}: must be a number{_frange(lo, hi, lo_open, hi_open)}")
    x = float(v)
    bad = not math.isfinite(x)
    if lo is not None:
        bad |= x <= lo if lo_open else x < lo
    if hi is not None:
        bad |= x >= hi if hi_open else x > hi
    if bad:
        raise ArgumentError(f"{name}={_show(v)}: must be a finite number{_frange(lo, hi, lo_open, hi_open)}")
    return x


def optional(check, name: str, v: Any, *args, **kw):
    return None if v is None else check(name, v, *args, **kw)


def str_list_arg(name: str, v: Any, allow_one: bool = False, item: Optional[str] = None
                 ) -> list[str]:
    """A list of strings (``allow_one``: a single string is a list of one). ``item`` names
    one element in the refusal ("id 0 is 7 (int); ids must be strings")."""
    if isinstance(v, str):
        if allow_one:
            return [v]
        raise ArgumentError(f"{name}={_show(v)}: must be a list of strings, not one string (wrap "
                            "a single one in a list)")
    if isinstance(v, (bytes, bytearray, dict)) or not isinstance(v, Iterable):
        raise ArgumentError(f"{name}={_show(v)}: must be a list of strings")
    out = list(v)
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise ArgumentError(f"{item or name + ' item'} {i} is {_show(x)} "
                                f"({type(x).__name__}); {name} must be strings")
    return out


def token_ids_arg(name: str, v: Any, vocab_size: int, allow_empty: bool = False) -> np.ndarray:
    """int64 token ids, each in [0, vocab_size)."""
    if isinstance(v, (str, bytes)):
        raise ArgumentError(f"{name}={_show(v)}: must be a sequence of token ids")
    a = np.asarray(v)
    if a.ndim != 1 or not (a.dtype.kind in "iu" or (a.size == 0 and a.dtype.kind == "f")):
        raise ArgumentError(f"{name}: must be a 1-d sequence of int token ids, got "
                        f"{a.dtype} of shape {a.shape}")
    a = a.astype(np.int64)
    if not allow_empty and a.size == 0:
        raise ArgumentError(f"{name}: is empty; at least one token id is needed")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        bad = a[(a < 0) | (a >= vocab_size)][0]
        raise ArgumentError(f"{name}: token id {int(bad)} is outside [0, {vocab_size}) (the "
                         "vocabulary size)")
    return a


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    return f" <= {hi}" if hi is not None else ""


def _frange(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


__all__ = ["ArgumentError", "int_arg", "float_arg", "optional", "str_list_arg", "token_ids_arg"]

