"""Typed requests and results of the library API: ``uqbench.compare`` and ``uqbench.evaluate``.

The ``uqbench`` command parses its flags into these same objects, so a script or a
notebook runs exactly what the command runs::

    import uqbench

    result = uqbench.compare(uqbench.CompareRequest(
        methods=["ensemble", "mcdropout"], benchmark="toy1d", seeds=[0, 1], samples=10,
        sets={"ensemble": {"members": 3}}, out="runs/toy1d",
    ))
    result.table          # long format: method, benchmark, seed, metric, value
    print(result.markdown)
    result.failed         # cells that did not finish, each with a one-line reason

Mistakes in a request raise :class:`uqbench.UserError` (a ``ValueError``) before anything
is trained or written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from uqbench.data.registry import DEFAULT_BENCHMARK
from uqbench.errors import UserError

DEFAULT_METHODS = ("hypergan", "mcdropout")


class RequestError(UserError):
    """A request field holds an invalid value; ``field`` names it (the CLI names its flag)."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field}={value!r}: {problem}")


@dataclass
class CompareRequest:
    """Train and score ``methods`` on ``benchmark`` for every seed (one cell each).

    ``sets``: method -> setting -> value, applied last (values may be strings, as on the
    command line, or typed). ``presets``: a presets file written by ``uqbench tune``,
    applied after each method's own preset and before ``sets``; None applies the
    benchmark's built-in tuned presets where it has them, ``"none"`` no file at all.
    ``out``: the output folder (default ``runs/<benchmark>``); a re-run into it skips
    finished cells.
    ``ood``: extra OOD sets, name -> IDX file or image folder. ``ood_limit``: score at
    most this many images of each OOD set (a fixed random subset, recorded in
    ``split_info``). ``cell_timeout_s``: stop a cell (fit and evaluation) that runs
    longer, and count it as failed.
    """

    methods: Sequence[str] = DEFAULT_METHODS
    benchmark: str = DEFAULT_BENCHMARK
    seeds: Sequence[int] = (0,)
    samples: int = 100
    sets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    presets: str | Path | None = None
    out: str | Path | None = None
    executor: str = "local"
    ray_address: str | None = None
    #: Cells at once (worker processes, cores // jobs threads each; on Ray: tasks in
    #: flight). None: 1 locally, one per cluster CPU on Ray.
    jobs: int | None = None
    data_root: str | Path | None = None
    ood: Mapping[str, str | Path] = field(default_factory=dict)
    ood_limit: int | None = None
    device: str = "auto"
    memory_budget_mb: int = 1024
    cell_timeout_s: float | None = None
    #: How the comparison was asked for, recorded in config.json (the CLI's command line).
    command: str | None = None


@dataclass
class EvaluateRequest:
    """Re-score a saved checkpoint (``<out>/checkpoints/<cell>.pt``) without retraining.

    ``benchmark`` defaults to the checkpoint's own, ``samples`` to the number it was
    scored with.
    """

    checkpoint: str | Path
    benchmark: str | None = None
    samples: int | None = None
    seed: int = 0
    data_root: str | Path | None = None
    ood: Mapping[str, str | Path] = field(default_factory=dict)
    #: Default: the limit the checkpoint's cell was scored with.
    ood_limit: int | None = None
    device: str = "auto"
    memory_budget_mb: int = 1024


@dataclass(frozen=True)
class FailedCell:
    """A cell that did not finish: which one and why (traceback in ``<out>/failures.log``)."""

    method: str
    benchmark: str
    seed: int
    reason: str

    @property
    def label(self) -> str:
        return f"{self.method}/{self.benchmark}/seed{self.seed}"


@dataclass
class CompareResult:
    """The cells of one compare: ``table`` (long format) and ``markdown`` (mean ± std over
    seeds) of every finished cell, the output folder, and the cells that failed."""

    table: pd.DataFrame
    markdown: str
    out: Path
    failed: list[FailedCell] = field(default_factory=list)
    #: Cells trained by this call, and cells reused from the store.
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class EvaluateResult:
    """The scores of one checkpoint: ``metrics``, as a long ``table`` and as ``markdown``."""

    metrics: dict[str, float]
    table: pd.DataFrame
    markdown: str
