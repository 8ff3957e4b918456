"""The data stage's worker processes: a pool of ``num_proc`` processes that each get the stage config once,
and an in-order map with a bounded window (finished batches never pile up in memory).

The passes (usersim.data_prep.clean_pass, usersim.data_prep.condition_pass) define the functions the
workers run and read the config with :func:`worker_config`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator


from usersim.data_prep.config import DataPrepConfig


_WORKER_CFG: DataPrepConfig | None = None  # the stage config in a worker process


def _init_worker(cfg: DataPrepConfig) -> None:
    global _WORKER_CFG
    _WORKER_CFG = cfg


def resolve_num_proc(num_proc: int) -> int:
    """``num_proc`` as a process count: 0 = the CPU cores this process may run on (its affinity mask, so a
    container's or ``taskset``'s limit is respected), else the number given."""
    if num_proc < 0:
        raise ValueError(f"num_proc must be >= 0 (0 = one per core), got {num_proc}")
    if num_proc:
        return num_proc
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_pool(cfg: DataPrepConfig) -> Any:
    """``cfg.num_proc`` worker processes (None for 1): forked where the platform allows it, else
    spawned; each gets the config once."""
    if cfg.num_proc <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(cfg.num_proc, initializer=_init_worker, initargs=(cfg,))


def in_order(pool: Any, fn: Callable, tasks: Iterable, window: int) -> Iterator[Any]:
    """``fn`` over ``tasks`` in ``pool``, results in task order, at most ``window`` tasks in flight
    (so finished batches never pile up in memory)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def worker_config() -> DataPrepConfig:
    """The stage config of this worker process (set once by the pool's initializer)."""
    if _WORKER_CFG is None:
        raise RuntimeError("worker_config() outside a data-stage worker process")
    return _WORKER_CFG
