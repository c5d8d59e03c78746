"""An exclusive lock on an output folder, so two commands never write one store at once.

The lock is an ``flock`` on ``<out>/.uqbench.lock`` (released by the kernel when the
process ends, even on ``kill -9``); the file holds the pid and command of the holder, so
a second command can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from uqbench.errors import UserError

LOCK_NAME = ".uqbench.lock"


class OutputLock:
    """``with OutputLock(out_dir, command):`` holds the folder or raises a UserError at once."""

    def __init__(self, out_dir: Path, command: str) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.path.parent} is in use by another uqbench command ({holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {self.command}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
