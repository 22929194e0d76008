"""Retrying a finished job's failed (and skipped) records, end to end against a real broker:
the new job holds exactly those records (a CSV job's file byte for byte), and its results map
back to the first submission by ``source_index``."""

from __future__ import annotations

import codecs
import csv
import io
import uuid
from typing import Any

from tests.integration.test_lifecycle import settled
from tests.support import Client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(resp: Any) -> dict[str, Any]:
    assert isinstance(resp.body, dict) and set(resp.body) == {"error"}, resp.body
    return resp.body["error"]


def retried(api: Client, job_id: str, query: str = "") -> dict[str, Any]:
    resp = api.post(f"/v1/jobs/{job_id}/retry{query}")
    assert resp.status == 202, resp.body
    assert resp.body["retry_of"] == job_id
    return api.wait_done(resp.body["id"])


def test_a_json_jobs_failed_records_are_retried_and_map_back_to_their_indexes(api: Client) -> None:
    kind = unique("retry-json")
    api.run({"type": "resources", "action": "post",
             "data": [{"type": kind, "external_id": name} for name in ("taken-1", "taken-3")]})
    mixed = api.run({"type": "resources", "action": "post", "description": "mixed", "data": [
        {"type": kind, "external_id": "new-0"},
        {"type": kind, "external_id": "taken-1", "attributes": {"from": "mixed", "n": 1}},
        {"type": kind, "external_id": "new-2"},
        {"type": kind, "external_id": "taken-3", "attributes": {"from": "mixed", "n": 3}},
        "not-an-object",
    ]})
    assert mixed["status"] == "partially_succeeded" and mixed["retry_of"] is None
    assert {r["source_index"] for r in api.results(mixed["id"])} == {None}
    # The taken ids are freed, so the retried records can now be created.
    api.run({"type": "resources", "action": "external_id_delete",
             "data": [{"type": kind, "external_id": name} for name in ("taken-1", "taken-3")]})

    retry = retried(api, mixed["id"])

    assert (retry["type"], retry["action"], retry["description"]) == ("resources", "post", "mixed")
    assert retry["counts"] == {"total": 3, "processed": 3, "created": 2, "updated": 0, "deleted": 0,
                               "skipped": 0, "failed": 1}
    results = api.results(retry["id"])
    assert [(r["index"], r["source_index"], r["status"]) for r in results] == [
        (0, 1, "created"), (1, 3, "created"), (2, 4, "failed")]
    objects = {item["external_id"]: item["attributes"]
               for item in api.get(f"/v1/objects?type={kind}&limit=100").body["items"]}
    assert objects == {"new-0": {}, "new-2": {}, "taken-1": {"from": "mixed", "n": 1},
                       "taken-3": {"from": "mixed", "n": 3}}

    # A retry of a retry maps to its own parent's indexes.
    again = retried(api, retry["id"])
    assert [(r["index"], r["source_index"]) for r in api.results(again["id"])] == [(0, 2)]
    assert api.job(again["id"])["retry_of"] == retry["id"]


# A BOM, CRLF line ends, quoted fields with a line break, a comma and doubled quotes, non-ASCII.
HEADER = codecs.BOM_UTF8 + b"external_id,name,note\r\n"
ROWS = [
    b"c-0,alpha,plain\r\n",  # created
    b'dup-1,"multi\r\nline, with comma","say ""hi"""\r\n',  # failed: the external id is taken
    b"c-2,gamma,x\r\n",  # created
    b"c-3,only-two\r\n",  # skipped: two cells
    "dup-4,\"é ünï\",q\r\n".encode(),  # failed
]


