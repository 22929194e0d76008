"""A worker joins an empty group at once, and waits out the sessions of the members it may
replace: a worker started after one was killed waits, then takes over its partitions."""

from __future__ import annotations

from collections.abc import Callable

from tests.support import Stack, wait_for

JOINS_AT_ONCE = "the worker group has no members: joining it now"
WAITS = "the worker group has 1 member(s), maybe crashed: waiting 5.0 s"  # 2 x the tests' 2 s session + 1


def test_a_first_worker_joins_at_once_and_one_after_a_crash_waits(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start_all()
    assert JOINS_AT_ONCE in stack.log_path("worker").read_text()

    stack.kill("worker")
    stack.start("worker", "worker-2")
    wait_for(lambda: WAITS in stack.log_path("worker-2").read_text(), timeout=30, what="the new worker to wait")
    job = stack.client().run({"type": "resources", "action": "post", "data": [{"type": "note", "attributes": {}}]})
    assert job["status"] == "succeeded"
