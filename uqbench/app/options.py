"""Parsing and formatting shared by the commands: seeds, ``--set`` items, configs, JSON."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence

from uqbench.errors import UserError


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (range and repeats are checked by the library)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(
            f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2"
        ) from None
    if not seeds:
        raise UserError("--seeds is empty; give at least one integer, e.g. --seeds 0")
    return seeds


def parse_sets(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["hypergan.beta=10"]`` -> ``{"hypergan": {"beta": "10"}}``; the method must be
    among ``methods``."""
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise UserError(f"--set {item}: expected METHOD.KEY=VALUE, e.g. --set hypergan.beta=10")
        if method not in out:
            raise UserError(
                f"--set {item}: {method!r} is not among this command's methods "
                f"({','.join(methods)})"
            )
        out[method][name] = value
    return out


def config_as_dict(config: object) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)  # type: ignore[arg-type]


def command_line(argv: Sequence[str] | None) -> str:
    parts = list(argv) if argv is not None else sys.argv[1:]
    return "uqbench " + " ".join(shlex.quote(p) for p in parts)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
