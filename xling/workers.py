"""Work spread over processes on one machine, results in input order: what the corpus stage's `--workers` runs.

    for result in ordered_map(fn, items, workers=2):   # fn(item) in worker processes, yielded in items' order
        ...

The engine is the standard library's `ProcessPoolExecutor` (spawned processes: safe beside threads a parent may
hold, e.g. torch's). Items are consumed lazily and at most `workers * ahead` are in flight, so a slow consumer
holds a bounded number of results. A worker's exception is raised in the caller as it was raised (an XlingError
stays one line); a worker killed by the system becomes one WorkerLost (an XlingError that leaves a resumable
stage's finished work in place); the rest of the work is cancelled. `workers <= 1` runs `fn` in this process, with
no pool at all.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any

from xling.errors import WorkerLost


def ordered_map(fn: Callable[[Any], Any], items: Iterable, workers: int, ahead: int = 2,
                what: str = "a worker", after: str = "nothing was written: run the command again") -> Iterator:
    """fn(item) for each item, in order, computed by `workers` processes. `fn` and the items must pickle (a
    module-level function, or functools.partial of one). `after`: what the error for a killed worker says was
    left and what to do."""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque = deque()
    try:
        while True:
            try:  # a dead worker breaks the pool: waiting for a result or submitting the next item says so
                pending.extend(pool.submit(fn, item) for item in islice(it, workers * ahead - len(pending)))
                if not pending:
                    return
                result = pending.popleft().result()
            except BrokenProcessPool:
                raise WorkerLost(f"{what} process died (killed by the system, out of memory?); {after}, with "
                                 f"fewer workers if memory is short") from None
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
