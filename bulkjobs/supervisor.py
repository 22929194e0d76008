"""Keeps the parts ``bulkjobs dev`` runs alive, as a process supervisor would.

A part that exits (crashed, killed, or even cleanly) is started again after a backoff: 1 s, then
doubling up to 30 s while it keeps dying soon after its start; once it has run for a minute, the
next restart waits 1 s again. Each exit and restart is logged with the part's name, its exit
status and when it comes back. ``stop`` ends every part, and nothing is restarted after it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_DELAY = 1.0  # seconds before the first restart of a part
MOST_DELAY = 30.0
RESET_AFTER = 60.0  # a part that ran this long before it died is restarted after FIRST_DELAY again
STOP_TIMEOUT = 15.0  # seconds the parts have to exit after SIGTERM, before SIGKILL


def restart_delay(previous: float | None, ran_for: float) -> float:
    """Seconds to wait before restarting a part that exited after ``ran_for`` seconds, given
    the wait before its previous restart (None if it never restarted)."""
    if previous is None or ran_for >= RESET_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MOST_DELAY)


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


@dataclass
class Part:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay: float | None = None  # the wait before its latest restart
    restart_at: float | None = None  # when a dead part is due to start again


@dataclass
class Supervisor:
    """Runs each part as a child process and restarts the ones that exit; call ``check``
    regularly and ``stop`` once."""

    parts: list[Part]
    env: dict[str, str]
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    clock: Callable[[], float] = time.monotonic
    stopped: bool = False

    def start(self) -> None:
        for part in self.parts:
            self._start(part)

    def _start(self, part: Part) -> subprocess.Popen[bytes]:
        part.process = subprocess.Popen(part.args, env=self.env)
        part.started_at = self.clock()
        part.restart_at = None
        return part.process

    def check(self) -> None:
        """Note the parts that exited and start again those whose backoff is over."""
        if self.stopped:
            return
        now = self.clock()
        for part in self.parts:
            if part.process is not None and (status := part.process.poll()) is not None:
                part.delay = restart_delay(part.delay, now - part.started_at)
                part.restart_at = now + part.delay
                self.log(f"bulkjobs dev: {part.name} (pid {part.process.pid}) {describe_exit(status)}; "
                         f"restarting it in {part.delay:.0f} s")
                part.process = None
            elif part.process is None and part.restart_at is not None and now >= part.restart_at:
                process = self._start(part)
                self.log(f"bulkjobs dev: {part.name} restarted (pid {process.pid})")

    def stop(self) -> None:
        """SIGTERM to every running part, SIGKILL to those still running after STOP_TIMEOUT."""
        self.stopped = True
        running = [part.process for part in self.parts if part.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
