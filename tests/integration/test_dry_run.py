"""Dry runs end to end: a dry run reports what the real run that follows it does, record by
record, and changes nothing in between; every body form takes the flag; a wrong flag is a 400."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from bulkjobs.kafka.topics import JobRequest, RecordPart, TopicNames, encode
from tests.support import Client, Response, Stack, produce, wait_for


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(resp: Response) -> dict[str, Any]:
    assert isinstance(resp.body, dict) and set(resp.body) == {"error"}, resp.body
    return resp.body["error"]


def objects_of(api: Client, object_type: str) -> list[dict[str, Any]]:
    """Every object of the type as the view holds it (ids, attributes, timestamps)."""
    resp = api.get(f"/v1/objects?type={object_type}&limit=1000")
    assert resp.status == 200, resp.body
    return sorted(resp.body["items"], key=lambda item: item["id"])


def outcomes(results: list[dict[str, Any]], with_ids: bool = True) -> list[tuple[Any, ...]]:
    """What a user compares between the dry run and the real run: each record's outcome, its
    errors and (for records whose id does not depend on the run) its id."""
    return [(r["index"], r["success"], r["status"], r["errors"], r["id"] if with_ids else None) for r in results]


def test_a_mixed_json_dry_run_reports_what_the_real_run_then_does_and_changes_nothing(api: Client) -> None:
    kind = unique("machine")
    seeded = api.run({"type": "resources", "action": "post", "data": [
        {"type": kind, "external_id": "m-1", "attributes": {"name": "press"}},
        {"type": kind, "external_id": "m-2", "attributes": {"name": "lathe"}},
    ]})
    assert seeded["status"] == "succeeded" and seeded["dry_run"] is False
    before = objects_of(api, kind)
    data = [
        {"type": kind, "external_id": "m-1", "attributes": {"name": "again"}},  # exists: fails
        {"type": kind, "external_id": "m-3", "attributes": {"name": "mill"}},  # new: created
        {"type": kind, "external_id": "m-3", "attributes": {"name": "twice"}},  # new twice in the job: fails
        {"type": kind, "external_id": "m-4"},  # new
        42,  # not an object
    ]

    dry = api.run({"type": "resources", "action": "post", "dry_run": True, "data": data})
    assert dry["dry_run"] is True and dry["status"] == "partially_succeeded"
    assert dry["counts"] == {"total": 5, "processed": 5, "created": 2, "updated": 0, "deleted": 0, "skipped": 0,
                             "failed": 3}
    assert objects_of(api, kind) == before  # nothing changed

    real = api.run({"type": "resources", "action": "post", "data": data})
    assert real["dry_run"] is False
    assert (dry["counts"], dry["status"]) == (real["counts"], real["status"])
    assert outcomes(api.results(dry["id"])) == outcomes(api.results(real["id"]))
    assert len(objects_of(api, kind)) == 4


def test_an_update_and_delete_dry_run_finds_unknown_ids_as_the_real_run_does(api: Client) -> None:
    kind = unique("machine")
    api.run({"type": "resources", "action": "post", "data": [{"type": kind, "external_id": "m-1"}]})
    [machine] = objects_of(api, kind)
    unknown = uuid.uuid4().hex
    for action, data in [
        ("update", [{"id": machine["id"], "attributes": {"rpm": 900}}, {"id": unknown, "attributes": {}}]),
        ("delete", [machine["id"], machine["id"], unknown]),  # the second delete finds it gone
    ]:
        before = objects_of(api, kind)
        dry = api.run({"type": "resources", "action": action, "dry_run": True, "data": data})
        assert objects_of(api, kind) == before
        real = api.run({"type": "resources", "action": action, "data": data})
        assert dry["counts"] == real["counts"] and dry["counts"]["failed"] > 0
        assert outcomes(api.results(dry["id"])) == outcomes(api.results(real["id"]))
    assert objects_of(api, kind) == []


def test_a_relationships_dry_run_checks_both_ends_and_creates_nothing(api: Client) -> None:
    kind, relationship_type = unique("machine"), unique("feeds")
    api.run({"type": "resources", "action": "post", "data": [
        {"type": kind, "external_id": "a"}, {"type": kind, "external_id": "b"}]})
    a, b = (item["id"] for item in objects_of(api, kind))
    data = [{"relationship_type": relationship_type, "source": a, "target": b},
            {"relationship_type": relationship_type, "source": a, "target": uuid.uuid4().hex}]
    dry = api.run({"type": "relationships", "action": "post", "dry_run": True, "data": data})
    assert api.get(f"/v1/relationships?relationship_type={relationship_type}").body["items"] == []
    real = api.run({"type": "relationships", "action": "post", "data": data})
    assert dry["counts"] == real["counts"] == {"total": 2, "processed": 2, "created": 1, "updated": 0, "deleted": 0,
                                              "skipped": 0, "failed": 1}
    # a created relationship's id is new in each run: compared without ids
    assert outcomes(api.results(dry["id"]), with_ids=False) == outcomes(api.results(real["id"]), with_ids=False)
    assert len(api.get(f"/v1/relationships?relationship_type={relationship_type}").body["items"]) == 1


def test_a_csv_dry_run_gives_the_results_csv_of_the_real_run(api: Client) -> None:
    kind = unique("machine")
    api.run({"type": "resources", "action": "post", "data": [
        {"type": kind, "external_id": "m-1", "attributes": {"rpm": 10}}]})
    before = objects_of(api, kind)
    text = b"external_id,rpm\nm-1,900\nm-5,abc\nm-6,100\nm-6,200\n"
    settings = {"operation": "upsert", "object_type": kind,
                "field_mappings": [{"api_name": "external_id", "index": 0},
                                   {"api_name": "rpm", "index": 1, "type": "integer"}]}

    resp = api.post_csv(text, **settings, dry_run="true")
    assert resp.status == 202, resp.body
    dry = api.wait_done(resp.body["id"])
    assert dry["dry_run"] is True and dry["job_type"] == "objects"
    assert objects_of(api, kind) == before

    real = api.wait_done(api.post_csv(text, **settings).body["id"])
    assert real["dry_run"] is False
    assert dry["counts"] == real["counts"] == {"total": 4, "processed": 4, "created": 1, "updated": 2, "deleted": 0,
                                               "skipped": 1, "failed": 0}
    dry_csv, real_csv = (api.get(f"/v1/jobs/{job['id']}/results.csv") for job in (dry, real))
    assert dry_csv.status == real_csv.status == 200
    assert dry_csv.body == real_csv.body
    dry_log, real_log = (api.get(f"/v1/jobs/{job['id']}/log").body.splitlines()[0] for job in (dry, real))
    assert b"a dry run: it changes nothing" in dry_log and b"dry run" not in real_log


@pytest.mark.parametrize("form", ["multipart job part", "multipart setting part", "file_content"])
def test_every_csv_form_takes_dry_run(api: Client, form: str) -> None:
    kind = unique("machine")
    text = b"external_id,name\nm-1,press\n"
    settings = {"operation": "upsert", "object_type": kind}
    if form == "multipart job part":
        resp = api.post_multipart([("job", None, json.dumps({**settings, "dry_run": True}).encode()),
                                   ("file", "m.csv", text)])
    elif form == "multipart setting part":
        resp = api.post_multipart([("job", None, json.dumps(settings).encode()), ("dry_run", None, b"true"),
                                   ("file", "m.csv", text)])
    else:
        resp = api.post("/v1/jobs", json_body={**settings, "file_content": text.decode(), "dry_run": True})
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    assert job["dry_run"] is True and job["counts"]["created"] == 1
    assert objects_of(api, kind) == []


def test_ndjson_and_a_bare_array_take_dry_run_in_the_query(api: Client) -> None:
    kind = unique("machine")
    lines = b"".join(json.dumps({"type": kind, "external_id": f"m-{i}"}).encode() + b"\n" for i in range(3))
    ndjson = api.post("/v1/jobs?type=resources&action=external_id_set&dry_run=true", data=lines,
                      content_type="application/x-ndjson")
    bare = api.post("/v1/jobs?type=resources&action=external_id_set&dry_run=true",
                    json_body=[{"type": kind, "external_id": "m-0"}])
    envelope = api.post("/v1/jobs?dry_run=true", json_body={"type": "resources", "action": "external_id_set",
                                                            "data": [{"type": kind, "external_id": "m-0"}]})
    for resp, created in ((ndjson, 3), (bare, 1), (envelope, 1)):
        assert resp.status == 202, resp.body
        job = api.wait_done(resp.body["id"])
        assert job["dry_run"] is True and job["counts"]["created"] == created
    assert objects_of(api, kind) == []


@pytest.mark.parametrize("request_kwargs, code", [
    ({"path": "/v1/jobs", "json_body": {"type": "resources", "action": "post", "dry_run": "true",
                                        "data": [{"type": "m"}]}}, "invalid_field"),
    ({"path": "/v1/jobs", "json_body": {"type": "resources", "action": "post", "data": [{"type": "m"}],
                                        "dry_run": 1}}, "invalid_field"),
    ({"path": "/v1/jobs?type=resources&action=post&dry_run=yes", "json_body": [{"type": "m"}]}, "invalid_field"),
    ({"path": "/v1/jobs?operation=upsert&object_type=m&dry_run=1", "data": b"external_id\nm-1\n",
      "content_type": "text/csv"}, "invalid_field"),
    ({"path": "/v1/jobs?dry_run=false", "json_body": {"type": "resources", "action": "post", "dry_run": True,
                                                      "data": [{"type": "m"}]}}, "conflicting_dry_run"),
    ({"path": "/v1/jobs", "json_body": {"kind": "export", "object_type": "m", "dry_run": True}},
     "dry_run_not_supported"),
])
def test_a_wrong_dry_run_is_a_400(api: Client, request_kwargs: dict[str, Any], code: str) -> None:
    path = request_kwargs.pop("path")
    resp = api.post(path, **request_kwargs)
    assert resp.status == 400, resp.body
    assert error_of(resp)["code"] == code and error_of(resp)["field"] == "dry_run"


def test_a_multipart_job_part_with_a_text_dry_run_is_a_400(api: Client) -> None:
    resp = api.post_multipart([("job", None, json.dumps({"operation": "upsert", "object_type": "m",
                                                          "dry_run": "true"}).encode()),
                               ("file", "m.csv", b"external_id\nm-1\n")])
    assert resp.status == 400 and error_of(resp)["code"] == "invalid_field"


def test_a_job_produced_to_kafka_as_a_dry_run_changes_nothing(stack: Stack, api: Client) -> None:
    kind, job_id = unique("machine"), unique("kafka-dry")
    records = [{"type": kind, "external_id": "m-1"}, {"type": kind, "external_id": "m-1"}]
    request = JobRequest(job_id=job_id, tenant="tenant-a", type="resources", action="post", parts=1, dry_run=True)
    part = RecordPart(job_id=job_id, part=0, records=records)
    produce(stack.brokers, TopicNames(stack.prefix).job_events,
            [(job_id.encode(), encode(request)), (job_id.encode(), encode(part))])
    wait_for(lambda: api.get(f"/v1/jobs/{job_id}").status == 200, what=f"job {job_id} to appear")
    job = api.wait_done(job_id)
    assert job["dry_run"] is True and (job["counts"]["created"], job["counts"]["failed"]) == (1, 1)
    assert objects_of(api, kind) == []
