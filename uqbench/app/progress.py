"""Progress display for ``compare`` (rich): one bar for the cells, one for the running cell's
steps."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from uqbench.app.runner import CellSpec
from uqbench.sampler import Progress as ProgressCallback


class CellProgress:
    """Context manager that shows overall and per-cell progress on stderr."""

    def __init__(self, total_cells: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._cells = self._progress.add_task("cells", total=max(total_cells, 1))
        self._current: int | None = None

    def __enter__(self) -> CellProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def for_cell(self, spec: CellSpec) -> ProgressCallback:
        """The ``progress(step, total, **metrics)`` callback handed to ``fit``."""
        if self._current is not None:
            self._progress.remove_task(self._current)
        task = self._progress.add_task(f"fit {spec.label}", total=None)
        self._current = task

        def update(step: int, total: int, **metrics: float) -> None:
            shown = " ".join(
                f"{k}={v:.3g}" for k, v in metrics.items() if isinstance(v, int | float)
            )
            self._progress.update(
                task, completed=step, total=total, description=f"fit {spec.label} {shown}"
            )

        return update

    def cell_failed(self, spec: CellSpec, reason: str) -> None:
        """One line on stderr naming the cell and why it failed; the cell bar advances."""
        self._progress.console.print(
            f"failed {spec.label}: {reason}", markup=False, highlight=False
        )
        self._progress.advance(self._cells)

    def cell_done(self, spec: CellSpec, metrics: dict[str, float]) -> None:
        acc = metrics.get("acc", metrics.get("rmse"))
        self._progress.console.print(
            f"finished {spec.label}: fit {metrics.get('fit_s', 0):.1f}s"
            + (
                f", acc {acc:.4f}"
                if "acc" in metrics
                else f", rmse {acc:.3f}"
                if acc is not None
                else ""
            )
        )
        self._progress.advance(self._cells)
