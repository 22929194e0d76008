"""What the bench measures: one job over HTTP (seconds to the 202 and to a terminal status, status-poll
latency during and after the upload, peak RSS and CPU seconds of every process), and what idle live
sockets cost the API. Processes are read from /proc (Linux)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import API_KEY, MB, BenchFailure
from bench.stack import BenchStack
from bulkjobs.domain.jobs import TERMINAL

POLL_INTERVAL = 0.1
UPLOAD_CHUNK = 1024 * 1024
PROGRESS_EVERY = 10.0  # seconds between progress lines while a job runs
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- processes -----------------------------------------------------------------------------


def clear_peak_rss(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def proc_status(pid: int, key: str) -> float:
    """A kB field of /proc/PID/status, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: cpu_seconds(pid) for name, pid in pids.items()}
    snap["bench"] = time.process_time()
    return snap


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --- one job over HTTP ---------------------------------------------------------------------


@dataclass
class JobRun:
    label: str
    records: int = 0
    body_mb: float = 0.0
    s_to_202: float = 0.0
    s_to_terminal: float = 0.0
    s_all_processed: float | None = None  # counts.processed == total (status topic) before results are in
    rate: float = 0.0
    polls: list[float] = field(default_factory=list)  # ms, after the 202
    upload_polls: list[float] = field(default_factory=list)  # ms, during the POST
    peak_rss: dict[str, float] = field(default_factory=dict)  # MB
    cpu_upload: dict[str, float] = field(default_factory=dict)  # CPU-s, POST to 202
    cpu_process: dict[str, float] = field(default_factory=dict)  # CPU-s, 202 to terminal
    # The API's own latency for the polls after the 202 (its histogram): {bucket's upper bound in s: count}
    server_polls: dict[float, float] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """One job to run: its body, how it is posted, and the counts it must end with."""

    label: str
    body: Path
    content_type: str
    query: str
    expect: dict[str, int]


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The body straight from disk, 1 MB at a time: the client never holds it."""
    with open(path, "rb") as f:  # noqa: ASYNC230 (a local file, read 1 MB at a time)
        while chunk := f.read(UPLOAD_CHUNK):
            yield chunk


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int, Any]:
    t = time.perf_counter()
    async with session.get(url, headers={"x-api-key": API_KEY}) as resp:
        body = await resp.read()
        status = resp.status
    ms = (time.perf_counter() - t) * 1000
    return ms, status, (orjson.loads(body) if body else None)


async def run_job(stack: BenchStack, session: aiohttp.ClientSession, job: Job, timeout: float) -> JobRun:
    """Post ``job``, follow it to a terminal status, and check it succeeded with the expected counts."""
    run = JobRun(job.label, records=job.expect["total"], body_mb=job.body.stat().st_size / MB)
    pids = stack.pids()
    stack.check_alive()
    for pid in pids.values():
        clear_peak_rss(pid)
    cpu0 = cpu_snapshot(pids)
    print(f"[{job.label}] POST {run.body_mb:.0f} MB ({job.content_type}) ...", flush=True)
    t0 = time.perf_counter()
    job_id = await _post(stack, session, job, run)
    cpu1 = cpu_snapshot(pids)
    print(f"[{job.label}] 202 after {run.s_to_202:.2f} s; job {job_id}", flush=True)
    served = await poll_histogram(stack, session)
    final = await _follow(stack, session, job_id, run, t0, timeout)
    run.server_polls = {le: count - served.get(le, 0.0) for le, count in (await poll_histogram(stack, session)).items()}
    cpu2 = cpu_snapshot(pids)
    run.s_to_terminal = time.perf_counter() - t0
    run.rate = run.records / run.s_to_terminal
    run.final = final
    run.peak_rss = {name: proc_status(pid, "VmHWM") for name, pid in pids.items()}
    run.cpu_upload = {name: cpu1[name] - cpu0[name] for name in cpu0}
    run.cpu_process = {name: cpu2[name] - cpu1[name] for name in cpu0}
    print(f"[{job.label}] {final['status']} after {run.s_to_terminal:.2f} s: {run.rate:,.0f} records/s; "
          f"counts {final['counts']}", flush=True)
    _check_ended_as_expected(job, final)
    return run


async def _post(stack: BenchStack, session: aiohttp.ClientSession, job: Job, run: JobRun) -> str:
    """POST the body while polling the job list (how the API answers while it ingests a body); the job id."""
    uploading = True

    async def poll_during_upload() -> None:
        next_at = time.perf_counter()
        while uploading:
            next_at += POLL_INTERVAL
            ms, status, _ = await timed_get(session, stack.base + "/v1/jobs?limit=1")
            if status == 200:
                run.upload_polls.append(ms)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    poller = asyncio.create_task(poll_during_upload())
    t0 = time.perf_counter()
    try:
        async with session.post(stack.base + "/v1/jobs" + job.query, data=file_chunks(job.body),
                                headers={"x-api-key": API_KEY, "Content-Type": job.content_type}) as resp:
            answer = await resp.read()
            status = resp.status
    finally:
        uploading = False
    run.s_to_202 = time.perf_counter() - t0
    await poller
    if status != 202:
        raise BenchFailure(f"[{job.label}] POST answered {status}: {answer[:500]!r}")
    return str(orjson.loads(answer)["id"])


async def _follow(stack: BenchStack, session: aiohttp.ClientSession, job_id: str, run: JobRun, t0: float,
                  timeout: float) -> dict[str, Any]:
    """Poll the job every POLL_INTERVAL until it is terminal (its last state); a progress line every 10 s."""
    deadline = t0 + timeout
    next_at = time.perf_counter()
    last_report = 0.0
    while True:
        next_at += POLL_INTERVAL
        ms, status, job = await timed_get(session, f"{stack.base}/v1/jobs/{job_id}")
        now = time.perf_counter()
        if status != 200:
            raise BenchFailure(f"[{run.label}] GET job answered {status}: {job}")
        run.polls.append(ms)
        processed = job["counts"]["processed"]
        if processed >= run.records and run.s_all_processed is None:
            run.s_all_processed = now - t0
        if job["status"] in TERMINAL:
            return dict(job)
        if now - last_report >= PROGRESS_EVERY:
            last_report = now
            print(f"[{run.label}]   {now - t0:6.1f} s  {job['status']:<12} {processed:>9,}/{run.records:,} processed",
                  flush=True)
        if now > deadline:
            raise BenchFailure(f"[{run.label}] not finished after {timeout:.0f} s: {job}")
        stack.check_alive()
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


POLL_ROUTE = "/v1/jobs/{job_id}"


async def poll_histogram(stack: BenchStack, session: aiohttp.ClientSession) -> dict[float, float]:
    """The API's latency histogram of ``GET /v1/jobs/{job_id}`` so far: {upper bound in s: count}.
    Beside the client's figures, it tells the API's own time from the wait for a core."""
    async with session.get(stack.metrics_url("api")) as resp:
        text = await resp.text()
    return {float(sample.labels["le"]): sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "bulkjobs_api_request_seconds_bucket"
            and sample.labels.get("method") == "GET" and sample.labels.get("route") == POLL_ROUTE}


def histogram_pct(buckets: dict[float, float], q: float) -> float:
    """The upper bound (s) of the bucket holding the ``q``th percentile of a cumulative histogram."""
    bounds = sorted(buckets)
    if not bounds or not buckets[bounds[-1]]:
        return float("nan")
    return next(le for le in bounds if buckets[le] >= q / 100 * buckets[bounds[-1]])


def _check_ended_as_expected(job: Job, final: dict[str, Any]) -> None:
    counts = final["counts"]
    wrong = [f"{key}={counts.get(key)} (expected {value})" for key, value in job.expect.items()
             if counts.get(key) != value]
    if final["status"] != "succeeded" or wrong:
        raise BenchFailure(f"[{job.label}] job ended {final['status']!r}, expected 'succeeded'"
                           + (f"; wrong counts: {', '.join(wrong)}" if wrong else "") + f"; job: {final}")


# --- idle live sockets ---------------------------------------------------------------------


async def idle_sockets(stack: BenchStack, count: int, seconds: float) -> dict[str, float]:
    """Issue 6: what ``count`` idle ``/v1/live`` sockets cost the API (CPU while idle, memory)."""
    api = stack.processes["api"].pid
    rss_before = proc_status(api, "VmRSS")
    url = f"ws://127.0.0.1:{stack.port}/v1/live?api_key={API_KEY}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(url) for _ in range(count)]
        rss_open = proc_status(api, "VmRSS")
        cpu_before = cpu_seconds(api)
        await asyncio.sleep(seconds)  # measuring idleness: there is nothing to wait for
        cpu = cpu_seconds(api) - cpu_before
        for ws in sockets:
            await ws.close()
    return {"sockets": count, "seconds": seconds, "cpu_s": cpu, "rss_mb": rss_open - rss_before}
