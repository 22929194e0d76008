"""Session fixtures: one Tansu broker for the whole run, and a shared bulkjobs stack on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from bulkjobs.broker import EmbeddedBroker, start_broker
from tests.support import Client, Stack

# Hypothesis's per-example deadline is a wall-clock limit: on a busy 2-core machine it fails tests
# that are not slow in themselves. Speed lives in `make bench`, not in tests.
settings.register_profile("bulkjobs", deadline=None)
settings.load_profile("bulkjobs")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    embedded = start_broker()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def make_stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        name = f"t{uuid.uuid4().hex[:8]}"
        stack = Stack(broker.address, Path(tmp_path_factory.mktemp(name)), name, env_overrides=env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


SHARED_LIMITS = {"BULKJOBS_MAX_RECORDS": "200000", "BULKJOBS_MAX_BODY_BYTES": str(32 * 1024 * 1024),
                 "BULKJOBS_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)}


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(**SHARED_LIMITS).start_all()


@pytest.fixture
def api(stack: Stack) -> Client:
    """Tenant A's client on the shared stack."""
    return stack.client("key-a")


@pytest.fixture
def api_b(stack: Stack) -> Client:
    """Tenant B's client on the shared stack."""
    return stack.client("key-b")
