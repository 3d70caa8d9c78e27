"""Which encoder backend runs, as pure functions of the CPU's flags (testable without the CPU).

Backends: ``torch`` (float32 or bfloat16) and ``onnx`` (ONNX Runtime, float32 or int8 dynamic
quantization). ``auto`` takes the first available entry of :data:`RANKING` for the CPU's class:

* ``amx``: ``amx_bf16`` in the flags (Intel Sapphire Rapids and later): torch bfloat16 first,
  where AMX tiles make bf16 matmuls several times faster than float32 (not measured here);
* ``bf16``: ``avx512_bf16`` without AMX (AMD Zen 4/5, Intel Cooper Lake): measured by
  ``benchmarks/encoder.py`` on a Zen 4 EPYC, ONNX Runtime float32 is ~2.5x torch bfloat16 at
  8 word pieces and faster per single query, so it comes first; torch bfloat16 next;
* ``plain``: no native bf16: bf16 is never picked (emulated, slow); ONNX Runtime float32
  (~2.5x torch float32 measured), else torch float32.

ONNX is "available" when onnxruntime + onnx are installed and the model can be exported. int8
is never picked by ``auto`` (its vectors move enough to cost recall@10, and ONNX Runtime's
dynamic activation scales make a vector depend on its batch); ask for it with ``dtype="int8"``.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

BACKENDS = ("auto", "torch", "onnx")
DTYPES = ("auto", "float32", "bfloat16", "int8")
#: the (backend, dtype) pairs that exist; "auto" in either slot is resolved by :func:`resolve`.
VALID = {("torch", "float32"), ("torch", "bfloat16"), ("onnx", "float32"), ("onnx", "int8")}
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Choice:
    backend: str  # "torch" | "onnx"
    dtype: str  # "float32" | "bfloat16" | "int8"
    reason: str


def validate(backend: str, dtype: str) -> None:
    """Raise ValueError naming the offending value for unknown or impossible combinations."""
    if backend not in BACKENDS:
        raise ValueError(f"encoder backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ValueError(f"encoder dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if dtype == "int8" and backend == "torch":
        raise ValueError("encoder dtype 'int8' needs backend 'onnx' (or 'auto'), not 'torch'")
    if dtype == "bfloat16" and backend == "onnx":
        raise ValueError("encoder dtype 'bfloat16' needs backend 'torch' (or 'auto'), not 'onnx'")


#: per CPU class, the (backend, dtype) pairs auto tries in order (see the module docstring).
RANKING = {
    "amx": [("torch", "bfloat16"), ("onnx", "float32"), ("torch", "float32")],
    "bf16": [("onnx", "float32"), ("torch", "bfloat16"), ("torch", "float32")],
    "plain": [("onnx", "float32"), ("torch", "float32")],
}


def cpu_class(flags: Iterable[str]) -> str:
    flags = set(flags)
    if "amx_bf16" in flags:
        return "amx"
    return "bf16" if "avx512_bf16" in flags else "plain"


def choose(flags: Iterable[str], onnx_available: bool, backend: str = "auto",
           dtype: str = "auto") -> Choice:
    """The backend and dtype to run: a pure function of the CPU flags and what is installed.

    ``backend``/``dtype`` are the configured values; "auto" in either is filled in from
    :data:`RANKING`. Raises ValueError for a bad combination, or for an explicit ``onnx`` /
    ``int8`` when ONNX is unavailable.
    """
    validate(backend, dtype)
    cls = cpu_class(flags)
    if not onnx_available and (backend == "onnx" or dtype == "int8"):
        raise ValueError(f"encoder {'dtype int8' if dtype == 'int8' else 'backend onnx'} needs "
                         "the packages 'onnxruntime' and 'onnx' (pip install onnxruntime onnx) "
                         "and a Transformer + mean-pooling model with a tokenizer.json")
    if dtype == "int8":
        return Choice("onnx", "int8", "int8 asked for (ONNX Runtime dynamic quantization)")
    if dtype == "bfloat16" and cls == "plain":
        return Choice("torch", "bfloat16", "bfloat16 asked for (no native bf16: slow here)")
    for b, d in RANKING[cls]:
        if backend in ("auto", b) and dtype in ("auto", d) and (b != "onnx" or onnx_available):
            how = "asked for" if backend != "auto" and dtype != "auto" else \
                f"first available for a {cls!r} CPU"
            return Choice(b, d, how)
    return Choice(backend, dtype if dtype != "auto" else "float32", "asked for")


def has_native_bf16(flags: Iterable[str]) -> bool:
    return bool(NATIVE_BF16_FLAGS & set(flags))


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(val.split())
    except OSError:
        pass
    return frozenset()


def onnxruntime_installed() -> bool:
    return (importlib.util.find_spec("onnxruntime") is not None
            and importlib.util.find_spec("onnx") is not None)


def available_cores() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def batch_threads(requested: Optional[int] = None) -> int:
    """Threads for batch encoding: ``requested`` if > 0, else ``RETGEN_ENCODER_THREADS``,
    else the available cores."""
    if requested:
        return max(1, int(requested))
    env = os.environ.get("RETGEN_ENCODER_THREADS", "").strip()
    if env:
        try:
            v = int(env)
        except ValueError:
            raise ValueError(f"RETGEN_ENCODER_THREADS={env!r}: expected an integer") from None
        if v > 0:
            return v
    return available_cores()
