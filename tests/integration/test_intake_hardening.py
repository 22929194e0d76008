"""Hostile and careless job bodies against the real stack: every answer a 4xx in the JSON shape,
no request holding the API, and a bad record failing alone."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulkjobs.domain.limits import MAX_DESCRIPTION_CHARS
from bulkjobs.kafka.batching import MAX_RECORD_DEPTH
from tests.support import Client, Response, Stack, wait_for

MAX_BODY = 32 * 1024 * 1024  # the shared stack's BULKJOBS_MAX_BODY_BYTES (tests/conftest.py)


def error_of(resp: Response) -> dict[str, Any]:
    assert isinstance(resp.body, dict) and set(resp.body) == {"error"}, resp.body
    error = resp.body["error"]
    assert error["code"] and error["message"]
    return error


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rss_kib(stack: Stack) -> int:
    status = Path(f"/proc/{stack.processes['api'].pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def while_health_is_polled(stack: Stack, post: Callable[[], Response]) -> tuple[Response, list[float]]:
    """``post()``'s answer, and how long each /v1/health took meanwhile."""
    health = stack.client(None)
    answer: list[Response] = []
    posting = threading.Thread(target=lambda: answer.append(post()))
    posting.start()
    latencies = []
    while posting.is_alive():
        started = time.monotonic()
        assert health.get("/v1/health").status == 200
        latencies.append(time.monotonic() - started)
    posting.join()
    return answer[0], latencies


def job_total(api: Client) -> int:
    return api.get("/v1/jobs?limit=1").body["total"]


# --- compressed bodies --------------------------------------------------------------------------


def test_health_answers_while_a_gzip_bomb_is_read_and_the_inflated_size_is_what_counts(stack: Stack,
                                                                                    api: Client) -> None:
    # 96 MiB of whitespace between two members: valid JSON, about 100 KB compressed.
    bomb = gzip.compress(b'{"type": "resources",' + b" " * (96 << 20) + b'"action": "post", "data": [{}]}', 9)
    assert len(bomb) < 200_000
    before = rss_kib(stack)
    resp, latencies = while_health_is_polled(stack, lambda: api.post(
        "/v1/jobs", data=bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}))

    assert resp.status == 413
    assert error_of(resp) == {"code": "too_large", "limit": MAX_BODY,
                                   "message": f"the body is larger than the limit of {MAX_BODY} bytes"}
    assert latencies and max(latencies) < 0.5, latencies
    assert rss_kib(stack) - before < 64 * 1024


def test_a_gzip_bomb_without_data_is_refused_once_its_fields_pass_their_limit(api: Client) -> None:
    bomb = gzip.compress(b'{"type": "resources", "action": "post", "x": "' + b"a" * (96 << 20) + b'"}', 9)
    started = time.monotonic()
    resp = api.post("/v1/jobs", data=bomb, content_type="application/json", headers={"Content-Encoding": "gzip"})
    assert resp.status == 413
    assert error_of(resp)["code"] == "fields_too_large"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some clients send it
    ("GZip", gzip.compress),
])
def test_compressed_json_ndjson_and_csv_bodies_are_inflated(api: Client, encoding: str, compress: Any) -> None:
    kind = unique("zipped")
    headers = {"Content-Encoding": encoding}
    json_body = compress(json.dumps({"type": "resources", "action": "external_id_set",
                                     "data": [{"type": kind, "external_id": "j"}]}).encode())
    ndjson = compress(json.dumps({"type": kind, "external_id": "n"}).encode() + b"\n")
    csv = compress(b"external_id,name\r\nc,press\r\n")
    jobs = [
        api.post("/v1/jobs", data=json_body, content_type="application/json", headers=headers),
        api.post("/v1/jobs?type=resources&action=external_id_set", data=ndjson,
                 content_type="application/x-ndjson", headers=headers),
        api.post(f"/v1/jobs?operation=upsert&object_type={kind}", data=csv, content_type="text/csv", headers=headers),
    ]
    for resp in jobs:
        assert resp.status == 202, resp.body
        assert api.wait_done(resp.body["id"])["status"] == "succeeded"
    assert api.get(f"/v1/objects?type={kind}").body["total"] == 3


