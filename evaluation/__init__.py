"""Evaluation: metrics (one definition each), the harness, tables and figures.

``metrics`` (classification), ``regression``, ``harness`` (:func:`evaluate`), ``tables``,
``intervals`` (paired bootstrap intervals on differences to a baseline) and ``plots``
(imports matplotlib; not imported here).
"""

from uqbench.evaluation.harness import Evaluation, evaluate, load_arrays

__all__ = ["Evaluation", "evaluate", "load_arrays"]
