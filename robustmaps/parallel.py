"""Order-preserving parallel map over worker processes (results independent of the count)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def _single_thread() -> None:
    """Worker initialiser: one BLAS / torch thread per process (the pool is the parallelism)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def pmap(func: Callable, items: Iterable, workers: int = 1, chunksize: int = 1) -> Iterator:
    """``map(func, items)`` in ``workers`` forked processes, yielding results in input order.

    Forked workers see the parent's module globals, so large read-only inputs can be put in a
    module-level dict before the call instead of being pickled per item.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx, initializer=_single_thread) as pool:
        yield from pool.map(func, items, chunksize=chunksize)
