"""A generation step's query encoding run beside the rest of the step, on another core.

A step's pattern search starts with encoding its query (the encoder's forward pass for one text,
in ONNX Runtime or torch, which release the GIL); that does not depend on the back-off's
distribution, the context cache or the memory's n-gram counts (numpy, in the calling thread,
which holds the memory still). With the memory on, where the process may use two or more cores,
the encoding runs on a worker thread meanwhile and the search reads its vector; with one core,
or with the memory off (nothing long enough to overlap: measured no faster), it runs inline.
The workers are shared by the process (:func:`workers`), created on first use.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

from ..search.encoders_select import available_cores

_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None


@functools.lru_cache(maxsize=1)
def _cores() -> int:
    """The process's cores, read once (it reads the affinity mask and a cgroup file)."""
    return available_cores()


def workers() -> int:
    """How many threads may run a step's query encoding beside it (0: it runs inline):
    ``RETGEN_STEP_WORKERS`` if set (0 turns this off), else one fewer than the cores."""
    env = os.environ.get("RETGEN_STEP_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"RETGEN_STEP_WORKERS={env!r}: expected an integer >= 0")
        return int(env)
    return _cores() - 1


def inline(fn: Callable, *args, **kwargs) -> Future:
    """``fn(*args, **kwargs)`` run now, in the calling thread, as a finished future."""
    f: Future = Future()
    try:
        f.set_result(fn(*args, **kwargs))
    except BaseException as e:  # raised again by f.result(), as a worker's would be
        f.set_exception(e)
    return f


def submit(fn: Callable, *args, **kwargs) -> Future:
    """``fn(*args, **kwargs)`` on a worker thread, or :func:`inline` where there is none."""
    global _pool
    n = workers()
    if n < 1:
        return inline(fn, *args, **kwargs)
    with _lock:
        if _pool is None or _pool._max_workers != n:  # noqa: SLF001  (the setting changed)
            if _pool is not None:
                _pool.shutdown(wait=False)  # its queued work still runs; its threads then end
            _pool = ThreadPoolExecutor(n, thread_name_prefix="retgen-step")
    return _pool.submit(fn, *args, **kwargs)
