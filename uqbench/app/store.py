"""The results store: one SQLite row per (method, benchmark, seed, config hash) cell.

A row is written in one transaction when its cell finishes (status ``finished``) or
fails (status ``failed``, with its one-line reason), so an interrupted run (even
``kill -9``) loses at most the running cell and never leaves the file unreadable. The
store uses SQLite's rollback journal, not a write-ahead log: between transactions every
row is in the one file ``results.sqlite``, so copying that file copies every finished
cell. Only the driver process writes here, under the output folder's lock.

Each finished row also records the content hash of every data file its cell read
(``data_files``), so a re-run recomputes a cell whose data changed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from uqbench.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    method TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL,
    config TEXT NOT NULL,
    checkpoint TEXT,
    arrays TEXT,
    history TEXT,
    finished_at REAL NOT NULL,
    data_files TEXT,
    error TEXT,
    PRIMARY KEY (method, benchmark, seed, config_hash)
)
"""
#: Columns added after the first release; older stores gain them when opened for writing.
_ADDED_COLUMNS = {"data_files": "TEXT", "error": "TEXT"}
_COLUMNS = (
    "method, benchmark, seed, config_hash, status, metrics, config, checkpoint, arrays, "
    "history, finished_at, data_files, error"
)


def cell_stem(method: str, benchmark: str, seed: int, config_hash: str) -> str:
    """The name of a cell's files (``cells/<stem>.npz``, ``checkpoints/<stem>.pt``)."""
    return f"{method}-{benchmark}-s{seed}-{config_hash}"


@dataclass
class CellRecord:
    """A cell as stored: finished (metrics, files) or failed (``error``)."""

    method: str
    benchmark: str
    seed: int
    config_hash: str
    metrics: dict[str, float]
    config: dict
    checkpoint: str | None
    arrays: str | None
    history: list
    #: Data file path -> SHA-256 of its content, for every file the cell read (None: unknown).
    data_files: dict[str, str] | None = None
    status: str = "finished"
    error: str | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def stem(self) -> str:
        return cell_stem(self.method, self.benchmark, self.seed, self.config_hash)

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.method, self.benchmark, self.seed, self.config_hash)


class ResultsStore:
    """SQLite file ``results.sqlite`` in a run's output folder.

    ``readonly`` opens an existing store for reading only (``report``); a file that is
    not a readable store raises a :class:`UserError` naming it.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.is_file():
                    raise UserError(f"{self.path} does not exist")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            else:
                self._db = sqlite3.connect(self.path, timeout=30)
                self._db.execute("PRAGMA journal_mode=DELETE")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute(SCHEMA)
                self._migrate()
                self._db.commit()
            problem = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(problem)
            self._columns = {row[1] for row in self._db.execute("PRAGMA table_info(cells)")}
            if not self._columns:
                raise sqlite3.DatabaseError("no table of cells")
        except sqlite3.Error as exc:
            raise UserError(
                f"{self.path} is not a readable results store ({exc}); move it away to start "
                "a new store, or restore a copy"
            ) from None

    def _migrate(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(cells)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, method: str, benchmark: str, seed: int, config_hash: str) -> CellRecord | None:
        """The stored row of one cell (finished or failed), or None."""
        rows = self._select(
            "WHERE method=? AND benchmark=? AND seed=? AND config_hash=?",
            (method, benchmark, seed, config_hash),
        )
        return rows[0] if rows else None

    def is_finished(self, method: str, benchmark: str, seed: int, config_hash: str) -> bool:
        row = self.get(method, benchmark, seed, config_hash)
        return row is not None and row.status == "finished"

    def record(self, record: CellRecord) -> None:
        """Write one cell atomically (replacing an older row with the same key)."""
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO cells ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.method,
                    record.benchmark,
                    record.seed,
                    record.config_hash,
                    record.status,
                    json.dumps(record.metrics),
                    json.dumps(record.config, sort_keys=True),
                    record.checkpoint,
                    record.arrays,
                    json.dumps(record.history),
                    record.finished_at,
                    None if record.data_files is None else json.dumps(record.data_files),
                    record.error,
                ),
            )

    def records(self) -> list[CellRecord]:
        """All finished cells, ordered by method, benchmark and seed."""
        return self._select("WHERE status='finished'", ())

    def failures(self) -> list[CellRecord]:
        """All failed cells (not finished since), ordered by method, benchmark and seed."""
        return self._select("WHERE status='failed'", ())

    def _select(self, where: str, params: tuple) -> list[CellRecord]:
        columns = [c.strip() for c in _COLUMNS.split(",")]
        chosen = [c if c in self._columns else "NULL" for c in columns]
        try:
            rows = self._db.execute(
                f"SELECT {', '.join(chosen)} FROM cells {where} ORDER BY method, benchmark, seed",
                params,
            ).fetchall()
            return [
                CellRecord(
                    method=m,
                    benchmark=b,
                    seed=s,
                    config_hash=h,
                    status=st,
                    metrics=json.loads(mt),
                    config=json.loads(c),
                    checkpoint=ck,
                    arrays=ar,
                    history=json.loads(hi or "[]"),
                    finished_at=t,
                    data_files=None if df is None else json.loads(df),
                    error=err,
                )
                for m, b, s, h, st, mt, c, ck, ar, hi, t, df, err in rows
            ]
        except (sqlite3.Error, json.JSONDecodeError, TypeError) as exc:
            raise UserError(
                f"{self.path} is not a readable results store ({exc}); move it away to start "
                "a new store, or restore a copy"
            ) from None
