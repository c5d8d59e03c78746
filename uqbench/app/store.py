"""The results store: one SQLite row per (method, benchmark, seed, config hash) cell.

A row is written in one transaction when its cell finishes, so an interrupted run (even
``kill -9``) loses at most the running cell and never leaves the file unreadable (SQLite's
journal rolls back a half-written transaction). Only the driver process writes here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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
    PRIMARY KEY (method, benchmark, seed, config_hash)
)
"""


@dataclass
class CellRecord:
    """A finished cell as stored."""

    method: str
    benchmark: str
    seed: int
    config_hash: str
    metrics: dict[str, float]
    config: dict
    checkpoint: str | None
    arrays: str | None
    history: list


class ResultsStore:
    """SQLite file ``results.sqlite`` in a run's output folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_finished(self, method: str, benchmark: str, seed: int, config_hash: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM cells WHERE method=? AND benchmark=? AND seed=? AND config_hash=? "
            "AND status='finished'",
            (method, benchmark, seed, config_hash),
        ).fetchone()
        return row is not None

    def record(self, record: CellRecord) -> None:
        """Write one finished cell atomically (replacing an older row with the same key)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.method,
                    record.benchmark,
                    record.seed,
                    record.config_hash,
                    "finished",
                    json.dumps(record.metrics),
                    json.dumps(record.config, sort_keys=True),
                    record.checkpoint,
                    record.arrays,
                    json.dumps(record.history),
                    time.time(),
                ),
            )

    def records(self) -> list[CellRecord]:
        """All finished cells, ordered by method, benchmark and seed."""
        rows = self._db.execute(
            "SELECT method, benchmark, seed, config_hash, metrics, config, checkpoint, arrays, "
            "history FROM cells WHERE status='finished' ORDER BY method, benchmark, seed"
        ).fetchall()
        return [
            CellRecord(m, b, s, h, json.loads(mt), json.loads(c), ck, ar, json.loads(hi or "[]"))
            for m, b, s, h, mt, c, ck, ar, hi in rows
        ]
