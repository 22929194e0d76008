"""bulkjobs benchmark: a 1,000,000-record external_id_set job end to end, JSON and NDJSON.

Starts an embedded Tansu broker and a stack (one worker, the store feeder, the API) in a
temporary data dir, submits the same records as a JSON envelope and as NDJSON (streamed from
disk), polls the job until it ends, and prints: seconds to the 202 and to a terminal status,
records/s end to end, status-poll latency, peak RSS and CPU seconds of every process. In the
same run it times a plain single-process script (stdlib json + sqlite3) on the same body, and
an NDJSON job on one worker, on two, and on one again once the second left. A table at the end
puts the figures next to the goals of issue 13, with the CPU each process spent per record.

    .venv/bin/python bench/bench.py              # 1,000,000 records (several minutes)
    .venv/bin/python bench/bench.py --quick      # 100,000 records
    .venv/bin/python bench/bench.py --records 250000 --keep
    .venv/bin/python bench/bench.py --growth     # only the growth part (issue 12)

The growth part (bench/growth.py) follows: for 100k and 1M live objects, a worker's restart
and a second worker's join, timed to their first applied batch, with what they read and their
peak RSS.

It is a benchmark, not a test: figures from a shared 2-core machine are noisy; compare ratios
measured in one run. It exits non-zero when a job does not end as expected.

This file is the entry point: the stack is in bench/stack.py, the bodies and the baseline in
bench/bodies.py, what is measured in bench/measure.py and the table in bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package, when run as a script

import aiohttp

from bench import MB, BenchFailure
from bench.bodies import CSV_MAPPINGS, baseline, write_bodies
from bench.growth import run_growth
from bench.measure import Job, JobRun, idle_sockets, run_job
from bench.report import EMPTY_VIEW, ONE_WORKER_AFTER, ONE_WORKER_BEFORE, TWO_WORKERS, print_table
from bench.stack import BenchStack, add_worker, remove_worker, start_stack, wait_healthy
from bulkjobs.broker import EmbeddedBroker, start_broker
from bulkjobs.devstack import StackFailed

IDLE_SOCKETS = 1000  # issue 6: a thousand idle live sockets cost nothing noticeable
IDLE_SECONDS = 10.0
NDJSON_QUERY = "?type=resources&action=external_id_set&description=bench"


def jobs(n: int, csv_n: int, bodies: dict[str, Path]) -> tuple[list[Job], Job, Job]:
    """The jobs run on one worker, the one run with two, and the one run after the second left."""
    expect = {"total": n, "processed": n, "created": n, "updated": 0, "failed": 0}
    # Issue 4: a CSV job beside a JSON job of the same records and size.
    expect_small = {"total": csv_n, "processed": csv_n, "created": csv_n, "updated": 0, "failed": 0}
    csv_query = "?" + urllib.parse.urlencode({"operation": "upsert", "object_type": "bench-csv",
                                              "field_mappings": json.dumps(CSV_MAPPINGS), "description": "bench"})
    # Issue 13: the same small job on an empty view and once the two large jobs' objects are in it.
    one_worker = [
        Job(f"JSON {csv_n // 1000}k {EMPTY_VIEW}", bodies["json_small_empty"], "application/json", "", expect_small),
        Job("JSON", bodies["json"], "application/json", "", expect),
        Job("NDJSON", bodies["ndjson"], "application/x-ndjson", NDJSON_QUERY, expect),
        Job(f"JSON {csv_n // 1000}k", bodies["json_small"], "application/json", "", expect_small),
        Job(f"CSV {csv_n // 1000}k", bodies["csv"], "text/csv", csv_query, expect_small),
        Job(ONE_WORKER_BEFORE, bodies["ndjson_before"], "application/x-ndjson", NDJSON_QUERY, expect),
    ]
    return (one_worker, Job(TWO_WORKERS, bodies["ndjson2"], "application/x-ndjson", NDJSON_QUERY, expect),
            Job(ONE_WORKER_AFTER, bodies["ndjson_after"], "application/x-ndjson", NDJSON_QUERY, expect))


async def bench(stack: BenchStack, n: int, csv_n: int, bodies: dict[str, Path]) -> tuple[list[JobRun],
                                                                                        dict[str, float]]:
    timeout = 120 + n / 1000
    one_worker, two_workers, after = jobs(n, csv_n, bodies)
    conn = aiohttp.TCPConnector(limit=20)
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=900)
    async with aiohttp.ClientSession(connector=conn, timeout=client_timeout) as session:
        print(f"stack healthy after {await wait_healthy(stack):.1f} s", flush=True)
        runs = [await run_job(stack, session, job, timeout) for job in one_worker]
        await add_worker(stack)
        runs.append(await run_job(stack, session, two_workers, timeout))
        await remove_worker(stack)
        runs.append(await run_job(stack, session, after, timeout))
    return runs, await idle_sockets(stack, IDLE_SOCKETS, IDLE_SECONDS)


def parse_args() -> tuple[int, int, bool, list[int], bool]:
    """Records per job, CSV rows, whether to keep the temporary directory, the growth part's
    sizes, and whether to run only the growth part."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per job (default 1,000,000)")
    parser.add_argument("--csv-rows", type=int, default=200_000, help="rows of the CSV job (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 records (20,000 CSV rows), for a fast check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, view, bodies)")
    parser.add_argument("--growth", action="store_true", help="run only the growth part (bench/growth.py)")
    parser.add_argument("--growth-sizes", default="100000,1000000",
                        help="live objects before the growth part's restarts (default 100000,1000000)")
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.growth_sizes.split(",")]
    except ValueError:
        parser.error("--growth-sizes must be integers separated by commas")
    if any(size < 1 for size in sizes):
        parser.error("--growth-sizes must be positive")
    n = 100_000 if args.quick else args.records
    csv_n = 20_000 if args.quick else args.csv_rows
    if n < 1 or csv_n < 1:
        parser.error("--records and --csv-rows must be positive")
    return n, csv_n, args.keep, sizes, args.growth


