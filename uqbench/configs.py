"""Method settings that check themselves and declare where a tuner may search.

A method's ``Config`` is a dataclass that inherits :class:`CheckedConfig` and declares
each setting with :func:`setting`::

    @dataclass
    class MyConfig(CheckedConfig):
        lr: float = setting(1e-3, check=positive, search=LogUniform(1e-4, 1e-2))
        steps: int = setting(500, check=at_least(1))

Every float field must be finite unless its check says otherwise, and ``check`` runs in
``__post_init__``, so an invalid config cannot be built — not by ``--set``, not by a
preset, not by a checkpoint. ``search`` is the range ``uqbench tune`` explores for that
knob (a few knobs per method, with ranges a practitioner would search).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from uqbench.errors import UserError

#: ``check(value) -> None | str``: None when valid, else what a valid value looks like.
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly from ``[low, high]`` (both > 0)."""

    low: float
    high: float


@dataclass(frozen=True)
class IntRange:
    """An integer from ``[low, high]``, log-spaced when ``log``."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a few values."""

    options: tuple[Any, ...]


Space = Uniform | LogUniform | IntRange | Choice


def setting(default: Any, *, check: Check | None = None, search: Space | None = None) -> Any:
    """A config field with a validity ``check`` and an optional tuning range ``search``."""
    metadata = {"check": check, "search": search}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# --- checks -----------------------------------------------------------------------------
def positive(value: Any) -> str | None:
    return None if value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"a number >= {low}"

    return check


def in_range(low: float, high: float, *, include_high: bool = True) -> Check:
    def check(value: Any) -> str | None:
        ok = low <= value <= high if include_high else low <= value < high
        return None if ok else f"a number in [{low}, {high}{']' if include_high else ')'}"

    return check


def one_of(*options: Any) -> Check:
    def check(value: Any) -> str | None:
        return None if value in options else f"one of {', '.join(map(repr, options))}"

    return check


# --- the base class ---------------------------------------------------------------------
class CheckedConfig:
    """Mixin for config dataclasses: validates every field when the config is built."""

    #: Prefix of error messages (the method's registry name); set by each method's Config.
    owner: str = "config"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            problem = _problem(value, f.metadata.get("check"))
            if problem is not None:
                raise UserError(f"{self.owner}.{f.name}={value!r} is invalid: use {problem}")
        self.check_together()

    def check_together(self) -> None:
        """Constraints between fields; raise :class:`UserError`. Default: none."""


def _problem(value: Any, check: Check | None) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    if isinstance(value, bool) or check is None:
        return None
    try:
        return check(value)
    except TypeError:
        return "a value of the field's type"


def search_space(config_cls: type) -> dict[str, Space]:
    """The knobs a config declares for tuning: field name -> its search range."""
    return {
        f.name: f.metadata["search"]
        for f in dataclasses.fields(config_cls)
        if f.metadata.get("search") is not None
    }


def require(condition: bool, owner: str, message: str) -> None:
    """Raise a :class:`UserError` ``"<owner>: <message>"`` unless ``condition``."""
    if not condition:
        raise UserError(f"{owner}: {message}")


__all__: Sequence[str] = [
    "CheckedConfig",
    "Choice",
    "IntRange",
    "LogUniform",
    "Uniform",
    "at_least",
    "in_range",
    "non_negative",
    "one_of",
    "positive",
    "require",
    "search_space",
    "setting",
]
