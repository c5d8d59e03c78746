"""uqbench: distributions over network weights, compared on one harness.

Every method is a :class:`~uqbench.sampler.WeightSampler`: once fitted it draws whole
weight sets for one fixed target architecture, and one evaluation harness scores them all.

The application's library API (``uqbench.compare``, ``uqbench.evaluate``,
``uqbench.report``, ``uqbench.tune`` and their request and result types) is loaded on first use, so
``import uqbench`` stays light and the lower layers never import the application.
"""

from importlib import import_module
from typing import Any

from uqbench.errors import UserError
from uqbench.sampler import Task, WeightSampler

#: Public name -> the application module that defines it (imported on first access).
_APP_API = {
    "compare": "uqbench.app.compare",
    "evaluate": "uqbench.app.compare",
    "report": "uqbench.app.compare",
    "CompareRequest": "uqbench.app.requests",
    "CompareResult": "uqbench.app.requests",
    "EvaluateRequest": "uqbench.app.requests",
    "EvaluateResult": "uqbench.app.requests",
    "FailedCell": "uqbench.app.requests",
    "tune": "uqbench.app.tune",
    "TuneRequest": "uqbench.app.tune",
    "TuneResult": "uqbench.app.tune",
}

__all__ = ["Task", "UserError", "WeightSampler", *_APP_API]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _APP_API.get(name)
    if module is None:
        raise AttributeError(f"module 'uqbench' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
