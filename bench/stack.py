"""The bench's stack: a ``bulkjobs.devstack`` stack that also watches its broker, started with the
bench's limits, and a second worker added while it runs (and stopped again)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import API_KEY, MB, BenchFailure
from bulkjobs.broker import EmbeddedBroker
from bulkjobs.devstack import Stack
from bulkjobs.streams.state import PRELOADED

PARTITIONS = 8  # bulkjobs' default (Settings.partitions)
ASSIGNED = "Setting newly assigned partitions"  # what a Faust worker logs after a rebalance


@dataclass
class BenchStack(Stack):
    """The stack and the broker it runs on (which the bench started, and stops after it)."""

    broker: EmbeddedBroker | None = None

    def pids(self) -> dict[str, int]:
        """Every process the bench measures, by name."""
        pids = {name: process.pid for name, process in self.processes.items()}
        if self.broker is not None:
            pids["broker"] = self.broker.process.pid
        return pids

    def check_alive(self) -> None:
        super().check_alive()
        if self.broker is not None and (status := self.broker.process.poll()) is not None:
            raise BenchFailure(f"broker (pid {self.broker.process.pid}) exited with {status}")


def start_stack(broker: EmbeddedBroker, data_dir: Path, n: int, largest_body: int) -> BenchStack:
    """Worker, store feeder and API on ``broker``, allowed ``n`` records and the largest body."""
    data_dir.mkdir()
    limits = {"BULKJOBS_MAX_RECORDS": str(max(n, 1_000_000)),
              "BULKJOBS_MAX_BODY_BYTES": str(largest_body * 2 + 64 * MB)}
    stack = BenchStack(broker.address, data_dir, env_overrides=limits, keys={API_KEY: "bench"}, die_with_parent=True,
                       broker=broker)
    for part in ("worker", "store", "api"):
        stack.start(part)
    return stack


async def wait_healthy(stack: Stack, timeout: float = 120.0) -> float:
    """Seconds until the API is healthy (the event loop keeps running meanwhile)."""
    return await asyncio.to_thread(stack.wait_healthy, timeout)


def worker_assignments(db_path: Path, since: str) -> dict[str, set[int]]:
    """Partitions each worker reported in a heartbeat written after ``since`` (from the view)."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT worker, partitions FROM workers WHERE at > ?", (since,)).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return {worker: set(json.loads(partitions)) for worker, partitions in rows}


def log_count(path: Path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except OSError:
        return 0


def shared(assignments: dict[str, set[int]]) -> bool:
    """Whether two workers hold every partition between them, none twice and none idle."""
    sets = list(assignments.values())
    return (len(sets) == 2 and all(sets) and not (sets[0] & sets[1])
            and (sets[0] | sets[1]) == set(range(PARTITIONS)))


async def add_worker(stack: Stack, timeout: float = 90.0) -> float:
    """Start a second worker and wait until the two share the partitions, each with the object
    index of its partitions loaded (and the API is healthy)."""
    t0, marks = time.time(), _marks(stack, ("worker", "worker2"))
    second = stack.start("worker", "worker2")
    workers = await _settled(stack, marks, t0, timeout, shared)
    first, other = workers.values()
    took = time.time() - t0
    print(f"second worker (pid {second.pid}) in the group after {took:.1f} s; "
          f"partitions {sorted(first)} / {sorted(other)}", flush=True)
    return took


async def remove_worker(stack: Stack, timeout: float = 90.0) -> float:
    """Stop the second worker (SIGTERM: it hands its partitions over) and wait until the first
    holds them all, with their object index loaded (and the API is healthy)."""
    t0, marks = time.time(), _marks(stack, ("worker",))
    second = stack.processes.pop("worker2")
    second.terminate()
    await asyncio.to_thread(second.wait, timeout)
    await _settled(stack, marks, t0, timeout, lambda workers: set(range(PARTITIONS)) in workers.values())
    took = time.time() - t0
    print(f"second worker left; the first holds every partition after {took:.1f} s", flush=True)
    return took


def _marks(stack: Stack, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """How many rebalances and index loads each worker of ``names`` has logged so far."""
    return {name: (log_count(stack.log_path(name), ASSIGNED), log_count(stack.log_path(name), PRELOADED))
            for name in names}


async def _settled(stack: Stack, marks: dict[str, tuple[int, int]], t0: float, timeout: float,
                   split: Callable[[dict[str, set[int]]], bool]) -> dict[str, set[int]]:
    """Wait until each worker of ``marks`` logged a rebalance and then its object index loaded
    (more of each than ``marks`` counts), and the heartbeats sent since ``t0`` show the
    partitions split as ``split`` wants (``t0``: a ``time.time()``); the heartbeats' partitions by
    worker. The rebalance's recovery (a worker loads the index it takes over) is not the next
    job's work."""
    started_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0))
    while True:
        stack.check_alive()
        loaded = all(log_count(stack.log_path(name), ASSIGNED) > assigned
                     and log_count(stack.log_path(name), PRELOADED) > preloaded
                     for name, (assigned, preloaded) in marks.items())
        workers = worker_assignments(stack.data_dir / "bulkjobs.db", started_iso)
        if loaded and split(workers):
            break
        if time.time() - t0 > timeout:
            raise BenchFailure(f"the workers' partitions did not settle after {timeout:.0f} s "
                               f"(heartbeats since: {workers})")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # let the group settle before the job
    await wait_healthy(stack)
    return workers
