"""bulkjobs benchmark: a 1,000,000-record external_id_set job end to end, JSON and NDJSON.

Starts an embedded Tansu broker and a stack (one worker, the store feeder, the API) in a
temporary data dir, submits the same records as a JSON envelope and as NDJSON (streamed from
disk), polls the job until it ends, and prints: seconds to the 202 and to a terminal status,
records/s end to end, status-poll latency, peak RSS and CPU seconds of every process. In the
same run it times a plain single-process script (stdlib json + sqlite3) on the same body, and
the NDJSON job again with a second worker. A table at the end puts the figures next to the
goals of issue 3.

    .venv/bin/python bench/bench.py              # 1,000,000 records (several minutes)
    .venv/bin/python bench/bench.py --quick      # 100,000 records
    .venv/bin/python bench/bench.py --records 250000 --keep

It is a benchmark, not a test: figures from a shared 2-core machine are noisy; compare ratios
measured in one run. It exits non-zero when a job does not end as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bulkjobs.broker import EmbeddedBroker, free_port, start_broker

API_KEY = "bench"
TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}
POLL_INTERVAL = 0.1
IDLE_SOCKETS = 1000  # issue 6: a thousand idle live sockets cost nothing noticeable
IDLE_SECONDS = 10.0
UPLOAD_CHUNK = 1024 * 1024
PARTITIONS = 8  # bulkjobs' default (Settings.partitions)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024

# Goals from issue 3 ("Benchmark"), defined for 1,000,000 records.
GOAL_RATIO = 0.6
GOAL_202_S = 10.0
GOAL_API_RSS_MB = 200.0
GOAL_POLL_P99_MS = 50.0


class BenchFailure(Exception):
    """A job did not end as it should, or a process of the stack died."""


# --- processes -----------------------------------------------------------------------------


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)  # loaded before any fork
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the bench process dies without cleaning up."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Stack:
    data_dir: Path
    broker: EmbeddedBroker
    env: dict[str, str]
    port: int
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, part: str) -> Proc:
        log_path = self.data_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen([sys.executable, "-m", "bulkjobs", part], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509 (one libc call, no locks)
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def all_procs(self) -> dict[str, Proc]:
        return {**self.procs, "broker": Proc("broker", self.broker.process)}

    def check_alive(self) -> None:
        for proc in self.all_procs().values():
            if proc.popen.poll() is not None:
                raise BenchFailure(f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}"
                                   + (f"; see {proc.log}" if proc.log else ""))

    def stop(self) -> None:
        """Terminate every process this bench started, then kill what is left after a timeout."""
        order: list[str] = [name for name in ("api", "store", "worker2", "worker") if name in self.procs]
        order += [name for name in self.procs if name not in order]
        for name in order:
            popen = self.procs[name].popen
            if popen.poll() is None:
                popen.terminate()
        deadline = time.monotonic() + 20
        for name in order:
            popen = self.procs[name].popen
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {popen.pid}) did not stop in time: killed", flush=True)
                popen.kill()
                popen.wait()
        self.broker.stop()

    def log_tails(self, lines: int = 25) -> str:
        out = []
        for proc in self.procs.values():
            if proc.log and proc.log.exists():
                text = proc.log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- last {len(text)} lines of {proc.name}.log ---\n" + "\n".join(text))
        return "\n".join(out)


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


def cpu_snapshot(procs: dict[str, Proc]) -> dict[str, float]:
    snap = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
    snap["bench"] = time.process_time()
    return snap


# --- data ----------------------------------------------------------------------------------


COLORS = ("red", "green", "blue", "black", "white", "amber")
SIZES = ("XS", "S", "M", "L", "XL")


def record(object_type: str, i: int) -> bytes:
    """About 150 bytes of JSON."""
    return orjson.dumps({
        "type": object_type,
        "external_id": f"ext-{i:08d}",
        "attributes": {"name": f"Item {i}", "price": round(5 + (i % 9973) * 0.37, 2), "color": COLORS[i % 6],
                       "size": SIZES[i % 5], "stock": i % 1000, "tags": [f"g{i % 97}"]},
    })


def write_json_body(path: Path, object_type: str, n: int) -> int:
    with open(path, "wb") as f:
        f.write(b'{"type":"resources","action":"external_id_set","description":"bench","data":[')
        for start in range(0, n, 10_000):
            part = b",".join(record(object_type, i) for i in range(start, min(n, start + 10_000)))
            f.write(part if start == 0 else b"," + part)
        f.write(b"]}")
    return path.stat().st_size


CSV_HEADER = b"external_id,name,price,color,size,stock,tags\n"
# The CSV job types its columns as the JSON records are typed, so that both write the same objects.
CSV_MAPPINGS = [{"api_name": name, "index": i, **({"type": t} if t else {})} for i, (name, t) in enumerate(
    [("external_id", None), ("name", None), ("price", "number"), ("color", None), ("size", None),
     ("stock", "integer"), ("tags", "list")])]


def write_csv_body(path: Path, n: int) -> int:
    """The same records as ``record`` makes, as CSV rows (about 60 bytes each)."""
    with open(path, "wb") as f:
        f.write(CSV_HEADER)
        for start in range(0, n, 10_000):
            f.write("".join(
                f"ext-{i:08d},Item {i},{round(5 + (i % 9973) * 0.37, 2)},{COLORS[i % 6]},{SIZES[i % 5]},"
                f"{i % 1000},g{i % 97}\n" for i in range(start, min(n, start + 10_000))).encode())
    return path.stat().st_size


def write_ndjson_body(path: Path, object_type: str, n: int) -> int:
    with open(path, "wb") as f:
        f.writelines(b"".join(record(object_type, i) + b"\n" for i in range(start, min(n, start + 10_000)))
                     for start in range(0, n, 10_000))
    return path.stat().st_size


# --- the baseline: what a user would write instead -----------------------------------------


def baseline(body: Path, db_path: Path) -> dict[str, float]:
    """Parse the JSON body with the stdlib, upsert every record and a result row into SQLite."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    t0 = time.perf_counter()
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("""CREATE TABLE objects (type TEXT NOT NULL, external_id TEXT NOT NULL, id TEXT NOT NULL,
                  attributes TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                  PRIMARY KEY (type, external_id))""")
    db.execute("""CREATE TABLE results (job TEXT NOT NULL, idx INTEGER NOT NULL, success INTEGER NOT NULL,
                  id TEXT, PRIMARY KEY (job, idx))""")
    with open(body, "rb") as f:
        request = json.load(f)
    t_parsed = time.perf_counter()
    job = "baseline-job"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    upsert = ("INSERT INTO objects (id, type, external_id, attributes, created_at, updated_at) "
              "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, external_id) DO UPDATE SET "
              "attributes = excluded.attributes, updated_at = excluded.updated_at")
    data = request["data"]
    for start in range(0, len(data), 5000):
        objects, results = [], []
        for index in range(start, min(len(data), start + 5000)):
            rec = data[index]
            key = f"{rec['type']}\x00{rec['external_id']}".encode()
            object_id = hashlib.blake2b(key, digest_size=16).hexdigest()
            objects.append((object_id, rec["type"], rec["external_id"], json.dumps(rec.get("attributes", {})), at, at))
            results.append((job, index, 1, object_id))
        db.execute("BEGIN")
        db.executemany(upsert, objects)
        db.executemany("INSERT OR REPLACE INTO results (job, idx, success, id) VALUES (?, ?, ?, ?)", results)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    rows = db.execute("SELECT count(*) FROM objects").fetchone()[0]
    db.close()
    if rows != len(data):
        raise BenchFailure(f"baseline wrote {rows} objects for {len(data)} records")
    return {"seconds": elapsed, "parse_s": t_parsed - t0, "rate": len(data) / elapsed}


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
    final: dict[str, Any] = field(default_factory=dict)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


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


