"""Methods come from the ``uqbench.methods`` entry-point group; built-ins are registered the
same way.

A plugin that fails to import is reported by name (``uqbench list``) and breaks nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from uqbench.errors import UserError
from uqbench.sampler import WeightSampler

ENTRY_POINT_GROUP = "uqbench.methods"


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: where it comes from, and why it failed to load if it did."""

    name: str
    target: str  # "package.module:Class"
    package: str  # the distribution that registered it
    cls: type[WeightSampler] | None
    error: str | None


def discover() -> dict[str, MethodInfo]:
    """Every registered method, loaded; import failures are recorded, not raised."""
    found: dict[str, MethodInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist is not None else "?"
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, WeightSampler)):
                raise TypeError(f"{ep.value} is not a WeightSampler subclass")
            info = MethodInfo(ep.name, ep.value, package, cls, None)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
            info = MethodInfo(ep.name, ep.value, package, None, f"{type(exc).__name__}: {exc}")
        found.setdefault(ep.name, info)
    return found


def load_method(name: str) -> type[WeightSampler]:
    """The sampler class registered as ``name``; a UserError names the fix when it can't load."""
    methods = discover()
    if name not in methods:
        known = ", ".join(sorted(methods)) or "none"
        raise UserError(f"unknown method {name!r}; known methods: {known} (see `uqbench list`)")
    info = methods[name]
    if info.cls is None:
        raise UserError(
            f"method {name!r} from package {info.package} failed to import ({info.error}); "
            "fix or reinstall that package"
        )
    return info.cls
