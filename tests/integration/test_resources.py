"""Resource jobs end to end over HTTP: every action, with statuses, counts, results and objects."""

from __future__ import annotations

import uuid

from tests.support import Client


def product(external_id: str, **attributes: object) -> dict[str, object]:
    return {"type": "product", "external_id": external_id, "attributes": attributes}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_post_creates_objects_and_refuses_a_used_external_id(api: Client) -> None:
    ext = unique("gum")
    job = api.run({"type": "resources", "action": "post", "description": "first import",
                   "data": [product(ext, name="Strawberry"), product(ext, name="again"),
                            {"type": "product", "attributes": {"name": "no external id"}}]})

    assert job["status"] == "partially_succeeded"
    assert job["description"] == "first import"
    assert job["counts"] == {"total": 3, "processed": 3, "created": 2, "updated": 0, "deleted": 0, "skipped": 0,
                             "failed": 1}
    assert job["progress"] == 100
    assert job["created_at"] and job["started_at"] and job["completed_at"]
    results = api.results(job["id"])
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["success"] and results[2]["success"]
    assert not results[1]["success"] and results[1]["id"] is None
    error = results[1]["errors"][0]
    assert error["code"] == "UnprocessableEntity" and error["status"] == "422" and ext in error["detail"]

    created = api.get(f"/v1/objects/{results[0]['id']}").body
    assert created["type"] == "product" and created["external_id"] == ext
    assert created["attributes"] == {"name": "Strawberry"}
    assert created["created_at"] and created["updated_at"]
    listed = api.get(f"/v1/objects?type=product&external_id={ext}").body
    assert listed["total"] == 1 and listed["items"][0]["id"] == results[0]["id"]
    assert api.get(f"/v1/objects/{results[2]['id']}").body["external_id"] is None

    again = api.run({"type": "resources", "action": "post", "data": [product(ext, name="third")]})
    assert again["status"] == "failed"
    assert again["error"]["code"] == "all_records_failed"


def test_update_merges_attributes_and_fails_unknown_ids(api: Client) -> None:
    ext = unique("coffee")
    made = api.run({"type": "resources", "action": "post", "data": [product(ext, name="Coffee", price=3)]})
    object_id = api.results(made["id"])[0]["id"]

    job = api.run({"type": "resources", "action": "update", "data": [
        {"id": object_id, "attributes": {"name": "Coffee (decaf)"}},
        {"id": "0" * 32, "attributes": {"name": "ghost"}},
    ]})

    assert job["status"] == "partially_succeeded"
    assert job["counts"]["updated"] == 1 and job["counts"]["failed"] == 1
    results = api.results(job["id"])
    assert results[0] == {"index": 0, "success": True, "status": "updated", "id": object_id, "errors": [],
                          "source_index": None}
    assert results[1]["errors"][0]["code"] == "NotFound"
    assert api.get(f"/v1/objects/{object_id}").body["attributes"] == {"name": "Coffee (decaf)", "price": 3}


def test_delete_by_id_removes_objects(api: Client) -> None:
    made = api.run({"type": "resources", "action": "post",
                    "data": [product(unique("d")), product(unique("d"))]})
    ids = [r["id"] for r in api.results(made["id"])]

    job = api.run({"type": "resources", "action": "delete", "data": [ids[0], {"id": ids[1]}, "f" * 32]})

    assert job["counts"] == {"total": 3, "processed": 3, "created": 0, "updated": 0, "deleted": 2, "skipped": 0,
                             "failed": 1}
    assert all(api.get(f"/v1/objects/{i}").status == 404 for i in ids)


def test_external_id_set_creates_then_patches(api: Client) -> None:
    first, second = unique("set"), unique("set")
    job = api.run({"type": "resources", "action": "external_id_set",
                   "data": [product(first, name="A", color="red"), product(second, name="B")]})
    assert job["status"] == "succeeded"
    assert job["counts"]["created"] == 2 and job["counts"]["updated"] == 0

    job = api.run({"type": "resources", "action": "external_id_set", "data": [product(first, name="A2")]})

    assert job["counts"]["created"] == 0 and job["counts"]["updated"] == 1
    found = api.get(f"/v1/objects?type=product&external_id={first}").body["items"]
    assert len(found) == 1 and found[0]["attributes"] == {"name": "A2", "color": "red"}


