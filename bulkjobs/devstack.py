"""A bulkjobs deployment started as child processes on a given broker: the tests' and the benchmark's stack.

It owns how such a stack is run: the environment its parts read (``BULKJOBS_*``), starting a part
(``python -m bulkjobs PART``, output in ``DATA_DIR/PART.log``), waiting until the API is healthy,
killing one part and stopping all of them. It restarts nothing: ``bulkjobs dev`` keeps its parts
alive with ``bulkjobs.supervisor`` instead. The broker is not its own; whoever started it stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from bulkjobs.broker import free_port

PARTS = ("worker", "store", "api")
STOP_ORDER = ("api", "store")  # then the workers: nothing new comes in while they finish
# Parts are killed and added while a test or the bench runs: a short session lets the group notice soon.
FAST_REBALANCE = {"BULKJOBS_SESSION_TIMEOUT": "2", "BULKJOBS_HEARTBEAT_INTERVAL": "0.6"}

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)  # loaded before any fork
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the process that started it dies without cleaning up."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class StackFailed(Exception):
    """A part of the stack exited, or the stack did not become healthy in time."""


@dataclass
class Stack:
    """The parts of one bulkjobs deployment, with their own data dir, port and (optionally) topic prefix.

    ``die_with_parent`` makes each part die with the thread that started it (Linux): for a
    program that starts its stack from its main thread, so that nothing outlives it.
    """

    brokers: str
    data_dir: Path
    prefix: str | None = None  # None: the default topic prefix
    env_overrides: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # API key -> tenant
    port: int = field(default_factory=free_port)
    # The port a process (by name: worker, store...) serves its metrics on; the API serves them on its own.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    die_with_parent: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "BULKJOBS_KAFKA_BROKERS": self.brokers,
            "BULKJOBS_DATA_DIR": str(self.data_dir),
            "BULKJOBS_API_KEYS": ",".join(f"{key}={tenant}" for key, tenant in self.keys.items()),
            "BULKJOBS_PORT": str(self.port),
            **FAST_REBALANCE,
        })
        if self.prefix is not None:
            env["BULKJOBS_TOPIC_PREFIX"] = self.prefix
        env.update(self.env_overrides)
        return env

    def metrics_url(self, name: str) -> str:
        """Where the process ``name`` serves its metrics."""
        if name == "api":
            return self.base + "/metrics"
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def start(self, part: str, name: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``part`` (worker, store or api) as ``name`` (default: the part), logging to ``name.log``."""
        name = name or part
        env = self.env
        if name in self.metrics_ports:
            env["BULKJOBS_METRICS_PORT"] = str(self.metrics_ports[name])
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "bulkjobs", part], env=env, stdout=log,
                                       stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.processes[name] = process
        return process

    def start_all(self) -> Self:
        """Start every part and wait until the API is healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for part in PARTS:
            self.start(part)
        self.wait_healthy()
        return self

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackFailed(f"{name} (pid {process.pid}) exited with {process.returncode}; the logs "
                                  f"end:\n{self.log_tails()}")

    def healthy(self) -> bool:
        """Whether the API answers its health check; raises StackFailed if a part exited."""
        self.check_alive()
        try:
            with urllib.request.urlopen(self.base + "/v1/health", timeout=10) as resp:
                return resp.status == 200
        except OSError:  # not listening yet, or answering 503
            return False

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Seconds until the API is healthy; StackFailed after ``timeout``."""
        started = time.monotonic()
        while not self.healthy():
            if time.monotonic() - started > timeout:
                raise StackFailed(f"the stack was not healthy after {timeout:.0f} s; the logs are in "
                                  f"{self.data_dir}, and end:\n{self.log_tails()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def _stop_order(self) -> list[str]:
        order = [name for name in STOP_ORDER if name in self.processes]
        return order + [name for name in self.processes if name not in order]

    def terminate(self) -> None:
        """SIGTERM to every part still running (API first, workers last), without waiting:
        several stacks stop side by side."""
        for name in self._stop_order():
            if self.processes[name].poll() is None:
                self.processes[name].terminate()

    def stop(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM to every part (API first, workers last), SIGKILL to those still running after
        ``timeout`` seconds; returns the names of the killed ones."""
        order = self._stop_order()
        self.terminate()
        deadline = time.monotonic() + timeout
        killed = []
        for name in order:
            process = self.processes[name]
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(name)
                process.kill()
                process.wait()
        self.processes.clear()
        return killed

    def log_tails(self, lines: int = 25) -> str:
        """The last ``lines`` lines of each part's log."""
        out = []
        for name in self.processes:
            path = self.log_path(name)
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- last {len(text)} lines of {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)