def prepare(tmp: Path, n: int, csv_n: int) -> tuple[dict[str, Path], int]:
    """Write the bodies (and say how long it took); the paths by name, and the largest size."""
    t = time.perf_counter()
    written = write_bodies(tmp, n, csv_n)
    print(f"generated bodies in {time.perf_counter() - t:.1f} s: "
          + ", ".join(f"{path.name} {size / MB:.1f} MB" for path, size in written.values())
          + f" ({(written['ndjson'][1] / n) - 1:.0f} bytes a record)", flush=True)
    return {name: path for name, (path, _) in written.items()}, max(size for _, size in written.values())


def run(tmp: Path, n: int, csv_n: int, started: float, growth_sizes: list[int], only_growth: bool) -> int:
    """The whole bench in ``tmp``: bodies, baseline, stack, jobs, baseline again, report; then
    the growth part (or that alone)."""
    if only_growth:
        return growth(tmp, growth_sizes)
    stack: BenchStack | None = None
    broker: EmbeddedBroker | None = None
    try:
        bodies, largest = prepare(tmp, n, csv_n)
        base = [baseline(bodies["json"], tmp / "baseline.db")]
        print(f"baseline: {base[0]['rate']:,.0f} records/s ({base[0]['seconds']:.2f} s)", flush=True)
        broker = start_broker()
        stack = start_stack(broker, tmp / "data", n, largest)
        print(f"broker on {broker.address} (pid {broker.process.pid}); "
              + ", ".join(f"{name} pid {process.pid}" for name, process in stack.processes.items())
              + f"; API on {stack.base}", flush=True)
        runs, idle = asyncio.run(bench(stack, n, csv_n, bodies))
        base.append(baseline(bodies["json"], tmp / "baseline.db"))  # again, to show the noise
        print(f"baseline again: {base[1]['rate']:,.0f} records/s ({base[1]['seconds']:.2f} s)", flush=True)
        misses = print_table(n, runs, base, time.perf_counter() - started)
        print(f"{idle['sockets']:,.0f} idle /v1/live sockets: API CPU {idle['cpu_s']:.2f} s "
              f"over {idle['seconds']:.0f} s ({100 * idle['cpu_s'] / idle['seconds']:.1f}% of a core), "
              f"API RSS +{idle['rss_mb']:.0f} MB", flush=True)
        if misses:
            print("goals missed: " + "; ".join(misses), flush=True)
    except (BenchFailure, StackFailed) as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr, flush=True)
        if stack is not None and not isinstance(exc, StackFailed):  # a StackFailed carries the tails
            print(stack.log_tails(), file=sys.stderr, flush=True)
        return 1
    finally:
        if stack is not None:
            for name in stack.stop():
                print(f"  {name} did not stop in time: killed", flush=True)
        if broker is not None:
            broker.stop()
    return growth(tmp, growth_sizes)


def growth(tmp: Path, sizes: list[int]) -> int:
    try:
        run_growth(tmp, sizes)
    except (BenchFailure, StackFailed) as exc:
        print(f"\nGROWTH BENCH FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main() -> int:
    n, csv_n, keep, growth_sizes, only_growth = parse_args()

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks of run

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bulkjobs-bench-"))
    print(f"bulkjobs bench: {n:,} records per job; temp dir {tmp}", flush=True)
    try:
        return run(tmp, n, csv_n, started, growth_sizes, only_growth)
    finally:
        if keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
