"""Content hashes of the data files a cell reads, cached by size and modification time.

A finished cell is reused only while every file it read has the same content: each
file's SHA-256 is stored with the cell, and recomputed here when the file's size or
``mtime`` changed since the last hash (the cache lives in the output folder, so a
re-run costs one ``stat`` per file). Folders (an image-folder ``--ood``) count as every
file under them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from uqbench.files import atomic_write

CACHE_NAME = ".file-hashes.json"
_CHUNK = 1 << 20


def data_files_of(data: object, ood_paths: Iterable[str]) -> list[Path]:
    """Every data file behind a loaded benchmark: ``data.files_read``, the existing file
    paths named in ``data.sources`` and the ``--ood`` paths (folders expanded), sorted and
    resolved."""
    candidates: list[Path] = [Path(p) for p in getattr(data, "files_read", ()) or ()]
    for value in (getattr(data, "sources", {}) or {}).values():  # "A + B", or a description
        if isinstance(value, str):
            candidates += [Path(token) for token in value.split() if os.sep in token]
    candidates += [Path(p) for p in ood_paths]
    files: set[Path] = set()
    for path in candidates:
        path = path.expanduser()
        if path.is_dir():
            files.update(p.resolve() for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.add(path.resolve())
    return sorted(files)


class FileHashes:
    """SHA-256 of files, cached in ``<out>/.file-hashes.json`` by (size, mtime_ns)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / CACHE_NAME
        try:
            self._cache: dict[str, dict] = json.loads(self.path.read_text())
            if not isinstance(self._cache, dict):
                self._cache = {}
        except (OSError, ValueError):
            self._cache = {}

    def of(self, files: Iterable[Path]) -> dict[str, str]:
        """Path -> SHA-256 for ``files``, hashing only those whose size or mtime changed."""
        out: dict[str, str] = {}
        for path in files:
            stat = path.stat()
            key = str(path)
            hit = self._cache.get(key)
            if (
                isinstance(hit, dict)
                and hit.get("size") == stat.st_size
                and hit.get("mtime_ns") == stat.st_mtime_ns
            ):
                out[key] = hit["sha256"]
                continue
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            out[key] = digest.hexdigest()
            self._cache[key] = {
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": out[key],
            }
        return out

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self._cache, indent=1, sort_keys=True).encode())


def why_changed(stored: dict[str, str], current: dict[str, str]) -> str | None:
    """A short reason when the data a cell read differs from what it reads now, else None."""
    for path in sorted(set(stored) | set(current)):
        if path not in current:
            return f"it read {path}, which it no longer reads"
        if path not in stored:
            return f"it now also reads {path}"
        if stored[path] != current[path]:
            return f"the content of {path} changed"
    return None
