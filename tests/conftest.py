"""Session fixtures: one Tansu broker for the whole run, and a shared bulkjobs stack on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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


class Stacks:
    """Makes the stacks of the run: each on the session's broker with its own prefix and data
    dir. A stack made for one module is stopped when that module ends (``stop``): left idle,
    every stack would load the two cores for the rest of the run."""

    def __init__(self, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.broker, self.tmp_path_factory = broker, tmp_path_factory
        self.made: list[Stack] = []
        self.shared: Stack | None = None

    def __call__(self, **env: str) -> Stack:
        name = f"t{uuid.uuid4().hex[:8]}"
        stack = Stack(self.broker.address, Path(self.tmp_path_factory.mktemp(name)), name, env_overrides=env)
        self.made.append(stack)
        return stack

    def stop(self, stacks: list[Stack]) -> None:
        """Stop ``stacks`` side by side: SIGTERM to all, then wait for each."""
        for stack in stacks:
            stack.terminate()
        for stack in stacks:
            stack.stop(timeout=10)  # nothing is asserted once a module ended: no need to wait longer


@pytest.fixture(scope="session")
def make_stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    stacks = Stacks(broker, tmp_path_factory)
    yield stacks
    stacks.stop(stacks.made)


SHARED_LIMITS = {"BULKJOBS_MAX_RECORDS": "200000", "BULKJOBS_MAX_BODY_BYTES": str(32 * 1024 * 1024),
                 "BULKJOBS_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024)}


@pytest.fixture(scope="session")
def stack(make_stack: Stacks) -> Stack:
    make_stack.shared = make_stack(**SHARED_LIMITS).start_all()
    return make_stack.shared


@pytest.fixture
def api(stack: Stack) -> Client:
    """Tenant A's client on the shared stack."""
    return stack.client("key-a")


@pytest.fixture
def api_b(stack: Stack) -> Client:
    """Tenant B's client on the shared stack."""
    return stack.client("key-b")
