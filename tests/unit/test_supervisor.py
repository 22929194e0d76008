"""The restart rule of ``bulkjobs dev``'s supervisor, and a supervisor restarting a part that exits."""

from __future__ import annotations

import signal
import sys

import pytest

from bulkjobs.supervisor import Part, Supervisor, describe_exit, restart_delay


def test_restarts_wait_one_second_then_double_up_to_thirty() -> None:
    delays, previous = [], None
    for _ in range(8):
        previous = restart_delay(previous, ran_for=2.0)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize("ran_for, delay", [(0.0, 16.0), (59.9, 16.0), (60.0, 1.0), (3600.0, 1.0)])
def test_a_part_that_ran_a_minute_before_dying_is_restarted_after_one_second_again(ran_for: float,
                                                                                  delay: float) -> None:
    assert restart_delay(8.0, ran_for) == delay


@pytest.mark.parametrize("status, said", [(3, "exited with status 3"), (0, "exited with status 0"),
                                          (-signal.SIGKILL, "was killed by SIGKILL"),
                                          (-signal.SIGSEGV, "was killed by SIGSEGV")])
def test_an_exit_is_described_with_its_status_or_signal(status: int, said: str) -> None:
    assert describe_exit(status) == said


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_part_that_exits_is_logged_and_restarted_after_its_backoff_and_not_after_stop() -> None:
    clock, lines = Clock(), []
    part = Part("worker", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor = Supervisor([part], env={}, log=lines.append, clock=clock)
    supervisor.start()
    first = part.process
    first.wait(timeout=30)
    clock.now += 5
    supervisor.check()
    assert part.process is None
    assert lines == [f"bulkjobs dev: worker (pid {first.pid}) exited with status 3; restarting it in 1 s"]

    clock.now += 0.5
    supervisor.check()
    assert part.process is None  # still in its backoff

    clock.now += 0.5
    supervisor.check()
    assert part.process is not None and part.process.pid != first.pid
    assert lines[-1] == f"bulkjobs dev: worker restarted (pid {part.process.pid})"

    part.process.wait(timeout=30)
    clock.now += 1
    supervisor.check()
    assert lines[-1].endswith("exited with status 3; restarting it in 2 s")

    supervisor.stop()
    clock.now += 60
    supervisor.check()
    assert part.process is None and "restarted" not in lines[-1]
