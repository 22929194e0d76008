"""CSV jobs end to end over HTTP: submit forms, operations, mappings, encodings, job types,
results CSV, original file, log and templates."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from tests.support import Client, Response


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(resp: Response) -> dict[str, Any]:
    assert isinstance(resp.body, dict) and set(resp.body) == {"error"}, resp.body
    return resp.body["error"]


def run_csv(api: Client, data: bytes, **settings: Any) -> dict[str, Any]:
    resp = api.post_csv(data, **settings)
    assert resp.status == 202, resp.body
    return api.wait_done(resp.body["id"])


def parse_csv(raw: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))


def counts(total: int, **values: int) -> dict[str, int]:
    return {"total": total, "processed": total, "created": 0, "updated": 0, "deleted": 0, "skipped": 0,
            "failed": 0, **values}


def objects_of(api: Client, object_type: str) -> dict[str, dict[str, Any]]:
    items = api.get(f"/v1/objects?type={object_type}&limit=1000").body["items"]
    return {item["external_id"]: item["attributes"] for item in items}


# --- submitting ---------------------------------------------------------------------------------


def test_the_three_submit_forms_give_the_same_job(api: Client) -> None:
    kind = unique("machine")
    text = "external_id,name,site\r\nm-1,press,A\r\nm-2,lathe,B\r\n"
    settings = {"operation": "upsert", "object_type": kind, "description": "machines"}

    by_body = api.post_csv(text.encode(), **settings, file_name="machines.csv")
    by_form = api.post_multipart([("job", None, json.dumps(settings).encode()),
                                  ("file", "machines.csv", text.encode())])
    by_json = api.post("/v1/jobs", json_body={**settings, "file_content": text, "file_name": "machines.csv"})

    jobs = []
    for resp in (by_body, by_form, by_json):
        assert resp.status == 202, resp.body
        assert resp.body["status"] == "queued" and resp.body["counts"]["total"] == 2
        jobs.append(api.wait_done(resp.body["id"]))
    for job in jobs:
        assert job["job_type"] == "objects" and job["operation"] == "upsert" and job["object_type"] == kind
        assert job["type"] == "resources" and job["action"] == "external_id_set"
        assert job["description"] == "machines"
        assert job["file"] == {"name": "machines.csv", "size": len(text), "character_encoding": "utf-8", "rows": 2}
        assert job["status"] == "succeeded" and job["host"]
    assert jobs[0]["counts"] == counts(2, created=2)
    assert jobs[1]["counts"] == jobs[2]["counts"] == counts(2, updated=2)
    assert objects_of(api, kind) == {"m-1": {"name": "press", "site": "A"}, "m-2": {"name": "lathe", "site": "B"}}


def test_form_fields_may_come_one_per_part(api: Client) -> None:
    kind = unique("part")
    resp = api.post_multipart([("operation", None, b"insert"), ("object_type", None, kind.encode()),
                               ("field_mappings", None, b'[{"api_name": "external_id", "index": 0}]'),
                               ("file", "p.csv", b"ref,ignored\nx-1,zzz\n")])
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    assert job["counts"] == counts(1, created=1)
    assert objects_of(api, kind) == {"x-1": {}}


def test_every_operation_by_external_id(api: Client) -> None:
    kind = unique("item")
    inserted = run_csv(api, b"external_id,name\na,alpha\nb,beta\na,again\n", operation="insert", object_type=kind)
    assert inserted["status"] == "partially_succeeded"
    assert inserted["counts"] == counts(3, created=2, failed=1)

    updated = run_csv(api, b"external_id,name,colour\na,ALPHA,red\nzzz,ghost,\n", operation="update",
                      object_type=kind)
    assert updated["action"] == "external_id_update"
    assert updated["counts"] == counts(2, updated=1, failed=1)

    upserted = run_csv(api, b"external_id,name\nb,BETA\nc,gamma\n", operation="upsert", object_type=kind)
    assert upserted["counts"] == counts(2, created=1, updated=1)
    assert objects_of(api, kind) == {"a": {"name": "ALPHA", "colour": "red"}, "b": {"name": "BETA"},
                                     "c": {"name": "gamma"}}

    deleted = run_csv(api, b"external_id\na\nc\nnope\n", operation="delete", object_type=kind)
    assert deleted["counts"] == counts(3, deleted=2, failed=1)
    assert objects_of(api, kind) == {"b": {"name": "BETA"}}


def test_field_mappings_defaults_types_and_find_by_another_column(api: Client) -> None:
    kind = unique("person")
    mappings = [{"api_name": "email", "index": 2}, {"api_name": "name", "index": 0},
                {"api_name": "age", "index": 1, "type": "integer"},
                {"api_name": "team", "index": 3, "default_value": "unassigned"}]
    data = b"Name,Age,E-mail,Team\nAda,36,ada@x.org,\nBob,forty,bob@x.org,ops\nCy,29,cy@x.org,dev\n"

    job = run_csv(api, data, operation="upsert", object_type=kind, find_by="email", field_mappings=mappings)

    assert job["find_by"] == "email" and job["field_mappings"][3]["default_value"] == "unassigned"
    assert job["status"] == "partially_succeeded"
    assert job["counts"] == counts(3, created=2, skipped=1)
    assert objects_of(api, kind) == {
        "ada@x.org": {"email": "ada@x.org", "name": "Ada", "age": 36, "team": "unassigned"},
        "cy@x.org": {"email": "cy@x.org", "name": "Cy", "age": 29, "team": "dev"},
    }
    skipped = api.results(job["id"])[1]
    assert skipped["status"] == "skipped" and "'forty' is not an integer" in skipped["errors"][0]["detail"]

    # find_by id: update and delete name objects by their bulkjobs id.
    ada_id = api.get(f"/v1/objects?type={kind}&external_id=ada@x.org").body["items"][0]["id"]
    job = run_csv(api, f"id,team\n{ada_id},research\n{'0' * 32},nobody\n".encode(), operation="update",
                  object_type=kind, find_by="id")
    assert job["action"] == "update" and job["counts"] == counts(2, updated=1, failed=1)
    assert api.get(f"/v1/objects/{ada_id}").body["attributes"]["team"] == "research"


def test_a_file_mixing_good_and_bad_rows(api: Client) -> None:
    kind = unique("mixed")
    data = (b"external_id,name,note\n"
            b"ok-1,one,\n"
            b"short,row\n"                       # too few columns: skipped
            b',quoted,"has, a comma"\n'           # no key for upsert: skipped
            b'ok-2,"two\nlines","say ""hi"""\n'   # a quoted line break and quotes
            b"ok-1,dup,x,extra\n")                # too many columns: skipped
    job = run_csv(api, data, operation="upsert", object_type=kind)

    assert job["status"] == "partially_succeeded"
    assert job["counts"] == counts(5, created=2, skipped=3)
    assert job["file"]["rows"] == 5
    assert objects_of(api, kind) == {"ok-1": {"name": "one"}, "ok-2": {"name": "two\nlines", "note": 'say "hi"'}}

    everything_bad = run_csv(api, b"external_id,name\n,x\n,y\n", operation="update", object_type=kind)
    assert everything_bad["status"] == "failed" and everything_bad["error"]["code"] == "all_records_failed"
    assert everything_bad["counts"] == counts(2, skipped=2)


