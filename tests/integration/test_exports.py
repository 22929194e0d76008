"""Export jobs end to end: formats, split size, time frames, attributes, relationships, progress;
the files API (lists, filters, download, deletes, tenants); and the store's runs in process
(suspend, resume, cancel, restart) against a SQLite view without a broker."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkjobs.clock import utc_now
from bulkjobs.kafka.topics import encode
from bulkjobs.settings import Settings
from bulkjobs.store.exporter import Exports
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter
from tests.support import Client, Stack, statuses_of, wait_for


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def put_objects(api: Client, kind: str, n: int, start: int = 0) -> dict[str, Any]:
    """Create (or update) objects ``start``..``start + n - 1`` of ``kind`` with a few attribute types."""
    data = [{"type": kind, "external_id": f"e{i}",
             "attributes": {"name": f"item, {i}", "rpm": i * 10, "on": i % 2 == 0,
                            **({"tags": ["a", str(i)]} if i % 3 == 0 else {})}}
            for i in range(start, start + n)]
    job = api.run({"type": "resources", "action": "external_id_set", "data": data})
    assert job["status"] == "succeeded", job
    return job


def listing(api: Client, path: str) -> list[dict[str, Any]]:
    """Every item of a paged list."""
    items: list[dict[str, Any]] = []
    separator = "&" if "?" in path else "?"
    while True:
        body = api.get(f"{path}{separator}limit=1000&offset={len(items)}").body
        items += body["items"]
        if len(items) >= body["total"]:
            return items


def export(api: Client, **fields: Any) -> dict[str, Any]:
    """Submit an export and wait for it to end."""
    resp = api.post("/v1/jobs", json_body={"kind": "export", **fields})
    assert resp.status == 202, resp.body
    assert resp.body["type"] == "export" and resp.body["title"] == fields["title"]
    assert api.get(f"/v1/jobs/{resp.body['id']}").status == 200  # visible at once
    return api.wait_done(resp.body["id"])


def download(api: Client, name: str) -> bytes:
    resp = api.get(f"/v1/files/{name}")
    assert resp.status == 200, resp.body
    return resp.body


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def csv_dicts(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def job_files(api: Client, job_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/v1/jobs/{job_id}/files")
    assert resp.status == 200, resp.body
    return resp.body["items"]


def later(instant: str, ms: int = 1) -> str:
    moment = datetime.fromisoformat(instant) + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- exports through the whole stack -------------------------------------------------------


def test_json_lines_split_into_files_hold_exactly_the_objects(api: Client) -> None:
    kind = unique("exp-jsonl")
    put_objects(api, kind, 25)
    put_objects(api, unique("exp-other"), 3)  # another type is not exported

    job = export(api, title=f"all of {kind}", description="nightly", object_type=kind,
                 params={"format": "jsonl", "file_split_size": 10})

    assert job["status"] == "succeeded" and job["description"] == "nightly"
    assert job["counts"]["total"] == 25 and job["counts"]["processed"] == 25 and job["progress"] == 100
    assert job["started_at"] and job["completed_at"]
    files = job_files(api, job["id"])
    assert [f["name"] for f in files] == [f"{job['id']}-{n}.jsonl" for n in (1, 2, 3)]
    assert [f["records"] for f in files] == [10, 10, 5]
    assert all(f["job_id"] == job["id"] and f["job_title"] == f"all of {kind}" and f["type"] == "jsonl"
               for f in files)
    assert [{k: f[k] for k in ("name", "size", "records", "created_at")} for f in files] == job["files"]
    contents = [download(api, f["name"]) for f in files]
    assert [len(data) for data in contents] == [f["size"] for f in files]
    assert [row for data in contents for row in json_lines(data)] == listing(api, f"/v1/objects?type={kind}")


def test_csv_has_a_header_of_every_attribute_and_a_row_per_object(api: Client) -> None:
    kind = unique("exp-csv")
    put_objects(api, kind, 12)

    job = export(api, title=unique("csv"), object_type=kind, params={"format": "csv", "file_split_size": 5})

    files = job_files(api, job["id"])
    assert [f["records"] for f in files] == [5, 5, 2]
    contents = [download(api, f["name"]) for f in files]
    headers = {data.decode().splitlines()[0] for data in contents}
    assert headers == {"id,type,external_id,name,on,rpm,tags,created_at,updated_at"}  # each file has it
    rows = [row for data in contents for row in csv_dicts(data)]
    objects = listing(api, f"/v1/objects?type={kind}")
    assert [row["id"] for row in rows] == [obj["id"] for obj in objects]
    for row, obj in zip(rows, objects, strict=True):
        attributes = obj["attributes"]
        assert row["external_id"] == obj["external_id"] and row["type"] == kind
        assert row["name"] == attributes["name"] and row["rpm"] == str(attributes["rpm"])
        assert row["on"] == ("true" if attributes["on"] else "false")
        assert row["tags"] == (json.dumps(attributes["tags"], separators=(",", ":")) if "tags" in attributes else "")
        assert (row["created_at"], row["updated_at"]) == (obj["created_at"], obj["updated_at"])


def test_chosen_attributes_only(api: Client) -> None:
    kind = unique("exp-attrs")
    put_objects(api, kind, 4)

    csv_job = export(api, title=unique("attrs"), object_type=kind,
                     params={"format": "csv", "attributes": ["rpm", "missing"]})
    jsonl_job = export(api, title=unique("attrs"), object_type=kind, params={"attributes": ["name"]})

    [csv_file] = job_files(api, csv_job["id"])
    rows = csv_dicts(download(api, csv_file["name"]))
    assert list(rows[0]) == ["id", "type", "external_id", "rpm", "missing", "created_at", "updated_at"]
    assert sorted(int(row["rpm"]) for row in rows) == [0, 10, 20, 30] and {row["missing"] for row in rows} == {""}
    [jsonl_file] = job_files(api, jsonl_job["id"])
    objects = listing(api, f"/v1/objects?type={kind}")
    assert json_lines(download(api, jsonl_file["name"])) == [
        {**obj, "attributes": {"name": obj["attributes"]["name"]}} for obj in objects]


def test_a_time_frame_exports_the_objects_updated_within_it(api: Client) -> None:
    kind = unique("exp-frame")
    put_objects(api, kind, 6)  # e0..e5
    first = listing(api, f"/v1/objects?type={kind}")
    boundary = later(max(obj["updated_at"] for obj in first))
    wait_for(lambda: utc_now() > boundary, what="the clock to pass the boundary")
    put_objects(api, kind, 4, start=4)  # updates e4, e5; creates e6, e7
    second = {obj["external_id"]: obj for obj in listing(api, f"/v1/objects?type={kind}")}

    before = export(api, title=unique("frame"), object_type=kind, time_frame={"date_to": boundary})
    after = export(api, title=unique("frame"), object_type=kind, time_frame={"date_from": boundary})
    everything = export(api, title=unique("frame"), object_type=kind, time_frame={"all": True})
    window = export(api, title=unique("frame"), object_type=kind,
                    time_frame={"date_from": first[0]["updated_at"], "date_to": later(boundary, 10**7)})

    def exported(job: dict[str, Any]) -> list[str]:
        assert job["status"] == "succeeded", job
        files = job_files(api, job["id"])
        return sorted(row["external_id"] for f in files for row in json_lines(download(api, f["name"])))

    assert exported(before) == ["e0", "e1", "e2", "e3"]
    assert exported(after) == ["e4", "e5", "e6", "e7"]
    assert exported(everything) == exported(window) == sorted(second)
    assert before["counts"]["total"] == 4 and before["time_frame"] == {"date_from": None, "date_to": boundary}
    assert all(second[e]["updated_at"] >= boundary for e in exported(after))


def test_relationships_export_as_csv(api: Client) -> None:
    kind, rel_type = unique("exp-node"), unique("exp-link")
    put_objects(api, kind, 4)
    ids = [obj["id"] for obj in listing(api, f"/v1/objects?type={kind}")]
    job = api.run({"type": "relationships", "action": "post", "data": [
        {"relationship_type": rel_type, "source": ids[i], "target": ids[i + 1]} for i in range(3)]})
    assert job["counts"]["created"] == 3

    exported = export(api, title=unique("rels"), source="relationships", object_type=rel_type,
                      params={"format": "csv"})

    [file] = job_files(api, exported["id"])
    assert csv_dicts(download(api, file["name"])) == listing(api, f"/v1/relationships?relationship_type={rel_type}")


def test_an_export_of_nothing_succeeds_with_one_empty_file(api: Client) -> None:
    job = export(api, title=unique("empty"), object_type=unique("nothing"), params={"format": "csv"})

    assert job["status"] == "succeeded" and job["counts"]["total"] == 0
    [file] = job_files(api, job["id"])
    assert file["records"] == 0 and download(api, file["name"]) == b"id,type,external_id,created_at,updated_at\r\n"


def test_a_bad_request_names_its_field(api: Client) -> None:
    resp = api.post("/v1/jobs", json_body={"kind": "export", "title": "x", "object_type": "y",
                                           "params": {"format": "xml"}})

    assert resp.status == 400 and resp.body["error"]["field"] == "params.format"


def test_progress_counts_the_records_written_of_those_to_write(stack: Stack, api: Client) -> None:
    kind = unique("exp-progress")
    api.run({"type": "resources", "action": "external_id_set",
             "data": [{"type": kind, "external_id": str(i), "attributes": {"i": i}} for i in range(20_000)]},
            timeout=120)

    job = export(api, title=unique("progress"), object_type=kind, params={"file_split_size": 7000})

    assert job["counts"]["processed"] == job["counts"]["total"] == 20_000
    assert [f["records"] for f in job_files(api, job["id"])] == [7000, 7000, 6000]
    running = [(s["counts"]["processed"], s["total"]) for s in statuses_of(stack, job["id"])
               if s["status"] == "processing"]
    assert running[0] == (0, 20_000)  # counted before the first record is written
    assert any(0 < processed < 20_000 for processed, _ in running)
    assert [p for p, _ in running] == sorted(p for p, _ in running) and {t for _, t in running} == {20_000}


def test_an_export_submitted_while_the_store_is_down_runs_once_it_is_back(make_stack: Any) -> None:
    stack = make_stack().start_all()
    api = stack.client()
    kind = unique("exp-restart")
    put_objects(api, kind, 5)
    stack.kill("store")

    resp = api.post("/v1/jobs", json_body={"kind": "export", "title": "while down", "object_type": kind})
    assert resp.status == 202 and api.job(resp.body["id"])["status"] == "queued"
    stack.start("store")

    job = api.wait_done(resp.body["id"])
    assert job["status"] == "succeeded" and job["counts"]["total"] == 5
    [file] = job_files(api, job["id"])
    assert json_lines(download(api, file["name"])) == listing(api, f"/v1/objects?type={kind}")


# --- the files API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_exports(stack: Stack) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A JSON lines export of 3 files and a CSV export of 2, with titles sharing a unique word."""
    api = stack.client("key-a")
    word = uuid.uuid4().hex[:10]
    kind = unique("exp-files")
    put_objects(api, kind, 6)
    first = export(api, title=f"{word} lines", object_type=kind, params={"file_split_size": 2})
    wait_for(lambda: utc_now() > first["completed_at"], what="a later millisecond")
    second = export(api, title=f"{word} table", object_type=kind, params={"format": "csv", "file_split_size": 3})
    return first, second, word


