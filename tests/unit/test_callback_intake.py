"""``callback_url`` at the door, in every form a job comes in, over a fake publisher: the job
is published with a pending callback, or refused with a 400 that says why."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from bulkjobs.api.lifecycle import job_details
from bulkjobs.domain.webhooks import MAX_URL_CHARS, pending_callback
from bulkjobs.settings import Settings
from tests.unit.test_intake import CSV, KEY, FakePublisher, client, publisher, refused_field  # noqa: F401

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WITH_SECRET = {"webhook_secrets": {"tenant-a": SECRET}}
URL = "https://hooks.example.com/bulkjobs?job=1"
RECORDS = [{"type": "server", "external_id": "e1"}]
IMPORT = {"type": "resources", "action": "post"}
CSV_SETTINGS = {"operation": "upsert", "object_type": "machine"}


@pytest.fixture
def settings(tmp_path: Any, request: pytest.FixtureRequest) -> Settings:
    given = {"data_dir": tmp_path, "api_keys": {"key-a": "tenant-a"}, "partitions": 3, **WITH_SECRET}
    return Settings(**{**given, **getattr(request, "param", {})})


def multipart(job: dict[str, Any] | None, parts: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if job is not None:
        form.add_field("job", orjson.dumps(job).decode(), content_type="application/json")
    for name, value in parts.items():
        form.add_field(name, value)
    form.add_field("file", CSV.encode(), filename="machines.csv", content_type="text/csv")
    return form


async def submit(client: TestClient, form: str, url: Any) -> aiohttp.ClientResponse:  # noqa: F811
    """A job in ``form`` whose callback_url is ``url``."""
    if form == "envelope":
        return await client.post("/v1/jobs", headers=KEY, json={**IMPORT, "data": RECORDS, "callback_url": url})
    if form == "bare array":
        return await client.post("/v1/jobs", headers=KEY, json=RECORDS, params={**IMPORT, "callback_url": url})
    if form == "ndjson":
        return await client.post("/v1/jobs", headers={**KEY, "content-type": "application/x-ndjson"},
                                 data=orjson.dumps(RECORDS[0]) + b"\n", params={**IMPORT, "callback_url": url})
    if form == "csv":
        return await client.post("/v1/jobs", headers={**KEY, "content-type": "text/csv"}, data=CSV,
                                 params={**CSV_SETTINGS, "callback_url": url})
    if form == "multipart job part":
        return await client.post("/v1/jobs", headers=KEY, data=multipart({**CSV_SETTINGS, "callback_url": url}, {}))
    if form == "multipart parts":
        return await client.post("/v1/jobs", headers=KEY, data=multipart(None, {**CSV_SETTINGS, "callback_url": url}))
    if form == "file_content":
        return await client.post("/v1/jobs", headers=KEY,
                                 json={**CSV_SETTINGS, "file_content": CSV, "callback_url": url})
    assert form == "export"
    return await client.post("/v1/jobs", headers=KEY, json={"kind": "export", "title": "machines",
                                                            "object_type": "machine", "callback_url": url})


FORMS = ["envelope", "bare array", "ndjson", "csv", "multipart job part", "multipart parts", "file_content", "export"]


@pytest.mark.parametrize("form", FORMS)
async def test_every_form_takes_a_callback_url(client: TestClient, publisher: FakePublisher,  # noqa: F811
                                               form: str) -> None:
    resp = await submit(client, form, URL)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["callback"] == pending_callback(URL)
    [(submitted, _)] = publisher.jobs
    assert (submitted.details or {})["callback"] == pending_callback(URL)


@pytest.mark.parametrize("form", FORMS)
async def test_every_form_refuses_a_url_that_is_not_http(client: TestClient, publisher: FakePublisher,  # noqa: F811
                                                         form: str) -> None:
    resp = await submit(client, form, "ftp://hooks.example.com/")
    assert await refused_field(resp, "invalid_callback_url") == "callback_url"
    assert publisher.jobs == []


@pytest.mark.parametrize("length, status", [(MAX_URL_CHARS - 1, 202), (MAX_URL_CHARS, 202), (MAX_URL_CHARS + 1, 400)])
async def test_a_callback_url_may_hold_up_to_2048_characters(client: TestClient, length: int,  # noqa: F811
                                                             status: int) -> None:
    base = "https://hooks.example.com/"
    resp = await submit(client, "envelope", base + "a" * (length - len(base)))
    assert resp.status == status, await resp.text()
    if status == 400:
        assert (await resp.json())["error"]["code"] == "field_too_long"


async def test_a_job_without_a_callback_url_has_no_callback(client: TestClient) -> None:  # noqa: F811
    resp = await client.post("/v1/jobs", headers=KEY, json={**IMPORT, "data": RECORDS})
    assert resp.status == 202 and "callback" not in await resp.json()


@pytest.mark.parametrize("settings", [{"webhook_secrets": {"tenant-b": SECRET}}], indirect=True)
async def test_a_tenant_without_a_webhook_secret_may_not_name_a_callback(client: TestClient,  # noqa: F811
                                                                         publisher: FakePublisher) -> None:  # noqa: F811
    resp = await submit(client, "envelope", URL)
    assert await refused_field(resp, "webhook_secret_missing") == "callback_url"
    assert publisher.jobs == []


@pytest.mark.parametrize("settings", [{"webhook_deny_private": True}], indirect=True)
@pytest.mark.parametrize("url, status", [
    ("http://127.0.0.1:9/hook", 400), ("http://[::1]/hook", 400), ("http://10.0.0.7/hook", 400),
    ("http://169.254.169.254/latest", 400), ("http://localhost:9/hook", 400),  # resolved: loopback
    ("http://93.184.216.34/hook", 202),
])
async def test_deny_private_refuses_targets_that_are_not_public(client: TestClient, url: str,  # noqa: F811
                                                                status: int) -> None:
    resp = await submit(client, "envelope", url)
    assert resp.status == status, await resp.text()
    if status == 400:
        assert (await resp.json())["error"]["code"] == "callback_url_not_allowed"


async def test_private_targets_are_allowed_unless_denied(client: TestClient) -> None:  # noqa: F811
    resp = await submit(client, "envelope", "http://127.0.0.1:9/hook")
    assert resp.status == 202, await resp.text()


def test_an_exports_update_keeps_its_callback() -> None:
    """A PUT of an export's params rewrites its details from its body: the callback stays."""
    body = {"id": "x", "title": "machines", "source": "objects", "object_type": "machine", "time_frame": None,
            "params": {}, "callback": pending_callback(URL), "counts": {}}
    assert job_details(body)["callback"] == pending_callback(URL)
