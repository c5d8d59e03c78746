"""How cells run: in this process one after another, or on a pool (:mod:`uqbench.app.pool`:
worker processes or Ray tasks, the pools ``tune`` runs its trials on).

Either way results come back to the driver, which alone writes files and the store; the
same seeds give the same table. A cell that raises (a diverged fit, a plugin's bug) or
runs past its time limit comes back as a :class:`CellFailure` and the other cells still
run. With a time limit a cell runs in a child process (``spawn``), so even a ``fit``
that never returns can be stopped; the clock starts once the child has started the cell,
and the child runs on its parent's torch threads (a pool worker's share of the cores).
"""

from __future__ import annotations

import multiprocessing
import pickle
import socket
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from uqbench.app.pool import Pool
from uqbench.app.runner import CellOutcome, CellSpec, run_cell
from uqbench.errors import UserError
from uqbench.sampler import Progress

#: Seconds a Ray cluster's address may take to answer before the run is refused.
RAY_CONNECT_TIMEOUT_S = 10.0
#: Seconds a child process may take to import and load data before its clock starts.
CHILD_START_LIMIT_S = 600.0


@dataclass(frozen=True)
class CellFailure:
    """A cell that did not finish: one-line ``reason`` and the full ``traceback``."""

    spec: CellSpec
    reason: str
    traceback: str


OnResult = Callable[[CellOutcome], None]
OnFailure = Callable[[CellFailure], None]
ProgressFor = Callable[[CellSpec], Progress | None]


def one_line(exc: BaseException) -> str:
    """A one-line reason for ``exc``: a UserError's own message, else ``Type: message``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UserError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def guarded_cell(
    spec: CellSpec, progress: Progress | None = None, timeout: float | None = None
) -> CellOutcome | CellFailure:
    """Run one cell; any exception (or running past ``timeout`` seconds) is a CellFailure."""
    if timeout is not None:
        return _cell_in_child(spec, timeout)
    try:
        return run_cell(spec, progress)
    except Exception as exc:  # noqa: BLE001 - one failing cell must not end the run
        return CellFailure(spec, one_line(exc), traceback.format_exc())


def _raise(failure: CellFailure) -> None:
    raise UserError(f"{failure.spec.label} failed: {failure.reason}")


def run_local(
    specs: Sequence[CellSpec],
    on_result: OnResult,
    progress_for: ProgressFor,
    *,
    on_failure: OnFailure | None = None,
    timeout: float | None = None,
) -> None:
    """Run cells in this process, in order; each result is handed over as soon as it is done.

    A failed cell goes to ``on_failure`` and the next cell runs; without ``on_failure`` it
    raises a UserError with its one-line reason.
    """
    for spec in specs:
        result = guarded_cell(spec, progress_for(spec) if timeout is None else None, timeout)
        if isinstance(result, CellFailure):
            (on_failure or _raise)(result)
        else:
            on_result(result)


def _child_main(spec: CellSpec, conn, threads: int) -> None:
    """The child's side of :func:`_cell_in_child`: run the cell on ``threads`` torch threads
    (a spawned process starts at all cores, not at its parent's pool share)."""
    torch.set_num_threads(threads)
    conn.send_bytes(b"started")
    try:
        payload = ("ok", run_cell(spec, None))
    except Exception as exc:  # noqa: BLE001
        payload = ("failed", one_line(exc), traceback.format_exc())
    conn.send_bytes(pickle.dumps(payload))
    conn.close()


def _cell_in_child(spec: CellSpec, timeout: float) -> CellOutcome | CellFailure:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    threads = torch.get_num_threads()
    child = ctx.Process(target=_child_main, args=(spec, send, threads), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(CHILD_START_LIMIT_S):
            return CellFailure(spec, "its process did not start", "")
        receive.recv_bytes()
        if not receive.poll(timeout):
            child.kill()
            return CellFailure(
                spec, f"did not finish within --cell-timeout {timeout:g} s; stopped", ""
            )
        payload = pickle.loads(receive.recv_bytes())
    except EOFError:
        child.join(5)
        return CellFailure(spec, f"its process died (exit code {child.exitcode})", "")
    finally:
        receive.close()
        child.join(5)
        if child.is_alive():
            child.kill()
    if payload[0] == "ok":
        return payload[1]
    return CellFailure(spec, payload[1], payload[2])


def check_ray_address(address: str | None) -> None:
    """Refuse an address that is not ``HOST:PORT``, ``auto`` or ``ray://HOST:PORT``, or
    whose port does not answer within :data:`RAY_CONNECT_TIMEOUT_S`."""
    if address is None or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379), 'auto' or "
            "ray://HOST:PORT"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} within {RAY_CONNECT_TIMEOUT_S:g} s "
            f"({exc.strerror or type(exc).__name__}); start it with `ray start --head` or "
            "check the address"
        ) from None


def check_ray(address: str | None) -> None:
    """Refuse the Ray executor up front when Ray is missing or the address is not usable."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(
            "the ray executor needs Ray: pip install 'uqbench[ray]' (or use the local executor)"
        ) from None
    check_ray_address(address)


def run_pooled(
    specs: Sequence[CellSpec],
    on_result: OnResult,
    pool: Pool,
    *,
    on_failure: OnFailure | None = None,
    timeout: float | None = None,
) -> None:
    """Run cells on ``pool`` (worker processes or Ray tasks), ``pool.capacity`` at a time;
    results and failures are handled as in :func:`run_local`, in the order cells finish.
    The pool is closed at the end, also when the driver stops early."""
    pending = deque(enumerate(specs))
    running: dict[int, CellSpec] = {}
    try:
        while pending or running:
            while pending and len(running) < pool.capacity:
                index, spec = pending.popleft()
                pool.submit(index, guarded_cell, spec, None, timeout)
                running[index] = spec
            index, result = pool.next_done()
            spec = running.pop(index)
            if isinstance(result, BaseException):  # the worker itself died
                trace = "".join(traceback.format_exception(result))
                result = CellFailure(spec, one_line(result), trace)
            if isinstance(result, CellFailure):
                (on_failure or _raise)(result)
            else:
                on_result(result)
    finally:
        pool.close()
