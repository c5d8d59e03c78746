"""Where work runs — compare's cells and tune's trials alike: here, in J worker processes,
or as Ray tasks.

A pool takes ``submit(key, fn, *args)`` and hands back ``(key, result)`` from
``next_done()`` as tasks finish, where ``result`` is what ``fn(*args)`` returned or the
exception it raised (the caller decides what a failure means). Only the driver writes
files, stores or studies; tasks get their inputs and return plain values.

``shared``: one object every task may read through :func:`shared_value` (tune's
validation view of the benchmark), shipped once per worker (a pool initializer) or once
per cluster (one Ray object), not with every task.

Parallel work does not oversubscribe the cores: with J tasks at once each worker sets
``torch.set_num_threads(max(1, cores // J))`` (on Ray each task asks for that many CPUs),
so threads per task × concurrent tasks = cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

import torch

from uqbench.errors import UserError

#: What ``next_done`` returns: the task's key and its result or the exception it raised.
Done = tuple[Hashable, Any]

_SHARED: Any = None


def shared_value() -> Any:
    """The pool's ``shared`` object, inside a task (None when the pool has none)."""
    return _SHARED


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Pool(Protocol):
    #: Tasks that run at once.
    capacity: int
    #: ``torch`` threads of each task (None: the driver's own setting).
    threads: int | None

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None: ...

    def next_done(self) -> Done: ...

    def close(self) -> None: ...


class SerialPool:
    """One task at a time, in this process (``next_done`` runs the oldest submitted)."""

    capacity = 1

    def __init__(self, shared: Any = None, cores: int | None = None) -> None:
        global _SHARED
        _SHARED = shared
        self.threads: int | None = cores if cores is not None else torch.get_num_threads()
        self._queue: deque[tuple[Hashable, Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.append((key, fn, args))

    def next_done(self) -> Done:
        key, fn, args = self._queue.popleft()
        try:
            return key, fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which decides
            return key, exc

    def close(self) -> None:
        global _SHARED
        self._queue.clear()
        _SHARED = None


def _init_worker(shared: Any, threads: int) -> None:
    global _SHARED
    _SHARED = shared
    torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


class ProcessPool:
    """``jobs`` tasks at once in spawned worker processes, ``cores // jobs`` threads each."""

    def __init__(self, jobs: int, shared: Any = None, cores: int | None = None) -> None:
        self.capacity = jobs
        self.threads: int | None = max(1, (cores or available_cores()) // jobs)
        self._pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(shared, self.threads),
        )
        self._running: dict[Future, tuple[int, Hashable]] = {}
        self._submitted = 0

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        self._running[self._pool.submit(_call, fn, args)] = (self._submitted, key)
        self._submitted += 1

    def next_done(self) -> Done:
        done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self._running[f][0])  # oldest first: deterministic
        _, key = self._running.pop(future)
        try:
            return key, future.result()
        except Exception as exc:  # noqa: BLE001 - a task's error or a dead worker
            return key, exc

    def close(self) -> None:
        if not self._running:  # every task collected: let the workers exit on their own
            self._pool.shutdown(wait=True)
            return
        # A stopped run: its running tasks are not waited for. (Terminating a worker can
        # leave the executor's queue semaphore to the resource tracker, which then warns.)
        processes = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
        self._running.clear()


def _ray_call(fn: Callable[..., Any], args: tuple[Any, ...], shared: Any) -> Any:
    global _SHARED
    _SHARED = shared
    return fn(*args)


class RayPool:
    """Each task a Ray task on a cluster (a local one unless ``address`` names one).

    ``jobs``: tasks in flight (None: one per CPU of the cluster); each asks for
    ``cluster CPUs // jobs`` CPUs, and a GPU when ``gpu`` is set.
    """

    def __init__(
        self,
        jobs: int | None = None,
        shared: Any = None,
        *,
        address: str | None = None,
        gpu: bool = False,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(
                "--executor ray needs Ray: pip install 'uqbench[ray]' (or use --executor local)"
            ) from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                text = " ".join(str(exc).split()) or type(exc).__name__
                raise UserError(f"cannot reach the Ray cluster at {address!r}: {text}") from None
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.capacity = jobs or cpus
        self.threads: int | None = max(1, cpus // self.capacity)
        self._gpus = 1 if gpu else 0
        self._shared_ref = ray.put(shared)
        self._remote = ray.remote(_ray_call)
        self._running: dict[Any, tuple[int, Hashable]] = {}
        self._submitted = 0

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        options = self._remote.options(num_cpus=self.threads, num_gpus=self._gpus)
        self._running[options.remote(fn, args, self._shared_ref)] = (self._submitted, key)
        self._submitted += 1

    def next_done(self) -> Done:
        done, _ = self._ray.wait(list(self._running), num_returns=1)
        ref = done[0]
        _, key = self._running.pop(ref)
        try:
            return key, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return key, cause if isinstance(cause, BaseException) else exc
        except Exception as exc:  # noqa: BLE001 - a lost worker, handed to the driver
            return key, exc

    def close(self) -> None:
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._started_here:
            self._ray.shutdown()


def make_pool(
    kind: str,
    jobs: int | None,
    *,
    shared: Any = None,
    cores: int | None = None,
    ray_address: str | None = None,
    gpu: bool = False,
) -> Pool:
    """``local`` with one job: this process; ``local`` with more: worker processes; ``ray``.

    ``cores``: threads shared by the concurrent tasks of a local pool (default: the cores
    this process may use; a serial pool keeps the process's own setting).
    """
    if kind == "ray":
        return RayPool(jobs, shared, address=ray_address, gpu=gpu)
    if jobs is None or jobs == 1:
        return SerialPool(shared, cores)
    return ProcessPool(jobs, shared, cores)


__all__ = [
    "Pool",
    "ProcessPool",
    "RayPool",
    "SerialPool",
    "available_cores",
    "make_pool",
    "shared_value",
]
