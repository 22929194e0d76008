"""Relationship jobs end to end: post between existing objects, delete by id."""

from __future__ import annotations

import uuid

from tests.support import Client


def make_objects(api: Client, count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    job = api.run({"type": "resources", "action": "external_id_set",
                   "data": [{"type": "person", "external_id": f"{prefix}-{i}"} for i in range(count)]})
    return [r["id"] for r in api.results(job["id"])]


def test_post_and_delete_relationships(api: Client) -> None:
    a, b, c = make_objects(api, 3)
    job = api.run({"type": "relationships", "action": "post", "data": [
        {"relationship_type": "knows", "source": a, "target": b},
        {"relationship_type": "knows", "source": b, "target": c},
        {"relationship_type": "knows", "source": a, "target": "0" * 32},
        {"relationship_type": "knows", "source": a},
    ]})

    assert job["status"] == "partially_succeeded"
    assert job["counts"]["created"] == 2 and job["counts"]["failed"] == 2
    results = api.results(job["id"])
    assert "target object" in results[2]["errors"][0]["detail"]
    rel = api.get(f"/v1/relationships/{results[0]['id']}").body
    assert rel["relationship_type"] == "knows" and rel["source"] == a and rel["target"] == b
    assert api.get("/v1/relationships?relationship_type=knows&limit=1000").body["total"] >= 2

    job = api.run({"type": "relationships", "action": "delete", "data": [results[0]["id"], "0" * 32]})

    assert job["counts"]["deleted"] == 1 and job["counts"]["failed"] == 1
    assert api.get(f"/v1/relationships/{results[0]['id']}").status == 404
    assert api.get(f"/v1/relationships/{results[1]['id']}").status == 200
