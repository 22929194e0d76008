"""How recent a topic tail is, judged from its latest fetches' high-water marks (``kafka.tail``)."""

from __future__ import annotations

import math

import pytest

from bulkjobs.kafka.clients import FETCH_MAX_WAIT_MS
from bulkjobs.kafka.tail import FETCH_SLACK, handled_as_of
from bulkjobs.kafka.topics import COMMAND_NOTICE


@pytest.mark.parametrize(("partitions", "expected"), [
    ([], math.inf),  # nothing read: nothing to wait for
    ([(5, 5, 10_000)], 10.0 - FETCH_SLACK),
    ([(6, 5, 10_000)], 10.0 - FETCH_SLACK),  # handled past the mark of an older fetch
    ([(5, 5, 10_000), (0, 0, 9_000), (3, 3, 12_000)], 9.0 - FETCH_SLACK),  # the oldest fetch counts
    ([(4, 5, 10_000)], -math.inf),  # one message fetched, not handled yet
    ([(5, 5, 10_000), (4, 5, 12_000)], -math.inf),
    ([(0, None, None)], -math.inf),  # never fetched
    ([(0, 0, None)], -math.inf),
])
def test_handled_as_of(partitions: list[tuple[int, int | None, int | None]], expected: float) -> None:
    assert handled_as_of(partitions) == pytest.approx(expected)


def test_the_command_tail_can_be_recent_enough_between_two_idle_fetches() -> None:
    # An idle consumer's fetch comes back every FETCH_MAX_WAIT_MS: the tail must be able to
    # count as recent as COMMAND_NOTICE asks between two of them, or every batch would wait.
    assert FETCH_SLACK + FETCH_MAX_WAIT_MS / 1000 < COMMAND_NOTICE
