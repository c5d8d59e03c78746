"""uqbench: distributions over network weights, compared on one harness.

Every method is a :class:`~uqbench.sampler.WeightSampler`: once fitted it draws whole
weight sets for one fixed target architecture, and one evaluation harness scores them all.
"""

from uqbench.errors import UserError
from uqbench.sampler import Task, WeightSampler

__all__ = ["Task", "UserError", "WeightSampler"]
__version__ = "0.1.0"
