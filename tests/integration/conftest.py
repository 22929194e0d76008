"""Integration fixtures: the stacks a module makes stop when the module ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stacks


@pytest.fixture(scope="module", autouse=True)
def _module_stacks(make_stack: Stacks) -> Iterator[None]:
    first = len(make_stack.made)
    yield
    make_stack.stop([stack for stack in make_stack.made[first:] if stack is not make_stack.shared])