def test_the_files_list_filters_and_pages_newest_first(api: Client, two_exports: tuple[dict, dict, str]) -> None:
    first, second, word = two_exports
    names_first = [f"{first['id']}-{n}.jsonl" for n in (1, 2, 3)]
    names_second = [f"{second['id']}-{n}.csv" for n in (1, 2)]

    def names(query: str) -> list[str]:
        return [f["name"] for f in listing(api, f"/v1/files?{query}")]

    both = names(f"job_title={word}")
    assert sorted(both) == sorted(names_first + names_second)
    assert both[:2] == names_second[::-1] and both[2:] == names_first[::-1]  # newest first
    assert names(f"job_title={word}+table") == names_second[::-1]
    assert names(f"job_title={word}&type=csv") == names_second[::-1]
    assert names(f"name={first['id']}") == names_first[::-1]
    assert names(f"name={first['id']}-2") == [names_first[1]]
    created = [f["created_at"] for f in second["files"]]
    query = urllib.parse.urlencode({"job_title": word, "created_from": min(created)})
    assert names(query) == names_second[::-1]
    query = urllib.parse.urlencode({"job_title": word, "created_to": min(created)})
    assert names(query) == names_first[::-1]
    page = api.get(f"/v1/files?job_title={word}&limit=2&offset=1").body
    assert page["total"] == 5 and [f["name"] for f in page["items"]] == both[1:3]
    assert api.get("/v1/files?type=xml").status == 400
    assert api.get("/v1/files?created_from=soon").body["error"]["field"] == "created_from"