async def run_job(stack: Stack, session: aiohttp.ClientSession, label: str, body: Path, content_type: str,
                  query: str, expect: dict[str, int], timeout: float) -> JobRun:
    run = JobRun(label, records=expect["total"], body_mb=body.stat().st_size / MB)
    procs = stack.all_procs()
    stack.check_alive()
    for proc in procs.values():
        clear_peak_rss(proc.pid)
    cpu0 = cpu_snapshot(procs)
    print(f"[{label}] POST {run.body_mb:.0f} MB ({content_type}) ...", flush=True)

    uploading = True

    async def poll_during_upload() -> None:  # how the API answers while it ingests a body
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
        async with session.post(stack.base + "/v1/jobs" + query, data=file_chunks(body),
                                headers={"x-api-key": API_KEY, "Content-Type": content_type}) as resp:
            answer = await resp.read()
            status = resp.status
    finally:
        uploading = False
    t_202 = time.perf_counter()
    await poller
    cpu1 = cpu_snapshot(procs)
    run.s_to_202 = t_202 - t0
    if status != 202:
        raise BenchFailure(f"[{label}] POST answered {status}: {answer[:500]!r}")
    job = orjson.loads(answer)
    print(f"[{label}] 202 after {run.s_to_202:.2f} s; job {job['id']}", flush=True)

    deadline = t0 + timeout
    next_at = time.perf_counter()
    last_report = 0.0
    while True:
        next_at += POLL_INTERVAL
        ms, status, job = await timed_get(session, f"{stack.base}/v1/jobs/{job['id']}")
        now = time.perf_counter()
        if status != 200:
            raise BenchFailure(f"[{label}] GET job answered {status}: {job}")
        run.polls.append(ms)
        processed = job["counts"]["processed"]
        if processed >= run.records and run.s_all_processed is None:
            run.s_all_processed = now - t0
        if job["status"] in TERMINAL:
            break
        if now - last_report >= 10:
            last_report = now
            print(f"[{label}]   {now - t0:6.1f} s  {job['status']:<12} {processed:>9,}/{run.records:,} processed",
                  flush=True)
        if now > deadline:
            raise BenchFailure(f"[{label}] not finished after {timeout:.0f} s: {job}")
        stack.check_alive()
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    t_end = time.perf_counter()
    cpu2 = cpu_snapshot(procs)
    run.s_to_terminal = t_end - t0
    run.rate = run.records / run.s_to_terminal
    run.final = job
    run.peak_rss = {name: proc_status(proc.pid, "VmHWM") for name, proc in procs.items()}
    run.cpu_upload = {name: cpu1[name] - cpu0[name] for name in cpu0}
    run.cpu_process = {name: cpu2[name] - cpu1[name] for name in cpu0}
    print(f"[{label}] {job['status']} after {run.s_to_terminal:.2f} s: {run.rate:,.0f} records/s; "
          f"counts {job['counts']}", flush=True)

    counts = job["counts"]
    wrong = [f"{key}={counts.get(key)} (expected {value})" for key, value in expect.items() if counts.get(key) != value]
    if job["status"] != "succeeded" or wrong:
        raise BenchFailure(f"[{label}] job ended {job['status']!r}, expected 'succeeded'"
                           + (f"; wrong counts: {', '.join(wrong)}" if wrong else "") + f"; job: {job}")
    return run


