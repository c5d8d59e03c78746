"""Where tuning trials run: in the tune process, in J worker processes, or as Ray tasks.

Every executor takes :class:`~uqbench.app.tune_trial.TrialSpec` s and hands back
:class:`~uqbench.app.tune_trial.TrialOutcome` s; only the driver talks to the Optuna study.
The benchmark's validation view (train + validation split, nothing else) is shipped to
each worker once (a pool initializer, or one Ray object), not with every trial.

Parallel trials do not oversubscribe the cores: with J trials at once each sets
``torch.set_num_threads(max(1, cores // J))``, so threads per trial × concurrent trials =
cores (on Ray each task asks for that many CPUs of the cluster).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

import torch

from uqbench.app.tune_trial import TrialOutcome, TrialSpec, run_trial
from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError

#: What ``next_outcome`` returns: the trial number and its outcome, or the exception a
#: trial raised (a bug in a method, a dead worker), so the driver can record it.
Finished = tuple[int, TrialOutcome | BaseException]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class TrialExecutor(Protocol):
    #: Trials that run at once.
    capacity: int
    #: ``torch`` threads of each trial (None: the tune process's own setting).
    threads: int | None

    def submit(self, spec: TrialSpec) -> None: ...

    def next_outcome(self) -> Finished: ...

    def close(self) -> None: ...


class SerialExecutor:
    """One trial at a time, in this process, with this process's thread setting."""

    capacity = 1

    def __init__(self, data: BenchmarkData, cores: int | None = None) -> None:
        self._data = data
        self._queue: deque[TrialSpec] = deque()
        self.threads: int | None = cores if cores is not None else torch.get_num_threads()

    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)

    def next_outcome(self) -> Finished:
        spec = self._queue.popleft()
        try:
            return spec.number, run_trial(spec, self._data)
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which records and re-raises
            return spec.number, exc

    def close(self) -> None:
        self._queue.clear()


_WORKER_DATA: BenchmarkData | None = None


def _init_worker(data: BenchmarkData, threads: int) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data
    torch.set_num_threads(threads)


def _pool_trial(spec: TrialSpec) -> TrialOutcome:
    assert _WORKER_DATA is not None, "worker started without its initializer"
    return run_trial(spec, _WORKER_DATA)


class ProcessExecutor:
    """``jobs`` trials at once in spawned worker processes, ``cores // jobs`` threads each."""

    def __init__(self, data: BenchmarkData, jobs: int, cores: int | None = None) -> None:
        self.capacity = jobs
        self.threads = max(1, (cores or available_cores()) // jobs)
        self._pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(data, self.threads),
        )
        self._running: dict[Future, int] = {}

    def submit(self, spec: TrialSpec) -> None:
        self._running[self._pool.submit(_pool_trial, spec)] = spec.number

    def next_outcome(self) -> Finished:
        done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self._running[f])
        number = self._running.pop(future)
        try:
            return number, future.result()
        except Exception as exc:  # noqa: BLE001 - handed to the driver
            return number, exc

    def close(self) -> None:
        processes = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # running trials of a stopped study are not waited for
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
        self._running.clear()


def _ray_trial(spec: TrialSpec, data: BenchmarkData) -> TrialOutcome:
    return run_trial(spec, data)


class RayExecutor:
    """Each trial a Ray task on a cluster (a local one unless ``address`` names one)."""

    def __init__(self, data: BenchmarkData, jobs: int, *, address: str | None = None) -> None:
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
            except ConnectionError as exc:
                raise UserError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = jobs
        self.threads = max(1, cpus // jobs)
        self._data_ref = ray.put(data)
        self._remote = ray.remote(_ray_trial)
        self._running: dict[Any, int] = {}

    def submit(self, spec: TrialSpec) -> None:
        gpus = 1 if spec.device.startswith("cuda") else 0
        options = self._remote.options(num_cpus=self.threads, num_gpus=gpus)
        self._running[options.remote(spec, self._data_ref)] = spec.number

    def next_outcome(self) -> Finished:
        done, _ = self._ray.wait(list(self._running), num_returns=1)
        ref = done[0]
        number = self._running.pop(ref)
        try:
            return number, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return number, cause if isinstance(cause, BaseException) else exc
        except Exception as exc:  # noqa: BLE001 - a lost worker, handed to the driver
            return number, exc

    def close(self) -> None:
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._started_here:
            self._ray.shutdown()


def make_executor(
    kind: str,
    data: BenchmarkData,
    jobs: int,
    *,
    cores: int | None = None,
    ray_address: str | None = None,
) -> TrialExecutor:
    """``local`` with one job: this process; ``local`` with more: worker processes; ``ray``.

    ``cores``: threads shared by the concurrent trials of a local executor (default: the
    cores this process may use; one local trial then keeps the process's own setting).
    """
    if kind == "ray":
        return RayExecutor(data, jobs, address=ray_address)
    if jobs == 1:
        return SerialExecutor(data, cores)
    return ProcessExecutor(data, jobs, cores)