def test_another_tenant_sees_none_of_the_files(api_b: Client, two_exports: tuple[dict, dict, str]) -> None:
    first, _, word = two_exports
    name = first["files"][0]["name"]

    assert api_b.get(f"/v1/files?job_title={word}").body == {"items": [], "total": 0}
    assert api_b.get(f"/v1/files/{name}").status == 404
    assert api_b.get(f"/v1/jobs/{first['id']}/files").status == 404
    resp = api_b.delete(f"/v1/files/{name}")
    assert resp.status == 404 and resp.body["error"]["missing"] == [name]


def export_dir(stack: Stack, job_id: str) -> Path:
    return stack.data_dir / "exports" / job_id


def gone(api: Client, job_id: str, names: list[str]) -> bool:
    listed = {f["name"] for f in job_files(api, job_id)}
    return not listed & set(names) and all(api.get(f"/v1/files/{name}").status == 404 for name in names)


def test_deleting_files(stack: Stack, api: Client) -> None:
    kind = unique("exp-delete")
    put_objects(api, kind, 8)
    job = export(api, title=unique("delete"), object_type=kind, params={"file_split_size": 2})
    names = [f["name"] for f in job["files"]]
    assert sorted(p.name for p in export_dir(stack, job["id"]).iterdir()) == sorted(names)

    resp = api.delete(f"/v1/files?names={names[0]},nope-1.csv,{names[1]},nope-2.jsonl")
    assert resp.status == 404 and resp.body["error"]["missing"] == ["nope-1.csv", "nope-2.jsonl"]
    assert api.delete("/v1/files/nope-3.csv").body["error"]["missing"] == ["nope-3.csv"]
    assert api.delete("/v1/files?names=").status == 400

    assert api.delete(f"/v1/files/{names[0]}").status == 204
    assert gone(api, job["id"], names[:1])  # on the very next read
    assert names[1] in {f["name"] for f in job_files(api, job["id"])}  # the 404 above deleted nothing
    assert api.delete(f"/v1/files?names={names[1]},{names[2]}").status == 204
    assert gone(api, job["id"], names[:3])

    listed = [f["name"] for f in job_files(api, job["id"])]
    assert listed == names[3:] == [f["name"] for f in api.job(job["id"])["files"]]
    wait_for(lambda: sorted(p.name for p in export_dir(stack, job["id"]).iterdir()) == names[3:],
             what="the files to leave the disk")
    assert download(api, names[3])  # the others stay