# --- the stack -----------------------------------------------------------------------------


async def wait_healthy(stack: Stack, session: aiohttp.ClientSession, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while True:
        stack.check_alive()
        try:
            async with session.get(stack.base + "/v1/health") as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except aiohttp.ClientError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise BenchFailure(f"the stack was not healthy after {timeout:.0f} s\n{stack.log_tails()}")
        await asyncio.sleep(0.2)


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


async def add_worker(stack: Stack, session: aiohttp.ClientSession, timeout: float = 90.0) -> float:
    """Start a second worker and wait until the two share the partitions (and the API is healthy)."""
    assigned = "Setting newly assigned partitions"
    before = log_count(stack.procs["worker"].log, assigned)  # type: ignore[arg-type]
    started_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    t0 = time.perf_counter()
    second = stack.start("worker2", "worker")
    while True:
        stack.check_alive()
        reassigned = (log_count(second.log, assigned) > 0  # type: ignore[arg-type]
                      and log_count(stack.procs["worker"].log, assigned) > before)  # type: ignore[arg-type]
        workers = worker_assignments(stack.data_dir / "bulkjobs.db", started_iso)
        sets = list(workers.values())
        shared = (len(sets) == 2 and all(sets) and not (sets[0] & sets[1])
                  and (sets[0] | sets[1]) == set(range(PARTITIONS)))
        if reassigned and shared:
            break
        if time.perf_counter() - t0 > timeout:
            raise BenchFailure(f"two workers did not share the partitions after {timeout:.0f} s "
                               f"(heartbeats since start: {workers})\n{stack.log_tails()}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # let the group settle before the job
    await wait_healthy(stack, session)
    print(f"second worker (pid {second.pid}) in the group after {time.perf_counter() - t0:.1f} s; "
          f"partitions {sorted(sets[0])} / {sorted(sets[1])}", flush=True)
    return time.perf_counter() - t0


# --- report --------------------------------------------------------------------------------


def print_table(n: int, runs: list[JobRun], base: list[dict[str, float]], elapsed: float) -> list[str]:
    base_rate = statistics.mean(b["rate"] for b in base)
    at_scale = n >= 1_000_000
    misses: list[str] = []

    def verdict(ok: bool, what: str) -> str:
        if not ok:
            misses.append(what)
        text = "ok" if ok else "MISS"
        return text if at_scale else text + "*"

    heads = [r.label for r in runs]
    width = max(14, *(len(h) for h in heads)) + 2
    rows: list[tuple[str, list[str], str, str]] = []

    def row(name: str, values: list[str], goal: str = "", met: str = "") -> None:
        rows.append((name, values, goal, met))

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    row("records", [f"{r.records:,}" for r in runs])
    row("body MB", [f"{r.body_mb:.1f}" for r in runs])
    row("s to 202", [f"{r.s_to_202:.2f}" for r in runs], f"<= {GOAL_202_S:.0f} s",
        verdict(all(r.s_to_202 <= GOAL_202_S for r in runs[:2]), "202 within 10 s"))
    row("s to counts.processed=N", [fmt(r.s_all_processed, ".2f") for r in runs])
    row("s to terminal", [f"{r.s_to_terminal:.2f}" for r in runs])
    row("records/s end to end", [f"{r.rate:,.0f}" for r in runs])
    row("x baseline", [f"{r.rate / base_rate:.2f}" for r in runs], f">= {GOAL_RATIO}",
        verdict(all(r.rate / base_rate >= GOAL_RATIO for r in runs[:2]), "end to end >= 0.6x baseline"))
    row("poll p50 ms (after 202)", [f"{pct(r.polls, 50):.1f}" for r in runs])
    row("poll p99 ms (after 202)", [f"{pct(r.polls, 99):.1f}" for r in runs], f"< {GOAL_POLL_P99_MS:.0f} ms",
        verdict(all(pct(r.polls, 99) < GOAL_POLL_P99_MS for r in runs), "poll p99 < 50 ms"))
    row("poll max ms / polls", [f"{max(r.polls):.0f} / {len(r.polls)}" for r in runs])
    row("poll p50/p99 ms in POST", [f"{pct(r.upload_polls, 50):.0f} / {pct(r.upload_polls, 99):.0f}" for r in runs],
        "(info)")
    for name in ("api", "worker", "worker2", "store", "broker"):
        if not any(name in r.peak_rss for r in runs):
            continue
        goal, met = "", ""
        if name == "api":
            goal = f"< {GOAL_API_RSS_MB:.0f} MB"
            met = verdict(all(r.peak_rss["api"] < GOAL_API_RSS_MB for r in runs[:2]), "API peak RSS < 200 MB")
        row(f"peak RSS MB {name}", [fmt(r.peak_rss.get(name), ".0f") for r in runs], goal, met)
    for name in ("bench", "api", "worker", "worker2", "store", "broker"):
        if not any(name in r.cpu_upload for r in runs):
            continue
        row(f"CPU-s {name} (POST / after, %)",
            [f"{r.cpu_upload[name]:.1f} / {r.cpu_process[name]:.1f} "
             f"{100 * r.cpu_process[name] / (r.s_to_terminal - r.s_to_202):3.0f}%"
             if name in r.cpu_upload else "-" for r in runs])

    name_w = max(len(r[0]) for r in rows) + 2
    lines = []
    sep = "-" * (name_w + width * len(runs) + 26)
    lines.append(sep)
    lines.append("".ljust(name_w) + "".join(h.rjust(width) for h in heads) + "   goal (issue 3)".ljust(20) + "met")
    lines.append(sep)
    for name, values, goal, met in rows:
        lines.append(name.ljust(name_w) + "".join(v.rjust(width) for v in values) + "   " + goal.ljust(17) + met)
    lines.append(sep)
    b_text = ", ".join(f"{b['rate']:,.0f} ({b['seconds']:.2f} s, parse {b['parse_s']:.2f} s)" for b in base)
    lines.append(f"baseline (stdlib json.load; objects keyed by (type, external_id) upserted + result rows, executemany in 5,000-row transactions), records/s: {b_text}")
    lines.append(f"  mean {base_rate:,.0f} records/s is the reference for 'x baseline' (issue: 55-67k/s here)")
    labelled = {r.label: r for r in runs}
    if "NDJSON 2 workers" in labelled:
        one, two = labelled["NDJSON"], labelled["NDJSON 2 workers"]
        lines.append(f"1 vs 2 workers (NDJSON): {one.rate:,.0f} vs {two.rate:,.0f} records/s ({two.rate / one.rate:.2f}x)")
    csv_runs = [r for r in runs if r.label.startswith("CSV ")]
    if csv_runs:
        csv_run, json_run = csv_runs[0], next(r for r in runs if r.label.startswith("JSON "))
        lines.append(f"CSV vs JSON, {csv_run.records:,} records each (issue 4: the same rate): {csv_run.rate:,.0f} vs "
                     f"{json_run.rate:,.0f} records/s ({csv_run.rate / json_run.rate:.2f}x); API peak RSS "
                     f"{csv_run.peak_rss['api']:.0f} vs {json_run.peak_rss['api']:.0f} MB")
    lines.append("CPU-s: CPU seconds of each process from POST start to the 202 / from the 202 to terminal, and "
                 "the latter as % of one core (bench = this client). Wall: " + ", ".join(
                     f"{r.label} {r.s_to_202:.1f} / {r.s_to_terminal - r.s_to_202:.1f} s" for r in runs))
    if not at_scale:
        lines.append(f"* goals are defined for 1,000,000 records; this run had {n:,}")
    lines.append(f"bench wall time {elapsed:.0f} s; figures are from a shared, noisy machine")
    lines.append(sep)
    print("\n".join(lines), flush=True)
    return misses


# --- main ----------------------------------------------------------------------------------


async def idle_sockets(stack: Stack, count: int, seconds: float) -> dict[str, float]:
    """Issue 6: what ``count`` idle ``/v1/live`` sockets cost the API (CPU while idle, memory)."""
    api = stack.procs["api"].pid
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


async def bench(stack: Stack, n: int, csv_n: int, bodies: dict[str, Path]) -> tuple[list[JobRun], dict[str, float]]:
    timeout = 120 + n / 1000
    conn = aiohttp.TCPConnector(limit=20)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=900)
    async with aiohttp.ClientSession(connector=conn, timeout=client_timeout) as session:
        healthy_after = await wait_healthy(stack, session)
        print(f"stack healthy after {healthy_after:.1f} s", flush=True)
        runs = []
        expect = {"total": n, "processed": n, "created": n, "updated": 0, "failed": 0}
        runs.append(await run_job(stack, session, "JSON", bodies["json"], "application/json", "", expect, timeout))
        ndjson_query = "?type=resources&action=external_id_set&description=bench"
        runs.append(await run_job(stack, session, "NDJSON", bodies["ndjson"], "application/x-ndjson",
                                  ndjson_query, expect, timeout))
        # Issue 4: a CSV job beside a JSON job of the same records and size.
        expect_small = {"total": csv_n, "processed": csv_n, "created": csv_n, "updated": 0, "failed": 0}
        runs.append(await run_job(stack, session, f"JSON {csv_n // 1000}k", bodies["json_small"], "application/json",
                                  "", expect_small, timeout))
        csv_query = "?" + urllib.parse.urlencode({"operation": "upsert", "object_type": "bench-csv",
                                                  "field_mappings": json.dumps(CSV_MAPPINGS), "description": "bench"})
        runs.append(await run_job(stack, session, f"CSV {csv_n // 1000}k", bodies["csv"], "text/csv", csv_query,
                                  expect_small, timeout))
        await add_worker(stack, session)
        runs.append(await run_job(stack, session, "NDJSON 2 workers", bodies["ndjson2"], "application/x-ndjson",
                                  ndjson_query, expect, timeout))
    return runs, await idle_sockets(stack, IDLE_SOCKETS, IDLE_SECONDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per job (default 1,000,000)")
    parser.add_argument("--csv-rows", type=int, default=200_000, help="rows of the CSV job (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 records (20,000 CSV rows), for a fast check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, view, bodies)")
    args = parser.parse_args()
    n = 100_000 if args.quick else args.records
    csv_n = 20_000 if args.quick else args.csv_rows
    if n < 1 or csv_n < 1:
        parser.error("--records and --csv-rows must be positive")

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks below

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bulkjobs-bench-"))
    stack: Stack | None = None
    broker: EmbeddedBroker | None = None
    print(f"bulkjobs bench: {n:,} records per job; temp dir {tmp}", flush=True)
    try:
        bodies = {"json": tmp / "body.json", "ndjson": tmp / "body.ndjson", "ndjson2": tmp / "body2.ndjson",
                  "json_small": tmp / "small.json", "csv": tmp / "body.csv"}
        t = time.perf_counter()
        sizes = [write_json_body(bodies["json"], "bench-json", n),
                 write_ndjson_body(bodies["ndjson"], "bench-ndjson", n),
                 write_ndjson_body(bodies["ndjson2"], "bench-ndjson-2w", n),
                 write_json_body(bodies["json_small"], "bench-json-small", csv_n),
                 write_csv_body(bodies["csv"], csv_n)]
        print(f"generated bodies in {time.perf_counter() - t:.1f} s: "
              + ", ".join(f"{p.name} {s / MB:.1f} MB" for p, s in zip(bodies.values(), sizes))
              + f" ({(sizes[1] / n) - 1:.0f} bytes a record)", flush=True)

        base = [baseline(bodies["json"], tmp / "baseline.db")]
        print(f"baseline: {base[0]['rate']:,.0f} records/s ({base[0]['seconds']:.2f} s)", flush=True)

        broker = start_broker()
        data_dir = tmp / "data"
        data_dir.mkdir()
        port = free_port()
        env = dict(os.environ)
        env.update({
            "BULKJOBS_KAFKA_BROKERS": broker.address,
            "BULKJOBS_DATA_DIR": str(data_dir),
            "BULKJOBS_API_KEYS": f"{API_KEY}=bench",
            "BULKJOBS_PORT": str(port),
            "BULKJOBS_SESSION_TIMEOUT": "2",
            "BULKJOBS_HEARTBEAT_INTERVAL": "0.6",
            "BULKJOBS_MAX_RECORDS": str(max(n, 1_000_000)),
            "BULKJOBS_MAX_BODY_BYTES": str(max(sizes) * 2 + 64 * MB),
        })
        stack = Stack(data_dir, broker, env, port)
        for name in ("worker", "store", "api"):
            stack.start(name, name)
        print(f"broker on {broker.address} (pid {broker.process.pid}); "
              + ", ".join(f"{p.name} pid {p.pid}" for p in stack.procs.values()) + f"; API on {stack.base}",
              flush=True)

        runs, idle = asyncio.run(bench(stack, n, csv_n, bodies))

        base.append(baseline(bodies["json"], tmp / "baseline.db"))  # again, to show the noise
        print(f"baseline again: {base[1]['rate']:,.0f} records/s ({base[1]['seconds']:.2f} s)", flush=True)
        misses = print_table(n, runs, base, time.perf_counter() - started)
        print(f"{idle['sockets']:,.0f} idle /v1/live sockets: API CPU {idle['cpu_s']:.2f} s over {idle['seconds']:.0f} s "
              f"({100 * idle['cpu_s'] / idle['seconds']:.1f}% of a core), API RSS +{idle['rss_mb']:.0f} MB", flush=True)
        if misses:
            print("goals missed: " + "; ".join(misses), flush=True)
        return 0
    except BenchFailure as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
        if stack is not None:
            print(stack.log_tails(), file=sys.stderr, flush=True)
        return 1
    finally:
        if stack is not None:
            stack.stop()
        elif broker is not None:
            broker.stop()
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
