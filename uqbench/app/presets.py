"""Presets files: the configs ``uqbench tune`` selected, which ``compare --presets`` applies.

One JSON file per benchmark (e.g. ``presets/mnist5000.json``)::

    {
      "format": 1,
      "benchmark": "mnist5000",
      "methods": {
        "hypergan": {
          "config": {"lr_generator": 0.0002, "beta": 3.0},   # the tuned knobs only
          "objective": "nll", "best_value": 0.071, "best_trial": 12,
          "budget": {"trials": 20, "max_fit_s": 300.0, "sampler": "TPE", "seed": 0},
          "command": "uqbench tune --method hypergan --benchmark mnist5000 --trials 20"
        }
      }
    }

Each tuned method has its own entry, so methods tuned by separate commands share one file
and the budget of each is recorded beside its result. ``compare`` applies a method's
``config`` after the method's built-in preset and before ``--set``.

The built-in presets of a benchmark come from such tune runs: ``compare`` without
``--presets`` applies the packaged file ``uqbench/app/tuned_presets/<benchmark>.json`` (a
verbatim copy of ``results/presets/<benchmark>.json``, the committed record of the tune
commands) where one exists; ``--presets none`` applies none, leaving each method's own
defaults (e.g. the paper's HyperGAN at its 2,000 steps).

An ablation or variant can take another method's tuned entry unchanged (an ablation
changes one thing): ``python -m uqbench.app.presets inherit FILE hypergan
hypergan-nodisc`` copies hypergan's entry to hypergan-nodisc, marked ``inherited_from``.

A larger benchmark of the same kind can take a smaller one's tuned knobs with its own
training lengths, where tuning it at full size does not fit the budget:
``python -m uqbench.app.presets transfer presets/mnist5000.json presets/mnist.json
--benchmark mnist --set ensemble.epochs=8`` writes each entry of the first file to the
second with ``set`` updated, marked ``transferred_from`` (the source benchmark and file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uqbench.app.outputs import atomic_write_text
from uqbench.errors import UserError

FORMAT = 1
#: ``--presets`` value that applies no presets file, not even the built-in one.
NO_PRESETS = "none"
#: Folder of the packaged tuned presets, one ``<benchmark>.json`` each.
TUNED_DIR = Path(__file__).with_name("tuned_presets")


def built_in_presets(benchmark: str) -> Path | None:
    """The packaged tuned presets file of ``benchmark``, or None where it has none."""
    path = TUNED_DIR / f"{benchmark}.json"
    return path if path.is_file() else None


@dataclass
class PresetsFile:
    """A benchmark's tuned configs: method -> entry (``config`` plus how it was found)."""

    benchmark: str
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def config_of(self, method: str) -> dict[str, Any]:
        """The settings ``method`` was tuned with: the knobs fixed during the search
        (``set``) and the tuned ones (``config``); empty when it was not tuned."""
        entry = self.methods.get(method, {})
        return {**entry.get("set", {}), **entry.get("config", {})}

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "benchmark": self.benchmark, "methods": self.methods}


def read_presets(path: str | os.PathLike[str]) -> PresetsFile:
    """Read and check the shape of a presets file (methods and fields are checked by the
    caller against the registry, see :func:`check_presets`)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"presets file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"presets file {path} is not valid JSON ({exc}); re-create it with `uqbench tune`"
        ) from None
    if (
        not isinstance(raw, dict)
        or raw.get("format") != FORMAT
        or not isinstance(raw.get("methods"), dict)
    ):
        raise UserError(
            f"presets file {path} is not a uqbench presets file (format {FORMAT}); "
            "re-create it with `uqbench tune`"
        )
    benchmark = raw.get("benchmark")
    if not isinstance(benchmark, str):
        raise UserError(f"presets file {path} names no benchmark")
    for method, entry in raw["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise UserError(f"presets file {path}: the entry of {method!r} has no 'config' object")
    return PresetsFile(benchmark=benchmark, methods=raw["methods"])


def check_presets(
    presets: PresetsFile, benchmark: str, known_fields: dict[str, set[str]], path: Any
) -> None:
    """Refuse presets for another benchmark, an unknown method, or an unknown field.

    ``known_fields``: method name -> its config's field names, for every method the
    caller can load (every registered method, not only those compared).
    """
    if presets.benchmark != benchmark:
        raise UserError(
            f"presets file {path} was tuned on {presets.benchmark}, not {benchmark}; "
            f"pass the presets of {benchmark}"
        )
    for method, entry in presets.methods.items():
        if method not in known_fields:
            raise UserError(
                f"presets file {path} names unknown method {method!r}; see `uqbench list`"
            )
        unknown = sorted((set(entry["config"]) | set(entry.get("set", {}))) - known_fields[method])
        if unknown:
            raise UserError(f"presets file {path}: {method} has no setting {', '.join(unknown)}")


def write_method_entry(
    path: str | os.PathLike[str], benchmark: str, method: str, entry: dict[str, Any]
) -> PresetsFile:
    """Add or replace ``method``'s entry in the presets file at ``path`` (created if absent),
    written atomically so a reader never sees half a file."""
    path = Path(path)
    presets = read_presets(path) if path.exists() else PresetsFile(benchmark=benchmark)
    if presets.benchmark != benchmark:
        raise UserError(
            f"presets file {path} holds {presets.benchmark}'s presets, not {benchmark}'s; "
            "write to another file"
        )
    presets.methods[method] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(presets.as_json(), indent=2, sort_keys=True) + "\n")
    return presets


def inherit(path: str | os.PathLike[str], source: str, targets: list[str]) -> PresetsFile:
    """Give each of ``targets`` ``source``'s tuned entry (config, fixed knobs, budget, how
    it was found), marked ``inherited_from`` so no table reads it as the target's own tuning."""
    presets = read_presets(path)
    entry = presets.methods.get(source)
    if entry is None or "inherited_from" in entry:
        raise UserError(f"presets file {path} holds no tuned entry of {source!r}; tune it first")
    for target in targets:
        presets = write_method_entry(
            path, presets.benchmark, target, {**entry, "inherited_from": source}
        )
    return presets


