"""Where cells run: in this process one after another, or as Ray tasks on a cluster.

Either way results come back to the driver, which alone writes files and the store; the
same seeds give the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from uqbench.app.runner import CellOutcome, CellSpec, run_cell
from uqbench.errors import UserError
from uqbench.sampler import Progress

OnResult = Callable[[CellOutcome], None]
ProgressFor = Callable[[CellSpec], Progress | None]


def run_local(specs: Sequence[CellSpec], on_result: OnResult, progress_for: ProgressFor) -> None:
    """Run cells in this process, in order; each result is handed over as soon as it is done."""
    for spec in specs:
        on_result(run_cell(spec, progress_for(spec)))


def run_ray(
    specs: Sequence[CellSpec],
    on_result: OnResult,
    *,
    address: str | None = None,
    cpus_per_cell: float = 1.0,
) -> None:
    """Run each cell as a Ray task (a GPU each when the cell's device is CUDA)."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs Ray: pip install 'uqbench[ray]' (or use --executor local)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise UserError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    try:
        remote = ray.remote(run_cell)
        pending = {}
        for spec in specs:
            gpus = 1 if spec.device.startswith("cuda") else 0
            ref = remote.options(num_cpus=cpus_per_cell, num_gpus=gpus).remote(spec)
            pending[ref] = spec
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, UserError):  # the user's mistake, seen on a worker
                        raise UserError(str(exc.cause)) from None
                    raise
                on_result(outcome)
    finally:
        if started_here:
            ray.shutdown()
