"""Instructions per record of each stage of the hot path, counted by valgrind: figures that do
not move with the machine's load, for telling whether a change to the hot path saved work.

Seconds on this shared machine move by half from one run to the next, so a change worth 5% of
a process cannot be seen in ``bench.py``. callgrind counts the instructions a process executes
(user space, every thread): the same code on the same input gives the same count within a
fraction of a percent, whatever else the machine does. Each stage runs in a child process
twice, set up only and then set up and worked: the difference over the records is the stage's
figure. Beside them, the plain script's work on the same records (``bench.bodies.baseline``'s
parse and writes), as the baseline. What callgrind does not count: the kernel's work (socket
and file writes, page faults), the broker's, and time spent waiting.

    .venv/bin/python bench/instructions.py [--records N] [--stage NAME ...] [--against DIR]

``--against DIR`` counts the code of another checkout too (``git worktree add DIR REV``) and
prints it beside this one's. The stages do not add up to a process: the stack's messaging
(Kafka clients, Faust, aiohttp) between them is left out, and a small stage's count can
move by a few percent with memory layout alone (other ``memcpy`` paths for the same bytes).
A JSON array's first read of 256 KB is split by a slower pattern until the splitter has
learnt how the records are joined: a fifth of 10,000 records, a six-hundredth of a million.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.bodies import BASELINE_SCHEMA, _write_batch, record  # noqa: E402

BATCH = 1000  # records per RecordBatch, as the API's settings have it
READ_RECORDS = 1700  # about what a read of 256 KB of body holds
TRANSACTION = 24  # applied batches per view transaction (what a store that keeps up writes)
AT = "2026-12-02T00:00:00.000000Z"
_COLLECTED = re.compile(rb"Collected : (\d+)")


def _records(n: int) -> list[bytes]:
    return [record("bench", i) for i in range(n)]


def _chunks(body: bytes, size: int = 256 * 1024) -> list[bytes]:
    return [body[start:start + size] for start in range(0, len(body), size)]


def _parsed(n: int) -> tuple[list[Any], list[bytes]]:
    import orjson
    texts = _records(n)
    return [orjson.loads(text) for text in texts], texts


def _batches(n: int) -> list[bytes]:
    """The job's RecordBatch messages, as the API's router makes them (one partition)."""
    from bulkjobs.kafka.batching import Batcher
    records, texts = _parsed(n)
    payloads: list[bytes] = []
    batcher = Batcher(job_id="a" * 32, tenant="bench", record_type="resources", action="external_id_set",
                      partitions=1, batch_records=BATCH, batch_bytes=10**9,
                      emit=lambda _, value: payloads.append(value))
    batcher.add(records, sum(map(len, texts)), texts)
    batcher.close()
    return payloads


def _decoded(n: int) -> list[Any]:
    """The job's batches as the worker decodes them."""
    from bulkjobs.kafka.topics import RecordBatch, decode
    return [RecordBatch(**decode(value)) for value in _batches(n)]


def _applied(n: int) -> list[Any]:
    """(batch, what applying it did) for every batch of the job, on an empty index."""
    from bulkjobs.domain.records import ObjectIndex, apply_batch
    index = ObjectIndex()
    return [(batch, apply_batch(batch.type, batch.action, batch.tenant, batch.items, index, AT))
            for batch in _decoded(n)]


def _applied_batch(batch: Any, records: Any) -> Any:
    from bulkjobs.kafka.topics import AppliedBatch
    return AppliedBatch(job_id=batch.job_id, tenant=batch.tenant, seq=batch.seq, at=AT,
                        counts=records.counts.to_dict(), results=records.results, ops=records.ops, host="bench",
                        sources=batch.sources)


def _applied_values(n: int) -> list[bytes]:
    """The job's AppliedBatch messages as the worker encodes them (before compression)."""
    from bulkjobs.kafka.topics import encode
    return [encode(_applied_batch(batch, records)) for batch, records in _applied(n)]


# Each stage: set up (from the record count) and return the work to count.

def api_ndjson_parse(n: int) -> Callable[[], object]:
    from bulkjobs.api.bodies import _ndjson_records
    from bulkjobs.gcpause import without_gc
    body = b"\n".join(_records(n))
    pieces, start = [], 0
    while start < len(body):  # about a read of 256 KB each, cut at a newline as api.bodies does
        end = body.find(b"\n", start + 256 * 1024)
        end = len(body) if end < 0 else end
        pieces.append(body[start:end])
        start = end + 1
    return lambda: [without_gc(_ndjson_records, piece) for piece in pieces]


def api_array_split(n: int) -> Callable[[], object]:
    from bulkjobs.api.array_splitter import ArraySplitter
    from bulkjobs.gcpause import without_gc
    chunks = _chunks(b",".join(_records(n)) + b"]")

    def work() -> object:
        splitter = ArraySplitter()
        return [without_gc(splitter.feed, chunk) for chunk in chunks] + [splitter.finish()]
    return work