def multipart_body(kind: str) -> tuple[bytes, str]:
    boundary = "hardening-" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\nupsert\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"object_type\"\r\n\r\n{kind}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.csv\"\r\n\r\n"
            f"external_id,name\r\nm,press\r\n\r\n--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


FORMS = ["json", "ndjson", "csv", "multipart"]


def post_form(api: Client, form: str, data: bytes, headers: dict[str, str]) -> Response:
    if form == "multipart":
        body, content_type = multipart_body(unique("m"))
        return api.post("/v1/jobs", data=data or body, content_type=content_type, headers=headers)
    path, content_type = {
        "json": ("/v1/jobs", "application/json"),
        "ndjson": ("/v1/jobs?type=resources&action=post", "application/x-ndjson"),
        "csv": (f"/v1/jobs?operation=upsert&object_type={unique('c')}", "text/csv"),
    }[form]
    return api.post(path, data=data, content_type=content_type, headers=headers)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-custom", "gzip, gzip", "gzip;q=1"])
def test_an_unsupported_content_encoding_is_415_for_every_body_form(api: Client, form: str, encoding: str) -> None:
    before = job_total(api)
    resp = post_form(api, form, b'{"type":"resources","action":"post","data":[{}]}', {"Content-Encoding": encoding})
    assert resp.status == 415, resp.body
    assert error_of(resp)["code"] == "unsupported_content_encoding"
    assert job_total(api) == before


def test_a_compressed_multipart_body_is_415(api: Client) -> None:
    body, content_type = multipart_body(unique("m"))
    resp = api.post("/v1/jobs", data=gzip.compress(body), content_type=content_type,
                    headers={"Content-Encoding": "gzip"})
    assert resp.status == 415
    assert error_of(resp)["code"] == "unsupported_content_encoding"


ONE_JOB = b'{"type":"resources","action":"post","data":[' + b'{"type": "t"}, ' * 1000 + b'{"type": "t"}]}'
CORRUPT = {
    "gzip-garbage": ("gzip", b"\x1f\x8b\x08\x00not really gzip at all" * 20),
    "gzip-truncated": ("gzip", gzip.compress(ONE_JOB)[:40]),
    "gzip-then-more": ("gzip", gzip.compress(b'{"type": "t"}\n') + b"trailing"),
    "deflate-garbage": ("deflate", b"garbage-deflate" * 5),
    "deflate-truncated": ("deflate", zlib.compress(ONE_JOB)[:30]),
}


@pytest.mark.parametrize("form", ["json", "ndjson", "csv"])
@pytest.mark.parametrize("case", CORRUPT)
def test_a_body_that_does_not_inflate_is_400_for_every_body_form(api: Client, form: str, case: str) -> None:
    encoding, data = CORRUPT[case]
    before = job_total(api)
    resp = post_form(api, form, data, {"Content-Encoding": encoding})
    assert resp.status == 400, resp.body
    assert error_of(resp)["code"] == "invalid_content_encoding"
    assert job_total(api) == before


# --- a client that hangs up ------------------------------------------------------------------------


def hung_up_posts(api: Client) -> float:
    """POST /v1/jobs requests the API counted as answered with 499 (client closed request)."""
    text = api.get("/metrics").body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "bulkjobs_api_requests_total"
               and sample.labels == {"method": "POST", "route": "/v1/jobs", "status": "499"})


