"""What a run writes into its output folder, and how ``report`` rebuilds it from the store.

Layout of ``--out DIR``::

    config.json            every cell's resolved config, seed, data split and files, and the
                           command that produced it; versions, machine; every invocation
    results.sqlite         one row per finished or failed cell (the results store)
    failures.log           the full traceback of every failed cell
    table.md, table.csv    mean ± std over seeds; long format (method, benchmark, seed, metric,
                           value)
    cells/<cell>.npz       predictive probabilities of test and every OOD set, test labels, ...
    checkpoints/<cell>.pt  sampler state, loadable with torch.load(weights_only=True)
    figures/*.png          reliability, entropy ECDF, accuracy vs samples, regression bands, history

Each artefact has one writer and one reader: arrays :mod:`uqbench.evaluation.arrays`,
checkpoints :mod:`uqbench.app.checkpoints`, ``config.json`` :func:`write_config` /
:func:`read_config`, the store :class:`~uqbench.app.store.ResultsStore`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from uqbench.app.checkpoints import save_checkpoint
from uqbench.app.runner import CellOutcome, spec_as_dict
from uqbench.app.store import CellRecord, ResultsStore
from uqbench.errors import UserError
from uqbench.evaluation import arrays as arrays_io
from uqbench.files import atomic_write

STORE_NAME = "results.sqlite"
CONFIG_NAME = "config.json"
FAILURES_NAME = "failures.log"
SUBFOLDERS = ("cells", "checkpoints", "figures")


def check_out_dir(path: Path) -> None:
    """Raise a UserError unless ``path`` is a folder that exists or can be created, and is
    writable; creates nothing."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"output folder {path}: cannot write there ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output folder {path}: cannot write there; choose a writable folder")


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` (and its subfolders) and prove it is writable, or raise a UserError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        for sub in SUBFOLDERS:
            (path / sub).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"output folder {path}: cannot write there ({exc.strerror}); choose a writable folder"
        ) from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (:func:`uqbench.files.atomic_write`); a UserError if not."""
    try:
        atomic_write(path, text.encode())
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc})") from None


def arrays_path(out_dir: Path, stem: str) -> Path:
    return out_dir / "cells" / f"{stem}.npz"


def checkpoint_path(out_dir: Path, stem: str) -> Path:
    return out_dir / "checkpoints" / f"{stem}.pt"


def save_outcome(
    out_dir: Path,
    outcome: CellOutcome,
    store: ResultsStore,
    data_files: dict[str, str] | None = None,
) -> CellRecord:
    """Write a finished cell's arrays and checkpoint, then its store row (last, atomically)."""
    spec = outcome.spec
    cells = arrays_path(out_dir, spec.file_stem)
    try:
        arrays_io.save_arrays(cells, outcome.arrays)
    except OSError as exc:
        raise UserError(f"cannot write {cells} ({exc.strerror or exc}); free space") from None
    ckpt = save_checkpoint(
        checkpoint_path(out_dir, spec.file_stem), spec_as_dict(spec), outcome.state
    )
    record = CellRecord(
        method=spec.method,
        benchmark=spec.benchmark,
        seed=spec.seed,
        config_hash=spec.config_hash,
        metrics=outcome.metrics,
        config=spec.config,
        checkpoint=str(ckpt.relative_to(out_dir)),
        arrays=str(cells.relative_to(out_dir)),
        history=outcome.history,
        data_files=data_files,
    )
    store.record(record)
    return record


def load_arrays(out_dir: Path, record: CellRecord) -> dict:
    """The npz arrays of one stored cell, with their original ``a/b`` names."""
    if not record.arrays:
        return {}
    try:
        return arrays_io.load_arrays(out_dir / record.arrays)
    except UserError as exc:
        raise UserError(f"{exc}; re-run the same `uqbench compare` to recompute the cell") from None


def long_table(records: list[CellRecord]) -> pd.DataFrame:
    """Long format: one row per (method, benchmark, seed, metric).

    A reference view's metrics (``teacher:acc``) become rows of method ``apd:teacher``.
    """
    from uqbench.evaluation.harness import split_view_metric

    rows = []
    for r in records:
        for key, value in r.metrics.items():
            view, metric = split_view_metric(key)
            method = r.method if view is None else f"{r.method}:{view}"
            rows.append(
                {
                    "method": method,
                    "benchmark": r.benchmark,
                    "seed": r.seed,
                    "metric": metric,
                    "value": value,
                }
            )
    return pd.DataFrame(rows, columns=["method", "benchmark", "seed", "metric", "value"])


def render(out_dir: Path, records: list[CellRecord], task_kind: str) -> str:
    """Write table.md, table.csv and the figures for ``records``; return the Markdown table.

    Figures of an earlier command into the same folder are removed first."""
    from uqbench.evaluation.plots import make_figures, training_history
    from uqbench.evaluation.tables import to_markdown

    df = long_table(records)
    first_seed: dict[str, CellRecord] = {}
    for r in sorted(records, key=lambda r: r.seed):
        first_seed.setdefault(r.method, r)
    cells = {m: load_arrays(out_dir, r) for m, r in first_seed.items()}
    df.to_csv(out_dir / "table.csv", index=False)
    markdown = to_markdown(df)
    atomic_write_text(out_dir / "table.md", markdown + "\n")
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    make_figures(cells, figures, task_kind)
    histories = {m: r.history for m, r in first_seed.items() if r.history}
    if histories:
        training_history(histories, figures / "training_history.png")
    return markdown


def read_config(out_dir: Path) -> dict:
    """The ``config.json`` of a results folder; a UserError when missing or not valid."""
    path = out_dir / CONFIG_NAME
    if not path.exists():
        raise UserError(
            f"{out_dir} holds no {CONFIG_NAME}: is it the output folder of `uqbench compare`?"
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path} is not valid JSON ({type(exc).__name__}); restore it or move it away "
            "(a compare into that folder then writes a new one)"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("cells", []), list):
        raise UserError(f"{path} is not a uqbench config.json; restore it or move it away")
    return config


def write_config(out_dir: Path, config: dict) -> None:
    """Write ``config.json`` atomically."""
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    atomic_write_text(out_dir / CONFIG_NAME, text + "\n")


def append_failure_log(out_dir: Path, header: str, traceback_text: str) -> Path:
    """Append a failed cell's full traceback to ``failures.log``."""
    path = out_dir / FAILURES_NAME
    with path.open("a") as handle:
        handle.write(f"=== {header}\n{traceback_text.rstrip()}\n\n")
    return path