def test_external_id_delete(api: Client) -> None:
    ext = unique("gone")
    api.run({"type": "resources", "action": "external_id_set", "data": [product(ext)]})

    job = api.run({"type": "resources", "action": "external_id_delete", "data": [
        {"type": "product", "external_id": ext}, {"type": "product", "external_id": unique("never")},
    ]})

    assert job["counts"]["deleted"] == 1 and job["counts"]["failed"] == 1
    assert api.get(f"/v1/objects?type=product&external_id={ext}").body["total"] == 0


def test_bad_records_fail_alone(api: Client) -> None:
    job = api.run({"type": "resources", "action": "external_id_set", "data": [
        product(unique("ok")), 42, {"external_id": "no-type"},
        {"type": "product", "external_id": "x", "attributes": []},
        "just a string", product(unique("ok")),
    ]})

    assert job["status"] == "partially_succeeded"
    assert job["counts"]["created"] == 2 and job["counts"]["failed"] == 4
    results = api.results(job["id"])
    assert [r["success"] for r in results] == [True, False, False, False, False, True]
    assert all(r["errors"][0]["status"] == "400" for r in results if not r["success"])


def test_ndjson_and_bare_array_bodies(api: Client) -> None:
    exts = [unique("nd") for _ in range(3)]
    lines = b"\n".join([*(f'{{"type":"product","external_id":"{e}"}}'.encode() for e in exts), b"{not json"])
    resp = api.post("/v1/jobs?type=resources&action=external_id_set", data=lines, content_type="application/x-ndjson")
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    assert job["counts"]["created"] == 3 and job["counts"]["failed"] == 1
    assert "not valid JSON" in api.results(job["id"])[3]["errors"][0]["detail"]

    resp = api.post("/v1/jobs?type=resources&action=external_id_delete&description=bare",
                    json_body=[{"type": "product", "external_id": e} for e in exts])
    assert resp.status == 202, resp.body
    job = api.wait_done(resp.body["id"])
    assert job["description"] == "bare" and job["counts"]["deleted"] == 3


def test_envelope_with_data_before_type_and_action(api: Client) -> None:
    body = b'{"data": [{"type": "product", "external_id": "%s"}], "action": "external_id_set", "type": "resources"}'
    resp = api.post("/v1/jobs", data=body % unique("late").encode(), content_type="application/json")
    assert resp.status == 202, resp.body
    assert api.wait_done(resp.body["id"])["counts"]["created"] == 1


def test_job_list_filters_and_results_paging(api: Client) -> None:
    job = api.run({"type": "resources", "action": "external_id_set",
                   "data": [product(unique("page")) for _ in range(25)]})

    page = api.get(f"/v1/jobs/{job['id']}/results?offset=10&limit=5").body["items"]
    assert [r["index"] for r in page] == [10, 11, 12, 13, 14]
    listed = api.get("/v1/jobs?status=succeeded&limit=1000").body
    assert job["id"] in [j["id"] for j in listed["items"]]
    assert all(j["status"] == "succeeded" for j in listed["items"])
    assert listed["total"] >= 1
    newest = api.get("/v1/jobs?limit=2").body["items"]
    assert newest[0]["created_at"] >= newest[1]["created_at"]


def test_many_records_across_partitions(api: Client) -> None:
    prefix = unique("bulk")
    data = [product(f"{prefix}-{i}", n=i) for i in range(20_000)]
    job = api.run({"type": "resources", "action": "external_id_set", "data": data})

    assert job["status"] == "succeeded"
    assert job["counts"]["created"] == 20_000
    results = api.results(job["id"])
    assert [r["index"] for r in results] == list(range(20_000))
    assert len({r["id"] for r in results}) == 20_000