# --- encodings ------------------------------------------------------------------------------------

ENCODED_TEXT = "external_id,name\nc-1,Crème brûlée\nc-2,Smörgåsbord – “quoted”\n"


@pytest.mark.parametrize("data, detected", [
    pytest.param(ENCODED_TEXT.encode("utf-8"), "utf-8", id="utf-8"),
    pytest.param(ENCODED_TEXT.encode("utf-8-sig"), "utf-8-sig", id="utf-8-bom"),
    pytest.param(ENCODED_TEXT.encode("utf-16"), "utf-16", id="utf-16-bom"),
    pytest.param(ENCODED_TEXT.encode("cp1252"), "cp1252", id="windows-1252"),
    pytest.param("external_id,name\nc-1,Crème brûlée\n".encode("latin-1") + b"c-2,\x81\n", "iso8859-1",
                 id="latin-1"),
])
def test_each_encoding_is_detected_and_kept(api: Client, data: bytes, detected: str) -> None:
    kind = unique("enc")
    job = run_csv(api, data, operation="upsert", object_type=kind)

    assert job["file"]["character_encoding"] == detected
    assert job["status"] == "succeeded", api.results(job["id"])
    names = objects_of(api, kind)
    assert names["c-1"] == {"name": "Crème brûlée"}
    assert api.get(f"/v1/jobs/{job['id']}/file").body == data


