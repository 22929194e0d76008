"""Job intake without a broker: the API's routes over a fake publisher that keeps what it is given."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bulkjobs.api.app import build_app
from bulkjobs.api.common import PUBLISHER, READER
from bulkjobs.api.spool import BatchSpool
from bulkjobs.errors import Unavailable
from bulkjobs.kafka.topics import JobSubmitted, RecordBatch
from bulkjobs.settings import Settings
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

KEY = {"x-api-key": "key-a"}


class FakePublisher:
    """Keeps each submitted job with its batches, read from the spool as the real one does."""

    def __init__(self) -> None:
        self.jobs: list[tuple[JobSubmitted, list[RecordBatch] | None]] = []
        self.refuse = False

    async def submit(self, submitted: JobSubmitted, spool: BatchSpool | None) -> None:
        if self.refuse:
            raise Unavailable("the job could not be written to Kafka: no broker")
        batches = None if spool is None else [RecordBatch(**orjson.loads(payload)) for _, payload in spool]
        self.jobs.append((submitted, batches))

    def records(self) -> list[Any]:
        [(_, batches)] = self.jobs
        return [item[-1] for batch in batches or [] for item in sorted(batch.items)]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The API's settings; a test may change some (``indirect`` parametrization)."""
    given = {"data_dir": tmp_path, "api_keys": {"key-a": "tenant-a"}, "partitions": 3, "batch_records": 4}
    return Settings(**{**given, **getattr(request, "param", {})})


@pytest.fixture
async def client(tmp_path: Path, settings: Settings, publisher: FakePublisher) -> AsyncIterator[TestClient]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")  # an empty view: the cap of active jobs counts from it
        app[PUBLISHER] = publisher  # type: ignore[misc]
        app[READER] = ViewReader(db)
        yield
        await db.close()

    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client


def uploads(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "uploads").glob("*"))


RECORDS = [{"type": "server", "external_id": f"e{i}"} for i in range(10)]


async def test_an_envelope_is_spooled_and_published_once_whole(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY,
                             json={"type": "resources", "action": "post", "data": RECORDS, "description": "d"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    [(submitted, batches)] = publisher.jobs
    assert (submitted.job_id, submitted.tenant, submitted.type, submitted.action) == (
        body["id"], "tenant-a", "resources", "post")
    assert (submitted.total, submitted.batches, body["description"]) == (10, len(batches or []), "d")
    assert sorted(publisher.records(), key=str) == sorted(RECORDS, key=str)


async def test_type_and_action_after_the_data_are_routed_from_held_chunks(client: TestClient,
                                                                          publisher: FakePublisher) -> None:
    body = orjson.dumps({"data": RECORDS, "action": "post", "type": "resources"})
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "application/json"}, data=body)
    assert resp.status == 202, await resp.text()
    [(submitted, _)] = publisher.jobs
    assert (submitted.type, submitted.total) == ("resources", 10)
    assert sorted(publisher.records(), key=str) == sorted(RECORDS, key=str)


async def test_a_bare_array_takes_its_fields_from_the_query(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, json=RECORDS, params={"type": "resources", "action": "post"})
    assert resp.status == 202, await resp.text()
    assert publisher.jobs[0][0].total == 10


@pytest.mark.parametrize("body", [
    {"data": RECORDS, "type": "resources", "action": "post", "kind": "export"},
    {"data": RECORDS, "type": "resources", "action": "post", "file_content": "a\r\n1\r\n"},
    {"data": RECORDS, "type": "resources", "action": "fly"},
    {"data": [], "type": "resources", "action": "post"},
])
async def test_a_refused_json_job_publishes_nothing(client: TestClient, publisher: FakePublisher,
                                                    body: dict[str, Any]) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, json=body)
    assert resp.status == 400, await resp.text()
    assert publisher.jobs == []


async def test_an_export_is_published_without_batches(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY,
                             json={"kind": "export", "title": "machines", "object_type": "machine"})
    assert resp.status == 202, await resp.text()
    [(submitted, batches)] = publisher.jobs
    assert (submitted.type, submitted.total, batches) == ("export", None, None)


CSV = "external_id,rpm\r\nm-1,5\r\nm-2,6\r\n"