def api_route(n: int) -> Callable[[], object]:
    from bulkjobs.api.spool import BatchSpool
    from bulkjobs.gcpause import without_gc
    records, texts = _parsed(n)
    size = sum(map(len, texts))
    directory = Path(tempfile.mkdtemp())

    def work() -> object:
        spool = BatchSpool(job_id="a" * 32, tenant="bench", record_type="resources", action="external_id_set",
                           partitions=8, batch_records=BATCH, batch_bytes=10**9, directory=directory)
        for start in range(0, n, READ_RECORDS):
            end = start + READ_RECORDS
            without_gc(spool.add, records[start:end], size * READ_RECORDS // n, texts[start:end])
        spool.close()
        return spool
    return work


def worker_decode(n: int) -> Callable[[], object]:
    from bulkjobs.gcpause import gc_paused
    from bulkjobs.kafka.topics import RecordBatch, decode
    payloads = _batches(n)

    def work() -> object:
        with gc_paused():
            return [RecordBatch(**decode(value)) for value in payloads]
    return work


def worker_apply(n: int) -> Callable[[], object]:
    from bulkjobs.domain.records import ObjectIndex, apply_batch
    from bulkjobs.gcpause import gc_paused
    batches = _decoded(n)

    def work() -> object:
        index = ObjectIndex()
        with gc_paused():
            return [apply_batch(batch.type, batch.action, batch.tenant, batch.items, index, AT) for batch in batches]
    return work


def worker_encode(n: int) -> Callable[[], object]:
    from bulkjobs.kafka.topics import encode
    applied = _applied(n)
    return lambda: [encode(_applied_batch(batch, records)) for batch, records in applied]


def worker_compress(n: int) -> Callable[[], object]:
    from aiokafka.codec import zstd_encode
    values = _applied_values(n)
    return lambda: [zstd_encode(value) for value in values]


def store_write(n: int) -> Callable[[], object]:
    from bulkjobs.store.schema import connect
    from bulkjobs.store.writer import ViewWriter
    values = _applied_values(n)
    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(connect(Path(tempfile.mkdtemp()) / "view.db"))
    writer = ViewWriter(db)

    async def write() -> None:
        for start in range(0, len(values), TRANSACTION):
            await writer.write(values[start:start + TRANSACTION], [], [])
    return lambda: loop.run_until_complete(write())


def script(n: int) -> Callable[[], object]:
    import sqlite3
    body = b'{"data":[' + b",".join(_records(n)) + b"]}"
    db = sqlite3.connect(Path(tempfile.mkdtemp()) / "script.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in BASELINE_SCHEMA:
        db.execute(statement)

    def work() -> None:
        data = json.loads(body)["data"]
        for start in range(0, len(data), 5000):
            _write_batch(db, data, range(start, min(len(data), start + 5000)), AT)
    return work


STAGES: dict[str, Callable[[int], Callable[[], object]]] = {
    "api: NDJSON lines parsed": api_ndjson_parse,
    "api: JSON array split and parsed": api_array_split,
    "api: records routed into batches, spooled": api_route,
    "worker: RecordBatch decoded": worker_decode,
    "worker: rules applied": worker_apply,
    "worker: AppliedBatch encoded": worker_encode,
    "worker: AppliedBatch compressed (zstd)": worker_compress,
    "store: AppliedBatch written to the view": store_write,
    "script: parsed and written (baseline)": script,
}


def _count(code: Path, stage: str, records: int, work: bool) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--child", stage, "--code", str(code), "--records", str(records), *(["--work"] if work else [])]
    # One hash seed: string hashes decide dicts' probing, and so the instructions counted.
    done = subprocess.run(command, capture_output=True, check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{stage}: valgrind failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return int(found.group(1))


def _per_record(pool: ThreadPoolExecutor, code: Path, stage: str, records: int) -> Callable[[], float]:
    setup, worked = (pool.submit(_count, code, stage, records, work) for work in (False, True))
    return lambda: (worked.result() - setup.result()) / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--stage", action="append", choices=STAGES, help="only these stages (default: all)")
    parser.add_argument("--against", type=Path, help="a checkout whose code to count beside this one's")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=HERE, help=argparse.SUPPRESS)
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.code.resolve()))  # bulkjobs from there (the stages import it late)
        with tempfile.TemporaryDirectory(prefix="bulkjobs-ir-") as scratch:
            tempfile.tempdir = scratch  # the stages' spool and SQLite files go, and are removed, with it
            work = STAGES[args.child](args.records)
            gc.collect()
            gc.freeze()  # the set-up's objects: a collection during the work does not rescan them
            if args.work:
                work()
        return
    codes = [HERE] + ([args.against] if args.against else [])
    with ThreadPoolExecutor(2) as pool:  # counts do not depend on what else runs
        figures = {stage: [_per_record(pool, code, stage, args.records) for code in codes]
                   for stage in args.stage or STAGES}
        print(f"instructions per record (valgrind callgrind; {args.records:,} records of "
              f"{len(record('bench', 0))} bytes, external_id_set creates on an empty view)")
        if args.against:
            print(f"  {'':<45} {'this':>9} {'against':>9}  change")
        for stage, counted in figures.items():
            values = [figure() for figure in counted]
            change = f"  {values[0] / values[1] - 1:+.1%}" if len(values) > 1 else ""
            print(f"  {stage:<45}" + "".join(f" {value:>9,.0f}" for value in values) + change)


if __name__ == "__main__":
    main()