def test_a_csv_jobs_retry_file_is_the_header_and_the_failed_rows_byte_for_byte(api: Client) -> None:
    kind = unique("retry-csv")
    api.run({"type": "resources", "action": "post",
             "data": [{"type": kind, "external_id": name} for name in ("dup-1", "dup-4")]})
    resp = api.post_csv(HEADER + b"".join(ROWS), operation="insert", object_type=kind, file_name="rows.csv")
    assert resp.status == 202, resp.body
    original = api.wait_done(resp.body["id"])
    assert (original["counts"]["created"], original["counts"]["failed"], original["counts"]["skipped"]) == (2, 2, 1)

    retry = retried(api, original["id"])
    assert api.get(f"/v1/jobs/{retry['id']}/file").body == HEADER + ROWS[1] + ROWS[4]
    assert (retry["operation"], retry["object_type"], retry["file"]["name"]) == ("insert", kind, "rows.csv")
    assert retry["file"]["rows"] == 2 and retry["counts"]["failed"] == 2
    assert [(r["index"], r["source_index"]) for r in api.results(retry["id"])] == [(0, 1), (1, 4)]
    table = list(csv.reader(io.StringIO(api.get(f"/v1/jobs/{retry['id']}/results.csv").body.decode("utf-8-sig"),
                                        newline="")))
    assert table[0] == ["_status", "_id", "_error", "_source_index", "external_id", "name", "note"]
    assert [(row[0], row[3], row[4]) for row in table[1:]] == [("failed", "1", "dup-1"), ("failed", "4", "dup-4")]
    assert table[1][5] == "multi\r\nline, with comma" and table[1][6] == 'say "hi"'

    with_skipped = retried(api, original["id"], "?include=skipped")
    assert api.get(f"/v1/jobs/{with_skipped['id']}/file").body == HEADER + ROWS[1] + ROWS[3] + ROWS[4]
    assert [r["source_index"] for r in api.results(with_skipped["id"])] == [1, 3, 4]


ROWS_CANCELLED = 150_000  # enough that a suspend sent at once (right after the 202) finds batches still to come


def test_a_cancelled_csv_jobs_rows_never_applied_are_retried_with_include_skipped(api: Client) -> None:
    kind = unique("retry-cancel")
    rows = [f"r-{i},name {i}\n".encode() for i in range(ROWS_CANCELLED)]
    resp = api.post_csv(b"external_id,name\n" + b"".join(rows), operation="insert", object_type=kind)
    assert resp.status == 202, resp.body
    job_id = resp.body["id"]
    assert api.post(f"/v1/jobs/{job_id}/suspend").status == 200
    assert error_of(api.post(f"/v1/jobs/{job_id}/retry"))["code"] == "job_not_finished"
    assert api.post(f"/v1/jobs/{job_id}/cancel").status == 200
    cancelled = settled(api, job_id)
    applied = {r["index"] for r in api.results(job_id)}
    assert cancelled["status"] == "cancelled" and len(applied) == cancelled["counts"]["processed"] < ROWS_CANCELLED

    assert error_of(api.post(f"/v1/jobs/{job_id}/retry"))["code"] == "nothing_to_retry"  # none failed
    retry = retried(api, job_id, "?include=skipped")
    never_applied = [i for i in range(ROWS_CANCELLED) if i not in applied]
    assert api.get(f"/v1/jobs/{retry['id']}/file").body == b"external_id,name\n" + b"".join(
        rows[i] for i in never_applied)
    assert retry["status"] == "succeeded"
    assert [r["source_index"] for r in api.results(retry["id"])] == never_applied


def test_what_cannot_be_retried_is_refused(api: Client, api_b: Client) -> None:
    kind = unique("retry-refused")
    done = api.run({"type": "resources", "action": "post", "data": [{"type": kind}]})

    nothing = api.post(f"/v1/jobs/{done['id']}/retry")
    assert nothing.status == 409 and error_of(nothing)["code"] == "nothing_to_retry"
    other_tenant = api_b.post(f"/v1/jobs/{done['id']}/retry")
    assert other_tenant.status == 404 and error_of(other_tenant)["code"] == "not_found"
    unknown = api.post(f"/v1/jobs/{uuid.uuid4().hex}/retry")
    assert unknown.status == 404
    bad_include = api.post(f"/v1/jobs/{done['id']}/retry?include=created")
    assert bad_include.status == 400 and error_of(bad_include)["field"] == "include"
    unknown_param = api.post(f"/v1/jobs/{done['id']}/retry?outcome=failed")
    assert unknown_param.status == 400 and error_of(unknown_param)["code"] == "unknown_field"