@pytest.mark.parametrize("form", ["application/json", "application/x-ndjson", "text/csv"])
def test_a_client_that_hangs_up_mid_body_is_a_quiet_499_and_no_job(stack: Stack, api: Client, form: str) -> None:
    before, hung_up = job_total(api), hung_up_posts(api)
    failures = stack.log_path("api").read_text().count("unhandled error")
    query, first = {  # each form's query and the first bytes of its body
        "application/json": ("", b'{"type":"resources","action":"post","data":[{"type":"t","attributes":{}},'),
        "application/x-ndjson": ("?type=resources&action=post", b'{"type":"t","attributes":{}}\n'),
        "text/csv": ("?operation=upsert&object_type=t", b"external_id,name\nx1,a\n"),
    }[form]
    url = urllib.parse.urlsplit(stack.base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/jobs{query} HTTP/1.1\r\nHost: {url.netloc}\r\nx-api-key: {api.key}\r\n"
                     f"Content-Type: {form}\r\nContent-Length: 1000000\r\n\r\n".encode() + first)
    # ... and the connection closes with most of the body unsent.
    wait_for(lambda: hung_up_posts(api) == hung_up + 1, what="the API to count the hang-up")
    log = stack.log_path("api").read_text()
    assert log.count("unhandled error") == failures
    assert "client hung up on POST /v1/jobs" in log
    assert job_total(api) == before


# --- hostile JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, status, code", [
    pytest.param(b"[" * 250_000 + b"]" * 250_000, 400, "invalid_json", id="nested-250000-levels"),
    pytest.param(b'{"type":"resources","action":"post","data":' + b"[" * 250_000 + b"]" * 250_000 + b"}",
                 400, "invalid_json", id="nested-in-an-envelope"),
    pytest.param(b'[{"a": "' + b"}, {" * 6_000_000, 413, "element_too_large", id="24-mb-unclosed-string"),
    pytest.param(b'{"type": "resources", "action": "post", "data": [{"a": 1}, {"b": 2} {"c": 3}, '
                 + b'{"d": 4}, ' * 2_000_000 + b"{}]}", 400, "invalid_json", id="wrong-early-then-20-mb"),
])
def test_hostile_json_is_answered_quickly_in_the_json_shape(stack: Stack, api: Client, body: bytes, status: int,
                                                            code: str) -> None:
    query = "?type=resources&action=post" if body.startswith(b"[") else ""  # an envelope takes no query
    started = time.monotonic()
    resp, latencies = while_health_is_polled(stack, lambda: api.post(
        "/v1/jobs" + query, data=body, content_type="application/json"))
    assert (resp.status, error_of(resp)["code"]) == (status, code)
    assert time.monotonic() - started < 3
    assert max(latencies) < 0.5, latencies


@pytest.mark.parametrize("field, value", [
    ("type", ["resources"]), ("type", {"a": 1}), ("action", ["post"]), ("action", {"post": True}), ("type", 3),
])
def test_type_or_action_of_the_wrong_type_is_400_naming_the_field(api: Client, field: str, value: Any) -> None:
    job = {"type": "resources", "action": "post", "data": [{"type": "t"}], field: value}
    resp = api.post("/v1/jobs", json_body=job)
    assert resp.status == 400
    error = error_of(resp)
    assert (error["code"], error["field"]) == ("invalid_field", field)


@pytest.mark.parametrize("length, status, code", [
    (MAX_DESCRIPTION_CHARS + 1, 400, "field_too_long"),
    (1_010_000, 413, "fields_too_large"),
    (2_000_000, 413, "fields_too_large"),
])
def test_a_description_over_its_limit_is_refused_on_every_path(api: Client, length: int, status: int,
                                                                code: str) -> None:
    description = "d" * length
    before = job_total(api)
    answers = [
        api.post("/v1/jobs", json_body={"type": "resources", "action": "post", "data": [{"type": "t"}],
                                         "description": description}),
        api.post("/v1/jobs", json_body={"data": [{"type": "t"}], "description": description,
                                         "type": "resources", "action": "post"}),
        api.post("/v1/jobs", json_body={"kind": "export", "title": "t", "object_type": "t",
                                         "description": description}),
        api.post("/v1/jobs", json_body={"operation": "upsert", "object_type": "t", "description": description,
                                         "file_content": "external_id\r\nx\r\n"}),
    ]
    for resp in answers:
        assert (resp.status, error_of(resp)["code"]) == (status, code), resp.body
    assert job_total(api) == before


