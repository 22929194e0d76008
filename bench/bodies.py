"""The bench's request bodies (the same records as JSON, NDJSON and CSV) and the baseline: the plain
single-process script (stdlib json + sqlite3) a user would write instead, timed on the JSON body."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import orjson

from bench import BenchFailure

COLORS = ("red", "green", "blue", "black", "white", "amber")
SIZES = ("XS", "S", "M", "L", "XL")
CHUNK = 10_000  # records generated at a time


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
        for start in range(0, n, CHUNK):
            part = b",".join(record(object_type, i) for i in range(start, min(n, start + CHUNK)))
            f.write(part if start == 0 else b"," + part)
        f.write(b"]}")
    return path.stat().st_size


def write_ndjson_body(path: Path, object_type: str, n: int) -> int:
    with open(path, "wb") as f:
        f.writelines(b"".join(record(object_type, i) + b"\n" for i in range(start, min(n, start + CHUNK)))
                     for start in range(0, n, CHUNK))
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
        for start in range(0, n, CHUNK):
            f.write("".join(
                f"ext-{i:08d},Item {i},{round(5 + (i % 9973) * 0.37, 2)},{COLORS[i % 6]},{SIZES[i % 5]},"
                f"{i % 1000},g{i % 97}\n" for i in range(start, min(n, start + CHUNK))).encode())
    return path.stat().st_size


def write_bodies(directory: Path, n: int, csv_n: int) -> dict[str, tuple[Path, int]]:
    """Every body the bench posts, by name: (path, size in bytes)."""
    paths = {"json": directory / "body.json", "ndjson": directory / "body.ndjson",
             "ndjson_before": directory / "before.ndjson", "ndjson2": directory / "body2.ndjson",
             "ndjson_after": directory / "after.ndjson", "json_small_empty": directory / "small-empty.json",
             "json_small": directory / "small.json", "csv": directory / "body.csv"}
    sizes = [write_json_body(paths["json"], "bench-json", n),
             write_ndjson_body(paths["ndjson"], "bench-ndjson", n),
             write_ndjson_body(paths["ndjson_before"], "bench-ndjson-1w-before", n),
             write_ndjson_body(paths["ndjson2"], "bench-ndjson-2w", n),
             write_ndjson_body(paths["ndjson_after"], "bench-ndjson-1w-after", n),
             write_json_body(paths["json_small_empty"], "bench-json-small-empty", csv_n),
             write_json_body(paths["json_small"], "bench-json-small", csv_n),
             write_csv_body(paths["csv"], csv_n)]
    return {name: (path, size) for (name, path), size in zip(paths.items(), sizes, strict=True)}


BASELINE_SCHEMA = (
    """CREATE TABLE objects (type TEXT NOT NULL, external_id TEXT NOT NULL, id TEXT NOT NULL,
       attributes TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
       PRIMARY KEY (type, external_id))""",
    """CREATE TABLE results (job TEXT NOT NULL, idx INTEGER NOT NULL, success INTEGER NOT NULL,
       id TEXT, PRIMARY KEY (job, idx))""",
)
UPSERT = ("INSERT INTO objects (id, type, external_id, attributes, created_at, updated_at) "
          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, external_id) DO UPDATE SET "
          "attributes = excluded.attributes, updated_at = excluded.updated_at")
BASELINE_BATCH = 5000


def baseline(body: Path, db_path: Path) -> dict[str, float]:
    """Parse the JSON body with the stdlib, upsert every record and a result row into SQLite."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in BASELINE_SCHEMA:
        db.execute(statement)
    with open(body, "rb") as f:
        request = json.load(f)
    t_parsed = time.perf_counter()
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = request["data"]
    for start in range(0, len(data), BASELINE_BATCH):
        _write_batch(db, data, range(start, min(len(data), start + BASELINE_BATCH)), at)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows = db.execute("SELECT count(*) FROM objects").fetchone()[0]
    db.close()
    if rows != len(data):
        raise BenchFailure(f"baseline wrote {rows} objects for {len(data)} records")
    return {"seconds": elapsed, "parse_s": t_parsed - t0, "rate": len(data) / elapsed,
            "us_per_record": 1e6 * cpu / len(data)}


def _write_batch(db: sqlite3.Connection, data: list[dict], indexes: range, at: str) -> None:
    """One transaction: the objects of ``data[indexes]`` upserted, and a result row for each."""
    objects, results = [], []
    for index in indexes:
        rec = data[index]
        key = f"{rec['type']}\x00{rec['external_id']}".encode()
        object_id = hashlib.blake2b(key, digest_size=16).hexdigest()
        objects.append((object_id, rec["type"], rec["external_id"], json.dumps(rec.get("attributes", {})), at, at))
        results.append(("baseline-job", index, 1, object_id))
    db.execute("BEGIN")
    db.executemany(UPSERT, objects)
    db.executemany("INSERT OR REPLACE INTO results (job, idx, success, id) VALUES (?, ?, ?, ?)", results)
    db.execute("COMMIT")
