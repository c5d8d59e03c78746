"""Where data files are looked for, in order, and the error when they are not there.

Roots, first match wins:

1. the explicit ``data_root`` argument (the CLI's ``--data-root``);
2. the environment variable ``UQBENCH_DATA`` (several folders joined by ``os.pathsep``);
3. the user cache, ``$XDG_CACHE_HOME/uqbench`` or ``~/.cache/uqbench``;
4. system dataset folders (``/usr/share/datasets``, where Debian's ``dataset-*`` packages
   install);
5. a download into the user cache (torchvision), when allowed and the network works.

A dataset that is nowhere raises a :class:`~uqbench.errors.UserError` naming the files,
the roots searched and how to get them. Nothing is ever substituted for a missing set.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from uqbench.errors import UserError

#: Environment variable holding extra data roots.
ENV_VAR = "UQBENCH_DATA"
#: System-wide dataset folders, searched after the user cache (patched by tests).
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
#: A relative path ending in this matches the file as it is or gzipped.
OPTIONAL_GZ = "[.gz]"
#: Socket timeout (s) while a download runs, so a silently dropped network fails.
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Root:
    """One folder on the search path and why it is there (shown in error messages)."""

    path: Path
    origin: str


@dataclass(frozen=True)
class Wanted:
    """A set of files that must sit together under one root.

    ``layouts`` are alternatives, tried in order under each root; each is a tuple of
    relative paths that must all exist (a path ending in ``[.gz]`` matches the plain file
    first, then ``.gz``). ``how`` tells a user how to get the data; ``download``, if
    given, fetches it into the folder it is passed (the user cache).
    """

    label: str
    layouts: tuple[tuple[str, ...], ...]
    how: str
    download: Callable[[Path], object] | None = None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/uqbench``, or ``~/.cache/uqbench`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "uqbench"


def data_roots(data_root: str | os.PathLike[str] | None = None) -> list[Root]:
    """The folders searched for data, highest precedence first."""
    roots: list[Root] = []
    if data_root is not None and str(data_root):
        roots.append(Root(Path(data_root).expanduser(), "--data-root"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part:
            roots.append(Root(Path(part).expanduser(), ENV_VAR))
    roots.append(Root(user_cache_dir(), "user cache"))
    roots.extend(Root(p, "system datasets") for p in SYSTEM_DATA_DIRS)
    return roots


def resolve(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it exists (trying ``.gz`` for an ``[.gz]`` path), else None."""
    if relative.endswith(OPTIONAL_GZ):
        stem = relative[: -len(OPTIONAL_GZ)]
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.exists():
                return candidate
        return None
    candidate = root / relative
    return candidate if candidate.exists() else None


def find_in(roots: Sequence[Root], wanted: Wanted) -> list[Path] | None:
    """The first layout of ``wanted`` found complete under a root (roots in order)."""
    for root in roots:
        for layout in wanted.layouts:
            found = [resolve(root.path, rel) for rel in layout]
            if all(p is not None for p in found):
                return [p for p in found if p is not None]
    return None


class DataSearch:
    """Finds data files on the search path; downloads into the user cache if allowed."""

    def __init__(
        self, data_root: str | os.PathLike[str] | None = None, *, download: bool = True
    ) -> None:
        self.roots = data_roots(data_root)
        self.download = download
        self._read: dict[str, None] = {}

    def record(self, *paths: str | os.PathLike[str]) -> None:
        """Note data files a loader has read (absolute paths, first-read order)."""
        for path in paths:
            self._read.setdefault(os.path.abspath(path), None)

    @property
    def files_read(self) -> tuple[str, ...]:
        """Every data file recorded with :meth:`record`, in the order first read."""
        return tuple(self._read)

    def find(self, wanted: Wanted) -> list[Path] | None:
        """The files of ``wanted`` if some root holds them (no download), else None."""
        return find_in(self.roots, wanted)

    def locate(self, wanted: Wanted) -> list[Path]:
        """The files of ``wanted``, downloading them if needed and allowed.

        Raises a UserError naming the files, the roots searched and how to get them.
        """
        found = self.find(wanted)
        if found is not None:
            return found
        note = ""
        if wanted.download is None:
            note = "no automatic download exists for it"
        elif not self.download:
            note = "download disabled"
        else:
            cache = user_cache_dir()
            try:
                _download(wanted.download, cache)
            except Exception as exc:  # any network/disk failure becomes the missing-data error
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                note = f"download into {cache} failed ({reason})"
            else:
                found = find_in([Root(cache, "user cache")], wanted)
                if found is not None:
                    return found
                note = f"download into {cache} did not produce the expected files"
        raise missing_data_error(wanted, self.roots, note)

    def describe_roots(self) -> str:
        """``path (origin)`` for each root, for messages and ``sources``."""
        return _describe(self.roots)


def _download(fetch: Callable[[Path], object], cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        fetch(cache)
    finally:
        socket.setdefaulttimeout(previous)


def _describe(roots: Sequence[Root]) -> str:
    parts = []
    for root in roots:
        missing = "" if root.path.is_dir() else ", does not exist"
        parts.append(f"{root.path} ({root.origin}{missing})")
    return ", ".join(parts)


def missing_data_error(wanted: Wanted, roots: Sequence[Root], note: str = "") -> UserError:
    """The one-line error for data found nowhere on the search path."""
    first = " + ".join(wanted.layouts[0])
    others = list(dict.fromkeys(f"{Path(layout[0]).parent}/" for layout in wanted.layouts[1:]))
    also = f" (also tried under {', '.join(others)})" if others else ""
    tail = f"; {note}" if note else ""
    return UserError(
        f"{wanted.label} not found: looked for {first}{also} in {_describe(roots)}{tail}. "
        f"{wanted.how}"
    )