def test_a_given_encoding_wins(api: Client) -> None:
    kind = unique("given")
    data = "external_id,name\nx,Ωmega\n".encode()
    job = run_csv(api, data, operation="upsert", object_type=kind, character_encoding="latin-1")
    assert job["file"]["character_encoding"] == "iso8859-1"
    assert objects_of(api, kind) == {"x": {"name": "Ωmega".encode().decode("latin-1")}}


# --- request errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data, settings, status, code, details", [
    pytest.param(b"", {"operation": "insert", "object_type": "t"}, 400, "empty_file", {}, id="empty-file"),
    pytest.param(b"external_id,name\n", {"operation": "insert", "object_type": "t"}, 400, "empty_file", {},
                 id="header-only"),
    pytest.param(b"PK\x03\x04\x00\x00binary", {"operation": "insert", "object_type": "t"}, 400, "not_csv", {},
                 id="not-csv"),
    pytest.param(b'a,b\n"open,quote\n', {"operation": "insert", "object_type": "t"}, 400, "not_csv", {},
                 id="unclosed-quote"),
    pytest.param(b"a,b\n1,2\n", {"operation": "insert", "object_type": "t",
                                  "field_mappings": [{"api_name": "Stage", "index": 132}]},
                 400, "file_index_not_found", {"api_name": "Stage", "index": 132}, id="mapping-index"),
    pytest.param(b"agentId,userName\n1,a\n", {"job_type": "sso_migration"}, 400, "header_mismatch",
                 {"missing": ["ssoUserName"], "unexpected": []}, id="header-mismatch"),
    pytest.param(b"a\n1\n", {"operation": "merge", "object_type": "t"}, 400, "unknown_operation",
                 {"field": "operation"}, id="unknown-operation"),
    pytest.param(b"a\n1\n", {"operation": "insert"}, 400, "bad_request", {"field": "object_type"},
                 id="no-object-type"),
    pytest.param(b"a\n1\n", {"object_type": "t"}, 400, "bad_request", {"field": "operation"}, id="no-operation"),
    pytest.param(b"a\n1\n", {"operation": "update", "object_type": "t"}, 400, "bad_request",
                 {"field": "find_by"}, id="no-key-column"),
    pytest.param(b"a\n1\n", {"operation": "insert", "object_type": "t", "job_type": "nope"}, 400,
                 "unknown_job_type", {"field": "job_type"}, id="unknown-job-type"),
    pytest.param(b"a\n1\n", {"operation": "insert", "object_type": "t", "character_encoding": "klingon"}, 400,
                 "unknown_encoding", {"field": "character_encoding"}, id="unknown-encoding"),
    pytest.param(b"a\n\xff\xfe\n", {"operation": "insert", "object_type": "t", "character_encoding": "utf-8"},
                 400, "invalid_encoding", {"field": "character_encoding"}, id="wrong-encoding"),
    pytest.param(b"a,a\n1,2\n", {"operation": "insert", "object_type": "t"}, 400, "invalid_header", {},
                 id="duplicate-column"),
    pytest.param(b"a\n1\n", {"operation": "upsert", "object_type": "t", "find_by": "id"}, 400, "bad_request",
                 {"field": "find_by"}, id="upsert-by-id"),
])
def test_bad_csv_requests_are_4xx_and_leave_nothing(api: Client, data: bytes, settings: dict[str, Any], status: int,
                                                    code: str, details: dict[str, Any]) -> None:
    before = api.get("/v1/jobs?limit=1").body["total"]
    resp = api.post_csv(data, **settings)
    assert resp.status == status, resp.body
    error = error_of(resp)
    assert error["code"] == code and error["message"]
    assert {key: error.get(key) for key in details} == details
    assert api.get("/v1/jobs?limit=1").body["total"] == before


def test_bad_field_mappings_json_is_400(api: Client) -> None:
    resp = api.post("/v1/jobs?operation=insert&object_type=t&field_mappings=%5Bnope", data=b"a\n1\n",
                    content_type="text/csv")
    assert resp.status == 400 and error_of(resp)["field"] == "field_mappings"


def test_a_multipart_job_without_a_file_is_400(api: Client) -> None:
    resp = api.post_multipart([("job", None, b'{"operation": "insert", "object_type": "t"}')])
    assert resp.status == 400 and error_of(resp)["field"] == "file"


def test_a_file_over_the_upload_limit_is_413(api: Client) -> None:
    resp = api.post_csv(b"external_id\n" + b"x\n" * (8 * 1024 * 1024), operation="insert", object_type="t")
    assert resp.status == 413
    assert error_of(resp)["code"] == "too_large" and error_of(resp)["limit"] == 8 * 1024 * 1024