def test_a_description_over_its_limit_in_the_query_is_400(api: Client) -> None:
    resp = api.post(f"/v1/jobs?type=resources&action=post&description={'d' * (MAX_DESCRIPTION_CHARS + 1)}",
                    data=b'{"type": "t"}\n', content_type="application/x-ndjson")
    assert (resp.status, error_of(resp)["code"]) == (400, "field_too_long")


def nested(levels: int) -> str:
    """JSON text of an object nested ``levels`` deep (deeper than Python's json can write)."""
    return '{"a": ' * levels + '"leaf"' + "}" * levels


def test_a_record_nested_too_deep_fails_alone_and_the_job_goes_on(api: Client) -> None:
    kind = unique("deep")
    records = [f'{{"type": "{kind}", "external_id": "before"}}',
               f'{{"type": "{kind}", "external_id": "too-deep", "attributes": {nested(1000)}}}',
               f'{{"type": "{kind}", "external_id": "deepest", "attributes": {nested(MAX_RECORD_DEPTH - 2)}}}',
               f'{{"type": "{kind}", "external_id": "after"}}']
    body = ('{"type": "resources", "action": "external_id_set", "data": [' + ", ".join(records) + "]}").encode()
    resp = api.post("/v1/jobs", data=body, content_type="application/json")
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])

    assert job["status"] == "partially_succeeded"
    results = api.results(job["id"])
    assert [result["success"] for result in results] == [True, False, True, True]
    assert results[1]["errors"][0]["detail"] == f"record is nested deeper than the limit of {MAX_RECORD_DEPTH} levels"
    assert api.get(f"/v1/objects?type={kind}").body["total"] == 3


# --- keys in any order ------------------------------------------------------------------------------


@pytest.mark.parametrize("after, field", [
    ({"kind": "export"}, "data"),
    ({"kind": "sideways"}, "kind"),
    ({"kind": ["import"]}, "kind"),
    ({"file_content": "external_id\r\nx\r\n"}, "file_content"),
])
def test_members_after_the_data_are_honoured(api: Client, after: dict[str, Any], field: str) -> None:
    before = job_total(api)
    body = json.dumps({"type": "resources", "action": "post", "data": [{"type": "t"}], **after}).encode()
    resp = api.post("/v1/jobs", data=body, content_type="application/json")
    assert resp.status == 400, resp.body
    assert error_of(resp)["field"] == field
    assert job_total(api) == before


def test_type_and_action_after_many_records_are_routed_from_disk(stack: Stack, api: Client) -> None:
    kind = unique("late")
    records = [{"type": kind, "external_id": f"e{i}", "attributes": {"pad": "x" * 200}} for i in range(100_000)]
    body = json.dumps({"data": records, "description": "late keys", "type": "resources",
                       "action": "external_id_set"}).encode()
    before = rss_kib(stack)
    resp = api.post("/v1/jobs", data=body, content_type="application/json")
    assert resp.status == 202, resp.body
    assert rss_kib(stack) - before < len(body) // 1024  # the records were not all held in memory
    job = api.wait_done(resp.body["id"], timeout=120)
    assert (job["status"], job["counts"]["created"], job["description"]) == ("succeeded", 100_000, "late keys")


def test_a_csv_job_refused_when_submitted_leaves_no_file(stack: Stack, api: Client) -> None:
    uploads = stack.data_dir / "uploads"
    before = set(uploads.iterdir())
    resp = api.post("/v1/jobs", json_body={"operation": "upsert", "object_type": "t", "schedule": {"cron": "nope"},
                                           "file_content": "external_id\r\nx\r\n"})
    assert resp.status == 400
    assert set(uploads.iterdir()) == before