async def test_a_csv_job_keeps_its_file_and_publishes_its_rows(tmp_path: Path, client: TestClient,
                                                               publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                             params={"operation": "upsert", "object_type": "machine"})
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    assert [path.name for path in uploads(tmp_path)] == [job_id]
    [(submitted, _)] = publisher.jobs
    assert (submitted.type, submitted.total, (submitted.details or {})["file"]["rows"]) == ("resources", 2, 2)


@pytest.mark.parametrize("fields", [
    {"operation": "upsert", "object_type": "t", "schedule": '{"cron": "nope"}'},  # refused when submitted
    {"operation": "fly", "object_type": "t"},  # refused when planned
])
async def test_a_refused_csv_job_leaves_no_file(tmp_path: Path, client: TestClient, publisher: FakePublisher,
                                                fields: dict[str, str]) -> None:
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV, params=fields)
    assert resp.status == 400, await resp.text()
    assert (uploads(tmp_path), publisher.jobs) == ([], [])


async def test_a_csv_job_kafka_did_not_take_keeps_its_file(tmp_path: Path, client: TestClient,
                                                           publisher: FakePublisher) -> None:
    """Part of it may be published (the publisher then fails the job), so it stays readable."""
    publisher.refuse = True
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                             params={"operation": "upsert", "object_type": "machine"})
    assert resp.status == 503, await resp.text()
    assert len(uploads(tmp_path)) == 1


# --- strict input: what a request may carry -----------------------------------------------------------


async def refused_field(resp: Any, code: str = "unknown_field") -> str:
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code, error
    return str(error["field"])


async def test_every_route_refuses_a_query_parameter_it_does_not_take(client: TestClient) -> None:
    routes = [(route.method, re.sub(r"\{[^}]+\}", "x.js", route.resource.canonical))
              for route in client.app.router.routes() if route.method != "HEAD" and route.resource is not None]
    assert len(routes) > 30
    for method, path in routes:
        resp = await client.request(method, path, headers=KEY, params={"notify_url": "x"})
        assert await refused_field(resp) == "notify_url", (method, path)


@pytest.mark.parametrize("path, taken", [
    ("/v1/jobs", {"status": "queued", "sort": "status", "order": "asc", "q": "d", "limit": "5", "offset": "0"}),
    ("/v1/history", {"job_id": "j", "status": "queued", "limit": "5"}),
    ("/v1/objects", {"type": "t", "external_id": "e", "limit": "5", "offset": "1"}),
    ("/v1/relationships", {"relationship_type": "r", "limit": "5"}),
    ("/v1/files", {"name": "n", "job_title": "t", "type": "csv", "created_from": "2026-01-01", "limit": "5"}),
    ("/v1/job-types/objects/template", {"object_type": "t", "q": "a:1", "limit": "5"}),
])
async def test_a_list_takes_its_own_parameters_and_refuses_a_filter_of_another(client: TestClient, path: str,
                                                                                 taken: dict[str, str]) -> None:
    assert (await client.get(path, headers=KEY, params=taken)).status == 200
    assert await refused_field(await client.get(path, headers=KEY, params={**taken, "action": "post"})) == "action"


async def test_a_paging_parameter_that_is_not_an_integer_is_invalid_field(client: TestClient) -> None:
    assert await refused_field(await client.get("/v1/jobs", headers=KEY, params={"limit": "ten"}),
                               "invalid_field") == "limit"


ENVELOPE = {"type": "resources", "action": "post", "data": RECORDS}
EXPORT = {"kind": "export", "title": "machines", "object_type": "machine"}
CSV_JSON = {"operation": "upsert", "object_type": "machine", "file_content": CSV}


@pytest.mark.parametrize("body, field", [
    ({"notify_url": "https://example.com", **ENVELOPE}, "notify_url"),
    ({**ENVELOPE, "webhook": "x"}, "webhook"),  # after the data
    ({"id": "mine", **ENVELOPE}, "id"),
    ({**ENVELOPE, "title": "an export's field"}, "title"),
    ({**EXPORT, "format": "csv"}, "format"),
    ({**EXPORT, "params": {"format": "csv", "compression": "gzip"}}, "params.compression"),
    ({**EXPORT, "time_frame": {"all": True, "since": "2026-01-01"}}, "time_frame.since"),
    ({**CSV_JSON, "type": "resources"}, "type"),
    ({**CSV_JSON, "field_mappings": [{"api_name": "rpm", "index": 1, "cast": "int"}]}, "field_mappings[0].cast"),
    ({**ENVELOPE, "schedule": {"cron": "* * * * *", "timezone": "UTC"}}, "schedule.timezone"),
])
async def test_an_unknown_field_in_a_json_body_is_refused_and_nothing_is_published(
        tmp_path: Path, client: TestClient, publisher: FakePublisher, body: dict[str, Any], field: str) -> None:
    assert await refused_field(await client.post("/v1/jobs", headers=KEY, json=body)) == field
    assert (publisher.jobs, uploads(tmp_path)) == ([], [])