def test_too_many_rows_is_413(api: Client) -> None:
    kind = unique("many")
    data = b"external_id\n" + b"".join(b"%d\n" % i for i in range(200_001))
    resp = api.post_csv(data, operation="insert", object_type=kind)
    assert resp.status == 413 and error_of(resp)["code"] == "too_many_records"
    assert objects_of(api, kind) == {}


# --- job types and templates ------------------------------------------------------------------------


def make_agents(api: Client, agents: list[dict[str, Any]]) -> None:
    rows = ["agentId,userName,peripheralId,agentTeamId,ssoEnabled"] + [
        f"{a['id']},{a['user']},{a['peripheral']},{a['team']},{str(a['sso']).lower()}" for a in agents]
    mappings = [{"api_name": "agentId", "index": 0}, {"api_name": "userName", "index": 1},
                {"api_name": "peripheralId", "index": 2, "type": "integer"},
                {"api_name": "agentTeamId", "index": 3, "type": "integer"},
                {"api_name": "ssoEnabled", "index": 4, "type": "boolean"}]
    job = run_csv(api, "\n".join(rows).encode(), operation="upsert", object_type="agent", find_by="agentId",
                  field_mappings=mappings)
    assert job["status"] == "succeeded", api.results(job["id"])


def test_job_types_are_listed_and_detected_from_the_header(api_b: Client) -> None:
    listed = api_b.get("/v1/job-types").body["items"]
    assert [t["name"] for t in listed] == ["objects", "sso_migration", "agent_service_association", "export"]
    sso = api_b.get("/v1/job-types/sso_migration").body
    assert sso["operation"] == "update" and sso["object_type"] == "agent"
    assert [c["name"] for c in sso["columns"] if c["required"]] == ["agentId", "ssoUserName"]
    assert api_b.get("/v1/job-types/nope").status == 404

    make_agents(api_b, [{"id": 1111, "user": "agent1", "peripheral": 5000, "team": 12, "sso": False},
                        {"id": 2222, "user": "agent2", "peripheral": 5000, "team": 7, "sso": False}])

    job = run_csv(api_b, b"agentId,userName,agentServices\n1111,agent1,AgentAnswers;Transcript\n2222,agent2,\n")
    assert job["job_type"] == "agent_service_association" and job["operation"] == "update"
    assert job["counts"] == counts(2, updated=2)
    job = run_csv(api_b, b"agentId,ssoUserName\n1111,agent1@sso.example\n3333,nobody@sso.example\n")
    assert job["job_type"] == "sso_migration"
    assert job["counts"] == counts(2, updated=1, failed=1)

    agents = objects_of(api_b, "agent")
    assert agents["1111"]["agentServices"] == ["AgentAnswers", "Transcript"]
    assert agents["1111"]["userName"] == "agent1@sso.example" and agents["1111"]["ssoEnabled"] is True
    assert agents["2222"]["agentServices"] == [] and agents["2222"]["userName"] == "agent2"


def test_templates_plain_and_prefilled_with_a_filter_and_pages(api: Client) -> None:
    plain = api.get("/v1/job-types/agent_service_association/template", key="key-c")
    assert plain.status == 401
    make_agents(api, [{"id": 10 + i, "user": f"u{i}", "peripheral": 5000 if i % 2 else 6000, "team": 12,
                       "sso": i == 1} for i in range(6)])

    resp = api.get("/v1/job-types/sso_migration/template?q=peripheralId:5000%20agentTeamId:12")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="sso_migration-template.csv"'
    rows = parse_csv(resp.body)
    assert rows[0] == ["agentId", "userName", "ssoUserName"]
    assert rows[1:] == [["13", "u3", ""], ["15", "u5", ""]]  # 11 is already on SSO; the others are on 6000

    first = api.get("/v1/job-types/sso_migration/template?q=agentTeamId:12&limit=2")
    assert first.headers["X-Total-Count"] == "5" and 'rel="next"' in first.headers["Link"]
    assert [r[0] for r in parse_csv(first.body)[1:]] == ["10", "12"]
    following = first.headers["Link"].split(">")[0].lstrip("<")
    second = api.get(following[following.index("/v1/"):])
    assert [r[0] for r in parse_csv(second.body)[1:]] == ["13", "14"]

    generic = parse_csv(api.get("/v1/job-types/objects/template?object_type=agent&q=agentId:14").body)
    assert generic == [["external_id", "agentId", "agentTeamId", "peripheralId", "ssoEnabled", "userName"],
                       ["14", "14", "12", "6000", "false", "u4"]]
    assert parse_csv(api.get("/v1/job-types/objects/template").body) == [["external_id"]]
    assert api.get("/v1/job-types/sso_migration/template?q=bogus").status == 400