def test_deleting_the_job_deletes_its_files(stack: Stack, api: Client) -> None:
    kind = unique("exp-deljob")
    put_objects(api, kind, 3)
    job = export(api, title=unique("deljob"), object_type=kind)
    [name] = [f["name"] for f in job["files"]]

    assert api.delete(f"/v1/jobs/{job['id']}").status == 204

    assert api.get(f"/v1/files/{name}").status == 404
    assert api.get(f"/v1/files?name={job['id']}").body["total"] == 0
    wait_for(lambda: not export_dir(stack, job["id"]).exists(), what="the job's directory to be removed")


# --- the store's runs, in process --------------------------------------------------------------


class FakeReporter:
    """What runs report, kept instead of published."""

    def __init__(self) -> None:
        self.progress_sent: list[tuple[str, int, int]] = []
        self.done_sent: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.failed: dict[str, str] = {}

    async def progress(self, job_id: str, written: int, total: int) -> None:
        self.progress_sent.append((job_id, written, total))

    async def done(self, job_id: str, total: int, files: list[dict[str, Any]]) -> None:
        self.done_sent[job_id] = (total, files)

    async def fail(self, job_id: str, tenant: str, reason: str) -> None:
        self.failed[job_id] = reason


def status(job_id: str, state: str, **details: Any) -> dict[str, Any]:
    return {"id": job_id, "tenant": "t", "type": "export", "action": "export", "description": None,
            "status": state, "total": None, "counts": {}, "progress": 0, "error": None,
            "details": {"title": "t", "object_type": "machine", **details}, "host": None,
            "created_at": utc_now(), "started_at": None, "completed_at": None, "updated_at": utc_now(),
            "batches": 0, "done": "0"}


