"""What a run writes into its output folder, and how ``report`` rebuilds it from the store.

Layout of ``--out DIR``::

    config.json            resolved config, cells, versions, machine, command line
    results.sqlite         one row per finished cell (the results store)
    table.md, table.csv    mean ± std over seeds; long format (method, benchmark, seed, metric, value)
    cells/<cell>.npz       predictive probabilities of test and every OOD set, test labels, ...
    checkpoints/<cell>.pt  sampler state, loadable with torch.load(weights_only=True)
    figures/*.png          reliability, entropy ECDF, accuracy vs samples, regression bands, history
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uqbench.app.runner import CellOutcome, spec_as_dict
from uqbench.app.store import CellRecord, ResultsStore
from uqbench.errors import UserError

STORE_NAME = "results.sqlite"
CONFIG_NAME = "config.json"


def prepare_out_dir(path: Path) -> Path:
    """Create ``path`` (and its subfolders) and prove it is writable, or raise a UserError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        for sub in ("cells", "checkpoints", "figures"):
            (path / sub).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"--out {path}: cannot write there ({exc.strerror}); choose a writable folder"
        ) from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_outcome(out_dir: Path, outcome: CellOutcome, store: ResultsStore) -> CellRecord:
    """Write a finished cell's arrays and checkpoint, then its store row (last, atomically)."""
    spec = outcome.spec
    arrays_path = out_dir / "cells" / f"{spec.file_stem}.npz"
    tmp = arrays_path.with_name(f".{arrays_path.stem}.tmp.npz")
    np.savez_compressed(tmp, **{k.replace("/", "__"): v for k, v in outcome.arrays.items()})
    os.replace(tmp, arrays_path)
    ckpt_path = out_dir / "checkpoints" / f"{spec.file_stem}.pt"
    tmp_ckpt = ckpt_path.with_name(f".{ckpt_path.name}.tmp")
    torch.save({"spec": spec_as_dict(spec), "state": outcome.state}, tmp_ckpt)
    os.replace(tmp_ckpt, ckpt_path)
    record = CellRecord(
        method=spec.method,
        benchmark=spec.benchmark,
        seed=spec.seed,
        config_hash=spec.config_hash,
        metrics=outcome.metrics,
        config=spec.config,
        checkpoint=str(ckpt_path.relative_to(out_dir)),
        arrays=str(arrays_path.relative_to(out_dir)),
        history=outcome.history,
    )
    store.record(record)
    return record


def load_arrays(out_dir: Path, record: CellRecord) -> dict[str, np.ndarray]:
    """The npz arrays of one cell, with their original ``a/b`` names."""
    if not record.arrays:
        return {}
    with np.load(out_dir / record.arrays) as data:
        return {k.replace("__", "/"): data[k] for k in data.files}


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
    """Write table.md, table.csv and the figures for ``records``; return the Markdown table."""
    from uqbench.evaluation.plots import make_figures, training_history
    from uqbench.evaluation.tables import to_markdown

    df = long_table(records)
    df.to_csv(out_dir / "table.csv", index=False)
    markdown = to_markdown(df)
    atomic_write_text(out_dir / "table.md", markdown + "\n")
    first_seed: dict[str, CellRecord] = {}
    for r in sorted(records, key=lambda r: r.seed):
        first_seed.setdefault(r.method, r)
    cells = {m: load_arrays(out_dir, r) for m, r in first_seed.items()}
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    make_figures(cells, figures, task_kind)
    histories = {m: r.history for m, r in first_seed.items() if r.history}
    if histories:
        training_history(histories, figures / "training_history.png")
    return markdown


def read_config(out_dir: Path) -> dict:
    path = out_dir / CONFIG_NAME
    if not path.exists():
        raise UserError(
            f"{out_dir} holds no {CONFIG_NAME}: is it the --out folder of `uqbench compare`?"
        )
    return json.loads(path.read_text())