@pytest.mark.parametrize("body, field", [
    ({"type": ["resources"], "action": "post", "data": RECORDS}, "type"),
    ({**EXPORT, "params": ["csv"]}, "params"),
    ({**EXPORT, "time_frame": "all"}, "time_frame"),
    ({**CSV_JSON, "object_type": 7}, "object_type"),
    ({**CSV_JSON, "file_name": 7}, "file_name"),
    ({**CSV_JSON, "file_content": ["a", "b"]}, "file_content"),
    ({**ENVELOPE, "schedule": "hourly"}, "schedule"),
])
async def test_a_field_of_the_wrong_type_is_invalid_field(client: TestClient, publisher: FakePublisher,
                                                          body: dict[str, Any], field: str) -> None:
    assert await refused_field(await client.post("/v1/jobs", headers=KEY, json=body), "invalid_field") == field
    assert publisher.jobs == []


@pytest.mark.parametrize("content_type, body, params, field", [
    ("application/json", orjson.dumps(ENVELOPE), {"type": "resources"}, "type"),  # an envelope has its own
    ("application/json", orjson.dumps(RECORDS), {"type": "resources", "action": "post", "kind": "x"}, "kind"),
    ("application/x-ndjson", b'{"type": "m"}\n', {"type": "resources", "action": "post", "operation": "x"},
     "operation"),
    ("text/csv", CSV.encode(), {"operation": "upsert", "object_type": "m", "action": "post"}, "action"),
    ("text/csv", CSV.encode(), {"operation": "upsert", "object_type": "m", "delimiter": ";"}, "delimiter"),
])
async def test_a_query_parameter_the_body_form_does_not_take_is_refused(
        tmp_path: Path, client: TestClient, publisher: FakePublisher, content_type: str, body: bytes,
        params: dict[str, str], field: str) -> None:
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": content_type}, data=body, params=params)
    assert await refused_field(resp) == field
    assert (publisher.jobs, uploads(tmp_path)) == ([], [])


def multipart(*parts: tuple[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in parts:
        if name == "file":
            form.add_field("file", value.encode(), filename="machines.csv", content_type="text/csv")
        else:
            form.add_field(name, value)
    return form


@pytest.mark.parametrize("parts, params, field", [
    ([("job", '{"operation": "upsert", "object_type": "m", "callback": 1}'), ("file", CSV)], {}, "callback"),
    ([("operation", "upsert"), ("object_type", "m"), ("notify", "me"), ("file", CSV)], {}, "notify"),
    ([("job", '{"operation": "upsert", "object_type": "m"}'), ("file", CSV)], {"operation": "upsert"}, "operation"),
])
async def test_a_multipart_part_or_setting_it_does_not_know_is_refused(
        tmp_path: Path, client: TestClient, publisher: FakePublisher, parts: list[tuple[str, str]],
        params: dict[str, str], field: str) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, data=multipart(*parts), params=params)
    assert await refused_field(resp) == field
    assert (publisher.jobs, uploads(tmp_path)) == ([], [])


async def test_the_forms_take_what_the_readme_says(client: TestClient, publisher: FakePublisher) -> None:
    answers = [
        await client.post("/v1/jobs", headers=KEY, json={**ENVELOPE, "kind": "import", "description": "d"}),
        await client.post("/v1/jobs", headers=KEY, json=RECORDS,
                          params={"type": "resources", "action": "post", "description": "d"}),
        await client.post("/v1/jobs", headers=KEY, json={**EXPORT, "description": "d", "source": "objects",
                                                         "time_frame": {"all": True},
                                                         "params": {"format": "csv", "file_split_size": 5,
                                                                    "attributes": ["rpm"]}}),
        await client.post("/v1/jobs", headers=KEY, json={**CSV_JSON, "kind": "import", "file_name": "m.csv",
                                                         "description": "d", "character_encoding": "utf-8"}),
        await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                          params={"operation": "upsert", "object_type": "m", "file_name": "m.csv", "find_by":
                                  "external_id", "job_type": "objects", "description": "d",
                                  "field_mappings": '[{"api_name": "external_id", "index": 0}]'}),
        await client.post("/v1/jobs", headers=KEY, data=multipart(
            ("operation", "upsert"), ("object_type", "m"), ("description", "d"), ("file", CSV))),
    ]
    assert [resp.status for resp in answers] == [202] * len(answers), [await resp.text() for resp in answers]