@pytest.fixture
async def view(tmp_path: Path) -> Any:
    """A view holding 2,500 machines of tenant t, and Exports on it reporting to a FakeReporter."""
    settings = Settings(data_dir=tmp_path)
    db = await connect(settings.db_path)
    ops = [["create", f"{i:032x}", "t", "machine", str(i), {"i": i}, utc_now()] for i in range(2500)]
    batch = {"job_id": "j", "seq": 0, "at": utc_now(), "counts": {}, "results": [], "ops": ops}
    await ViewWriter(db).write([encode(batch)], [], [])
    exports = Exports(settings, FakeReporter())  # type: ignore[arg-type]
    exports.ready = True
    yield exports, db
    await exports.stop()
    await db.close()


async def ended(exports: Exports, job_id: str) -> None:
    deadline = time.monotonic() + 10
    while job_id in exports.runs:
        assert time.monotonic() < deadline, "the run did not end"
        await asyncio.sleep(0.01)


async def test_a_suspended_run_waits_and_a_resumed_one_finishes(view: Any) -> None:
    exports, _ = view
    reporter: FakeReporter = exports.reporter

    await exports.observe([status("j1", "queued"), status("j2", "queued")])
    await exports.observe([status("j1", "suspended")])  # before it wrote anything
    await ended(exports, "j2")
    await asyncio.sleep(0.2)

    assert "j1" in exports.runs and "j1" not in reporter.done_sent
    assert ("j1", 0, 2500) in reporter.progress_sent  # counted, then held before the first page
    assert not list((exports.files.directory / "j1").glob("*"))
    await exports.observe([status("j1", "processing")])
    await ended(exports, "j1")
    assert reporter.done_sent["j1"][0] == reporter.done_sent["j2"][0] == 2500


async def test_a_cancelled_run_stops_and_leaves_no_files(view: Any) -> None:
    exports, _ = view
    reporter: FakeReporter = exports.reporter

    await exports.observe([status("j3", "queued", params={"file_split_size": 1000})])
    await exports.observe([status("j3", "suspended")])
    await asyncio.sleep(0.2)
    await exports.observe([status("j3", "cancelled")])

    assert "j3" not in exports.runs and "j3" not in reporter.done_sent
    assert not (exports.files.directory / "j3").exists()


async def test_a_run_does_not_start_again_from_a_late_status_or_a_definition(view: Any) -> None:
    exports, _ = view
    reporter: FakeReporter = exports.reporter

    await exports.observe([status("j4", "queued")])
    await ended(exports, "j4")
    await exports.observe([status("j4", "processing"), {**status("j5", "queued"), "schedule": {"cron": "* * * * *"}}])

    assert not exports.runs and list(reporter.done_sent) == ["j4"]


async def test_a_bad_request_fails_the_job(view: Any) -> None:
    exports, _ = view

    await exports.observe([status("j6", "queued", params={"format": "xml"})])
    await ended(exports, "j6")

    assert "unknown format" in exports.reporter.failed["j6"]


async def test_the_store_starts_again_the_exports_it_was_running(view: Any) -> None:
    exports, db = view
    exports.ready = False
    stale = status("j7", "processing", params={"file_split_size": 1000})
    (exports.files.directory / "j7").mkdir(parents=True)
    (exports.files.directory / "j7" / "j7-9.jsonl").write_bytes(b"left by a crash")
    await ViewWriter(db).write([], [stale, status("j8", "suspended"), status("j9", "succeeded")], [])

    await exports.observe([stale])  # history, read before the feeder caught up: nothing starts
    assert not exports.runs
    await exports.start_pending(db)
    await ended(exports, "j7")

    total, files = exports.reporter.done_sent["j7"]
    assert total == 2500 and [f["records"] for f in files] == [1000, 1000, 500]
    assert sorted(p.name for p in (exports.files.directory / "j7").iterdir()) == ["j7-1.jsonl", "j7-2.jsonl",
                                                                                  "j7-3.jsonl"]
    assert list(exports.reporter.done_sent) == ["j7"]