def transfer(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    benchmark: str,
    lengths: dict[str, dict[str, Any]],
    methods: list[str] | None = None,
) -> PresetsFile:
    """Write ``methods``' tuned entries (default: every entry tuned in ``source`` itself)
    into ``target``'s presets of ``benchmark``, each marked ``transferred_from``: the tuned
    ``config`` as it is, and as fixed knobs ``set`` the method's own presets for the
    source benchmark (what the tune ran on, less the knobs it searched), the entry's
    ``set``, then ``lengths[method]``."""
    presets = read_presets(source)
    if presets.benchmark == benchmark:
        raise UserError(f"presets file {source} is already {benchmark}'s; nothing to transfer")
    own = [m for m, e in presets.methods.items() if "inherited_from" not in e]
    chosen = own if methods is None else methods
    unknown = sorted(set(chosen) - set(presets.methods)) + sorted(set(lengths) - set(chosen))
    if unknown:
        raise UserError(
            f"presets file {source} transfers no entry of {', '.join(unknown)}; "
            f"its methods: {', '.join(sorted(presets.methods))}"
        )
    if not chosen:
        raise UserError(f"presets file {source} holds no tuned entry to transfer")
    for method in chosen:
        entry = presets.methods[method]
        # The tune ran on top of the method's own presets for the source benchmark (e.g.
        # the engineered HyperGAN's 128-wide generators): they travel with the entry.
        # Knobs the tune searched are left out: its selected value in ``config`` is what
        # the tune applied on top of them.
        base = {
            k: v
            for k, v in _own_presets(method, presets.benchmark).items()
            if k not in entry["config"]
        }
        out = write_method_entry(
            target,
            benchmark,
            method,
            {
                **entry,
                "set": {**base, **entry.get("set", {}), **lengths.get(method, {})},
                "transferred_from": {"benchmark": presets.benchmark, "file": str(source)},
            },
        )
    return out


def _own_presets(method: str, benchmark: str) -> dict[str, Any]:
    """``method``'s class presets for ``benchmark`` (empty for a method not installed)."""
    from uqbench.data.registry import presets_name
    from uqbench.registry import discover

    info = discover().get(method)
    if info is None or info.cls is None:
        return {}
    return dict(info.cls.presets.get(presets_name(benchmark), {}))


def _parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``method.key=value`` strings -> method -> key -> value (JSON where it parses)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, eq, raw = item.partition("=")
        method, dot, key = name.partition(".")
        if not (eq and dot and method and key):
            raise UserError(f"--set {item!r} is not METHOD.KEY=VALUE, e.g. ensemble.epochs=8")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m uqbench.app.presets inherit FILE SOURCE TARGET...`` or ``transfer SOURCE
    TARGET --benchmark NAME [--set METHOD.KEY=VALUE ...] [--methods A,B]``."""
    parser = argparse.ArgumentParser(prog="python -m uqbench.app.presets")
    sub = parser.add_subparsers(dest="command", required=True)
    copy = sub.add_parser("inherit", help="give methods another method's tuned entry")
    copy.add_argument("file")
    copy.add_argument("source")
    copy.add_argument("targets", nargs="+")
    move = sub.add_parser("transfer", help="another benchmark's tuned entries, new lengths")
    move.add_argument("source")
    move.add_argument("target")
    move.add_argument("--benchmark", required=True)
    move.add_argument("--set", action="append", default=[], dest="sets")
    move.add_argument("--methods", default=None, help="comma-separated; default: all tuned")
    args = parser.parse_args(argv)
    try:
        if args.command == "inherit":
            inherit(args.file, args.source, args.targets)
        else:
            methods = None if args.methods is None else args.methods.split(",")
            transfer(args.source, args.target, args.benchmark, _parse_sets(args.sets), methods)
    except UserError as exc:
        print(f"uqbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