# --- results, file and log --------------------------------------------------------------------------


def test_results_csv_round_trips_the_rows_with_status_id_and_error(api: Client) -> None:
    kind = unique("round")
    run_csv(api, b"external_id,name\nkeep,old\n", operation="insert", object_type=kind)
    data = ("external_id,name,note\r\n"
            "new,Nouveau,\"multi\nline\"\r\n"
            "keep,Kept,plain\r\n"
            "bad-row\r\n"
            ",no key,x\r\n").encode("cp1252")
    job = run_csv(api, data, operation="upsert", object_type=kind)
    results = api.results(job["id"])

    resp = api.get(f"/v1/jobs/{job['id']}/results.csv")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    rows = parse_csv(resp.body)
    assert rows[0] == ["_status", "_id", "_error", "external_id", "name", "note"]
    assert rows[1] == ["added", results[0]["id"], "", "new", "Nouveau", "multi\nline"]
    assert rows[2] == ["updated", results[1]["id"], "", "keep", "Kept", "plain"]
    assert rows[3][:2] == ["skipped", ""] and "1 columns" in rows[3][2] and rows[3][3:] == ["bad-row"]
    assert rows[4][:2] == ["skipped", ""] and "'external_id' is empty" in rows[4][2]
    assert rows[4][3:] == ["", "no key", "x"]
    assert len(rows) == 5

    assert api.get(f"/v1/jobs/{job['id']}/file").body == data
    json_job = api.run({"type": "resources", "action": "post", "data": [{"type": kind}]})
    assert api.get(f"/v1/jobs/{json_job['id']}/results.csv").status == 404
    assert api.get(f"/v1/jobs/{json_job['id']}/file").status == 404


def test_the_log_tells_the_story_of_the_job(api: Client) -> None:
    kind = unique("logged")
    job = run_csv(api, b"external_id,n\na,1\nb\na,2\n", operation="insert", object_type=kind,
                  description="nightly load", file_name="load.csv")
    resp = api.get(f"/v1/jobs/{job['id']}/log")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = resp.body.decode()
    lines = text.splitlines()
    assert f"accepted  job {job['id']}" in lines[0] and "file load.csv" in lines[0] and "3 rows" in lines[0]
    assert "description: nightly load" in lines[1]
    assert f"started   on host {job['host']}" in text
    assert " batch " in text and "records on host" in text
    assert "finished  partially_succeeded: 3 of 3 records processed: 1 added" in text
    assert "records skipped or failed (2):" in text
    assert "record 1 skipped: InvalidRecord: the row has 1 columns" in text
    assert "record 2 failed: UnprocessableEntity" in text


# --- job list search and sort ------------------------------------------------------------------------


def test_jobs_are_searched_by_description_and_sorted(api_b: Client) -> None:
    marker = uuid.uuid4().hex[:8]
    made = []
    for description in (f"{marker} beta", f"{marker} alpha", f"{marker} 100%_done"):
        resp = api_b.post_csv(b"external_id\nx\n", operation="upsert", object_type="sorted", description=description)
        assert resp.status == 202
        made.append(resp.body["id"])
    for job_id in made:
        api_b.wait_done(job_id)

    found = api_b.get(f"/v1/jobs?q={marker}&sort=description").body
    assert found["total"] == 3
    assert [j["description"] for j in found["items"]] == [f"{marker} 100%_done", f"{marker} alpha", f"{marker} beta"]
    desc = api_b.get(f"/v1/jobs?q={marker}&sort=description&order=desc").body["items"]
    assert [j["id"] for j in desc] == [made[0], made[1], made[2]]
    assert api_b.get("/v1/jobs?q=0%25_d").body["total"] == 1  # % and _ match only themselves
    newest = api_b.get(f"/v1/jobs?q={marker}").body["items"]
    assert [j["id"] for j in newest] == made[::-1]
    assert api_b.get("/v1/jobs?sort=nope").status == 400
    assert api_b.get("/v1/jobs?order=sideways").status == 400