# --- dry runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type, body, params", [
    ("application/json", b'{"type": "resources", "action": "post", "data": [{"type": "m"', {"dry_run": "yes"}),
    ("application/x-ndjson", b'not json\n', {"type": "resources", "action": "post", "dry_run": "True"}),
    ("text/csv", b"", {"operation": "upsert", "object_type": "m", "dry_run": "1"}),
], ids=["an envelope", "NDJSON", "text/csv"])
async def test_a_wrong_dry_run_in_the_query_is_refused_before_the_body_is_read(
        client: TestClient, publisher: FakePublisher, content_type: str, body: bytes, params: dict[str, str]) -> None:
    """Had the body been read, it would have been refused for itself (not JSON, an empty file)."""
    resp = await client.post("/v1/jobs", headers={**KEY, "content-type": content_type}, data=body, params=params)
    assert await refused_field(resp, "invalid_field") == "dry_run"
    assert publisher.jobs == []


@pytest.mark.parametrize("send", [
    {"json": {**ENVELOPE, "dry_run": True}},
    {"json": {**ENVELOPE, "dry_run": True}, "params": {"dry_run": "true"}},
    {"json": RECORDS, "params": {"type": "resources", "action": "post", "dry_run": "true"}},
    {"json": {**CSV_JSON, "dry_run": True}},
    {"data": CSV, "headers": {"content-type": "text/csv"},
     "params": {"operation": "upsert", "object_type": "m", "dry_run": "true"}},
    {"data": multipart(("job", '{"operation": "upsert", "object_type": "m", "dry_run": true}'), ("file", CSV))},
    {"data": multipart(("operation", "upsert"), ("object_type", "m"), ("dry_run", "true"), ("file", CSV))},
], ids=["envelope", "envelope and query", "bare array", "file_content", "text/csv", "multipart job part",
        "multipart setting part"])
async def test_a_dry_run_is_submitted_as_one_by_every_form(client: TestClient, publisher: FakePublisher,
                                                           send: dict[str, Any]) -> None:
    resp = await client.post("/v1/jobs", **{**send, "headers": {**KEY, **send.get("headers", {})}})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["dry_run"] is True
    [(submitted, _)] = publisher.jobs
    assert submitted.details is not None and submitted.details["dry_run"] is True


async def test_a_real_job_says_so(client: TestClient, publisher: FakePublisher) -> None:
    resp = await client.post("/v1/jobs", headers=KEY, json={**ENVELOPE, "dry_run": False})
    assert resp.status == 202 and (await resp.json())["dry_run"] is False
    assert publisher.jobs[0][0].details is None


# --- the cap of active jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"api_keys": {"key-a": "tenant-a", "key-b": "tenant-b"}, "max_active_jobs": 2}],
                         indirect=True)
async def test_jobs_accepted_but_not_in_the_view_yet_count_against_the_cap(client: TestClient,
                                                                           publisher: FakePublisher) -> None:
    for _ in range(2):
        assert (await client.post("/v1/jobs", headers=KEY, json=ENVELOPE)).status == 202
    resp = await client.post("/v1/jobs", headers=KEY, json=EXPORT)
    assert resp.status == 429, await resp.text()
    assert resp.headers["Retry-After"] == "5"
    error = (await resp.json())["error"]
    assert (error["code"], error["limit"], error["retry_after"]) == ("too_many_active_jobs", 2, 5)
    assert len(publisher.jobs) == 2
    assert (await client.post("/v1/jobs", headers={"x-api-key": "key-b"}, json=ENVELOPE)).status == 202
    scheduled = {**ENVELOPE, "schedule": {"cron": "0 0 * * *"}}  # a definition is not active, but is refused too
    assert (await client.post("/v1/jobs", headers=KEY, json=scheduled)).status == 429
