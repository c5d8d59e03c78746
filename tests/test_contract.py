"""One contract suite over every registered sampler (Laplace-style): the registry is the list.

Variants that only change a registered method's defaults (HyperGAN's ablations) share its
code, so they are covered by their base class's run.
"""

from __future__ import annotations

import pytest
from tiny_configs import TINY

from uqbench.registry import discover, load_method
from uqbench.testing import check_sampler_contract


def _distinct_methods() -> list[str]:
    found = discover()
    classes = {info.cls for info in found.values() if info.cls is not None}
    return sorted(
        name
        for name, info in found.items()
        if info.cls is None or not (set(info.cls.__mro__[1:]) & classes)
    )


@pytest.mark.parametrize("name", _distinct_methods())
def test_sampler_contract(name: str) -> None:
    check_sampler_contract(load_method(name), overrides=TINY.get(name))


@pytest.mark.parametrize("name", sorted(discover()))
def test_presets_name_known_benchmarks_and_fields(name: str) -> None:
    """A preset keyed by a misspelt benchmark would silently never apply."""
    from uqbench.data.registry import BENCHMARKS

    cls = load_method(name)
    assert set(cls.presets) <= set(BENCHMARKS), sorted(set(cls.presets) - set(BENCHMARKS))
    for benchmark in cls.presets:
        cls.make_config(benchmark=benchmark)  # every preset builds a valid config
