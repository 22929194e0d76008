"""The growth part of the bench: what a restart and a joining worker cost once N objects are live.

For each size it starts a broker and a stack, applies N objects (one external_id_set job),
waits until the worker has snapshotted every partition, then (1) restarts the worker and (2)
adds a second one. Each time it prints the seconds from the worker's start to its first applied
batch and to the end of a small job touching every partition, what the worker read of the
changes and snapshots topics to get there (from its metrics), and its peak RSS. Issue 12's
goals: restart and join at 1M within 1.5x of 100k and under 10 s; RSS under 60 B per object.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import API_KEY, MB, BenchFailure
from bench.measure import Job, proc_status, run_job
from bench.stack import ASSIGNED, BenchStack, log_count, wait_healthy
from bulkjobs.broker import free_port, start_broker

SMALL = 64  # records of the job run after a start: every partition gets some
SNAPSHOT_SECONDS = "1"  # snapshot soon after the load, rather than the default minute
SETTLED = 3.0  # seconds without a new snapshot after which every partition's is up to date
POLL = 0.1


@dataclass
class Start:
    """One worker's start: how long until it applied, what it read, its memory."""

    what: str
    first_batch_s: float
    small_job_s: float
    changes_messages: float
    changes_mb: float
    snapshot_messages: float
    snapshot_mb: float
    peak_rss_mb: float


def write_body(path: Path, object_type: str, n: int, version: int) -> Path:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"type": object_type, "external_id": f"g-{i}", "attributes": {"v": version}}) + b"\n")
    return path


def metric(url: str, name: str, **labels: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0  # not serving yet
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """The ``perf_counter`` at which ``condition`` was first seen true."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise BenchFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL)
    return time.perf_counter()


async def snapshots_settled(url: str, timeout: float) -> None:
    """Return once the worker has written no snapshot for ``SETTLED`` seconds."""
    last, since = metric(url, "bulkjobs_worker_snapshots_total"), time.perf_counter()
    deadline = since + timeout
    while time.perf_counter() - since < SETTLED:
        if time.perf_counter() > deadline:
            raise BenchFailure("the worker kept writing snapshots")
        await asyncio.sleep(POLL)
        now = metric(url, "bulkjobs_worker_snapshots_total")
        if now != last:
            last, since = now, time.perf_counter()


async def measured_start(stack: BenchStack, session: aiohttp.ClientSession, name: str, small: Job,
                         t0: float, timeout: float) -> Start:
    """After ``name`` was started at ``t0``: run the small job, wait for its first applied batch."""
    url = stack.metrics_url(name)
    applied = asyncio.create_task(wait_until(
        lambda: metric(url, "bulkjobs_worker_batches_total", outcome="applied") > 0, timeout, f"{name} to apply"))
    await run_job(stack, session, small, timeout)
    small_job_s = time.perf_counter() - t0
    first_batch_s = await applied - t0  # within POLL of it
    pid = stack.processes[name].pid
    return Start(
        what=name, first_batch_s=first_batch_s, small_job_s=small_job_s,
        changes_messages=metric(url, "bulkjobs_worker_changes_read_total", unit="messages"),
        changes_mb=metric(url, "bulkjobs_worker_changes_read_total", unit="bytes") / MB,
        snapshot_messages=metric(url, "bulkjobs_worker_snapshot_read_total", unit="messages"),
        snapshot_mb=metric(url, "bulkjobs_worker_snapshot_read_total", unit="bytes") / MB,
        peak_rss_mb=proc_status(pid, "VmHWM"),
    )


async def grow(stack: BenchStack, tmp: Path, n: int) -> list[Start]:
    timeout = 120 + n / 1000
    load = Job(f"load {n:,}", write_body(tmp / "load.ndjson", "growth", n, 1), "application/x-ndjson",
               "?type=resources&action=external_id_set",
               {"total": n, "processed": n, "created": n, "updated": 0, "failed": 0})
    small = Job(f"{SMALL} updates", write_body(tmp / "small.ndjson", "growth", SMALL, 2), "application/x-ndjson",
                "?type=resources&action=external_id_set",
                {"total": SMALL, "processed": SMALL, "created": 0, "updated": SMALL, "failed": 0})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=900)) as session:
        await wait_healthy(stack)
        await run_job(stack, session, load, timeout)
        await snapshots_settled(stack.metrics_url("worker"), timeout)
        first = stack.processes.pop("worker")
        first.terminate()  # leaves the group: the next worker joins at once
        await asyncio.to_thread(first.wait, 60)
        t0 = time.perf_counter()
        stack.start("worker", "restarted")
        restart = await measured_start(stack, session, "restarted", small, t0, timeout)
        before = log_count(stack.log_path("restarted"), ASSIGNED)
        t0 = time.perf_counter()
        stack.start("worker", "joining")
        await wait_until(lambda: log_count(stack.log_path("joining"), ASSIGNED) > 0
                         and log_count(stack.log_path("restarted"), ASSIGNED) > before, timeout, "the rebalance")
        join = await measured_start(stack, session, "joining", small, t0, timeout)
    return [restart, join]


def run_growth(tmp: Path, sizes: list[int]) -> dict[int, list[Start]]:
    """Every size on a fresh broker and stack; the starts measured, by size."""
    results: dict[int, list[Start]] = {}
    for n in sizes:
        broker = start_broker()
        data = tmp / f"growth-{n}"
        data.mkdir()
        stack = BenchStack(broker.address, data, keys={API_KEY: "bench"}, die_with_parent=True, broker=broker,
                           env_overrides={"BULKJOBS_MAX_RECORDS": str(max(n, 1_000_000)),
                                          "BULKJOBS_MAX_BODY_BYTES": str(n * 100 + 64 * MB),
                                          "BULKJOBS_SNAPSHOT_SECONDS": SNAPSHOT_SECONDS},
                           metrics_ports={name: free_port() for name in ("worker", "restarted", "joining")})
        try:
            for part in ("worker", "store", "api"):
                stack.start(part)
            print(f"[growth {n:,}] stack on {broker.address}", flush=True)
            results[n] = asyncio.run(grow(stack, data, n))
        finally:
            stack.stop()
            broker.stop()
    print_growth(results)
    return results


def print_growth(results: dict[int, list[Start]]) -> None:
    print("\nGrowth (issue 12): a worker's start once N objects are live", flush=True)
    print(f"{'objects':>10} {'start':>10} {'1st batch s':>12} {'64-rec job s':>13} {'changes read':>16} "
          f"{'snapshots read':>16} {'peak RSS MB':>12}")
    for n, starts in results.items():
        for s in starts:
            print(f"{n:>10,} {s.what:>10} {s.first_batch_s:>12.1f} {s.small_job_s:>13.1f} "
                  f"{s.changes_messages:>7,.0f} {s.changes_mb:>6.1f} MB {s.snapshot_messages:>7,.0f} "
                  f"{s.snapshot_mb:>6.1f} MB {s.peak_rss_mb:>12.0f}")
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for i, what in enumerate(("restart", "join")):
            ratio = results[large][i].first_batch_s / results[small][i].first_batch_s
            print(f"{what}: {large:,} / {small:,} objects = {ratio:.2f}x (goal <= 1.5x, and < 10 s)")
        per_object = ((results[large][0].peak_rss_mb - results[small][0].peak_rss_mb) * MB / (large - small))
        print(f"restarted worker's peak RSS per live object: {per_object:.0f} B (goal < 60 B)", flush=True)
