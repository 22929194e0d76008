"""Request errors (400, 401, 404, 409, 413, 415), tenant isolation, cancel and delete."""

from __future__ import annotations

import uuid

import pytest

from tests.support import Client, Stack, wait_for


def error_of(resp) -> dict:
    assert isinstance(resp.body, dict) and "error" in resp.body, resp.body
    error = resp.body["error"]
    assert error["code"] and error["message"]
    return error


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic key-a"}])
def test_missing_or_unknown_key_is_401(stack: Stack, headers: dict[str, str]) -> None:
    resp = stack.client(None).get("/v1/jobs", headers=headers)
    assert resp.status == 401
    error_of(resp)


def test_bearer_token_is_accepted_and_health_needs_no_key(stack: Stack) -> None:
    client = stack.client(None)
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer key-a"}).status == 200
    assert client.get("/v1/health").status == 200


@pytest.mark.parametrize("body, code", [
    (b'{"type": "resources", "action": "post", "data": [', "invalid_json"),
    (b'{"type": "resources", "action": "post", "data": [{"a": 1},, {"b": 2}]}', "invalid_json"),
    (b"", "bad_request"),
    (b'{"type": "things", "action": "post", "data": [{}]}', "unknown_type"),
    (b'{"type": "resources", "action": "explode", "data": [{}]}', "unknown_action"),
    (b'{"type": "relationships", "action": "external_id_set", "data": [{}]}', "action_not_allowed"),
    (b'{"action": "post", "data": [{}]}', "bad_request"),
    (b'{"type": "resources", "action": "post", "data": {"a": 1}}', "bad_request"),
    (b'{"type": "resources", "action": "post", "data": []}', "bad_request"),
    (b'{"type": "resources", "action": "post"}', "bad_request"),
    (b'"just a string"', "bad_request"),
])
def test_bad_job_requests_are_400(api: Client, body: bytes, code: str) -> None:
    before = api.get("/v1/jobs?limit=1").body["total"]
    resp = api.post("/v1/jobs", data=body, content_type="application/json")
    assert resp.status == 400, resp.body
    assert error_of(resp)["code"] == code
    assert api.get("/v1/jobs?limit=1").body["total"] == before


def test_unsupported_content_type_is_415(api: Client) -> None:
    resp = api.post("/v1/jobs", data=b"a,b\n1,2\n", content_type="application/xml")
    assert resp.status == 415
    error_of(resp)


def test_too_many_records_is_413_and_nothing_is_applied(api: Client) -> None:
    marker = uuid.uuid4().hex
    lines = b"\n".join(b'{"type":"limit-%s","external_id":"%d"}' % (marker.encode(), i) for i in range(200_001))
    resp = api.post("/v1/jobs?type=resources&action=external_id_set", data=lines, content_type="application/x-ndjson")
    assert resp.status == 413
    assert error_of(resp)["code"] == "too_many_records"
    assert api.get(f"/v1/objects?type=limit-{marker}").body["total"] == 0


def test_too_large_body_is_413(api: Client) -> None:
    resp = api.post("/v1/jobs?type=resources&action=post", data=b" " * (32 * 1024 * 1024 + 1),
                    content_type="application/x-ndjson")
    assert resp.status == 413
    assert error_of(resp)["code"] == "too_large"


@pytest.mark.parametrize("path", ["/v1/jobs/nope", "/v1/jobs/nope/results", "/v1/objects/nope",
                                  "/v1/relationships/nope", "/v1/nothing-here"])
def test_unknown_things_are_404(api: Client, path: str) -> None:
    resp = api.get(path)
    assert resp.status == 404
    error_of(resp)


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "status=bogus"])
def test_bad_paging_is_400(api: Client, query: str) -> None:
    assert api.get(f"/v1/jobs?{query}").status == 400


def test_tenants_see_only_their_own_jobs_results_and_objects(api: Client, api_b: Client) -> None:
    ext = f"shared-{uuid.uuid4().hex[:8]}"
    job = api.run({"type": "resources", "action": "external_id_set",
                   "data": [{"type": "secret", "external_id": ext, "attributes": {"owner": "a"}}]})
    object_id = api.results(job["id"])[0]["id"]

    assert api_b.get(f"/v1/jobs/{job['id']}").status == 404
    assert api_b.get(f"/v1/jobs/{job['id']}/results").status == 404
    assert api_b.post(f"/v1/jobs/{job['id']}/cancel").status == 404
    assert api_b.delete(f"/v1/jobs/{job['id']}").status == 404
    assert api_b.get(f"/v1/objects/{object_id}").status == 404
    assert job["id"] not in [j["id"] for j in api_b.get("/v1/jobs?limit=1000").body["items"]]
    assert api_b.get(f"/v1/objects?type=secret&external_id={ext}").body["total"] == 0

    # The same external id in tenant B is a different object; B cannot touch A's by id.
    job_b = api_b.run({"type": "resources", "action": "external_id_set",
                       "data": [{"type": "secret", "external_id": ext, "attributes": {"owner": "b"}}]})
    assert job_b["counts"]["created"] == 1
    job_b = api_b.run({"type": "resources", "action": "update",
                       "data": [{"id": object_id, "attributes": {"owner": "b"}}]})
    assert job_b["status"] == "failed"
    assert api.get(f"/v1/objects/{object_id}").body["attributes"] == {"owner": "a"}


def test_cancel_stops_a_running_job_and_delete_removes_it(api: Client) -> None:
    kind = f"cancel-{uuid.uuid4().hex[:8]}"
    data = [{"type": kind, "external_id": str(i), "attributes": {"i": i}} for i in range(150_000)]
    job = api.submit({"type": "resources", "action": "external_id_set", "data": data})

    running = api.delete(f"/v1/jobs/{job['id']}")
    assert running.status == 409
    assert error_of(running)["status"] in ("queued", "processing")
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status == 200
    done = api.job(job["id"])
    assert done["status"] == "cancelled"
    assert done["completed_at"]

    # Whatever was applied before the cancel is counted; nothing else ever lands.
    settled = wait_for(lambda: (j := api.job(job["id"]))["counts"]["processed"] ==
                       api.get(f"/v1/objects?type={kind}&limit=1").body["total"] and j, what="counts to settle")
    assert settled["counts"]["processed"] < 150_000
    assert settled["counts"]["created"] == settled["counts"]["processed"]
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status == 409

    assert api.delete(f"/v1/jobs/{job['id']}").status == 204
    assert api.get(f"/v1/jobs/{job['id']}").status == 404
    assert api.get(f"/v1/jobs/{job['id']}/results").status == 404
