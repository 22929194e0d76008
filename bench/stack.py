"""The bench's stack: a ``bulkjobs.devstack`` stack that also watches its broker, started with the
bench's limits, and a second worker added while it runs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
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
    before = log_count(stack.log_path("worker"), ASSIGNED)
    preloaded_before = log_count(stack.log_path("worker"), PRELOADED)
    started_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    t0 = time.perf_counter()
    second = stack.start("worker", "worker2")
    while True:
        stack.check_alive()
        reassigned = (log_count(stack.log_path("worker2"), ASSIGNED) > 0
                      and log_count(stack.log_path("worker"), ASSIGNED) > before)
        # The join's recovery (the newcomer loads the index it takes over) is not the job's work.
        preloaded = (log_count(stack.log_path("worker2"), PRELOADED) > 0
                     and log_count(stack.log_path("worker"), PRELOADED) > preloaded_before)
        workers = worker_assignments(stack.data_dir / "bulkjobs.db", started_iso)
        if reassigned and preloaded and shared(workers):
            break
        if time.perf_counter() - t0 > timeout:
            raise BenchFailure(f"two workers did not share the partitions after {timeout:.0f} s "
                               f"(heartbeats since start: {workers})")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # let the group settle before the job
    await wait_healthy(stack)
    first, other = workers.values()
    print(f"second worker (pid {second.pid}) in the group after {time.perf_counter() - t0:.1f} s; "
          f"partitions {sorted(first)} / {sorted(other)}", flush=True)
    return time.perf_counter() - t0
