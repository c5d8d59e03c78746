"""One contract suite over every registered sampler (Laplace-style): the registry is the list."""

from __future__ import annotations

import pytest

from uqbench.registry import discover, load_method
from uqbench.testing import check_sampler_contract


@pytest.mark.parametrize("name", sorted(discover()))
def test_sampler_contract(name: str) -> None:
    check_sampler_contract(load_method(name))
