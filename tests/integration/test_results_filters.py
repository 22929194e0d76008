"""A job's results filtered by outcome (``/results?outcome=``) and streamed as JSON lines
(``/results.ndjson``), end to end on the shared stack."""

from __future__ import annotations

import gzip
import json
import re
import urllib.parse
import uuid
from typing import Any

import pytest

from tests.support import Client

OUTCOMES = ("created", "updated", "deleted", "skipped", "failed")
MIXED = 12_001  # records: more than two of the NDJSON stream's pages of 5,000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def mixed(stack: Any) -> dict[str, Any]:
    """A finished JSON job whose records were created, updated or failed, mixed, and its results."""
    api = stack.client()
    kind = unique("mixed")
    api.run({"type": "resources", "action": "external_id_set",
             "data": [{"type": kind, "external_id": f"{kind}-{n}"} for n in range(MIXED) if n % 5 == 1]})
    data = [42 if n % 5 == 0 else {"type": kind, "external_id": f"{kind}-{n}", "attributes": {"n": n}}
            for n in range(MIXED)]
    job = api.run({"type": "resources", "action": "external_id_set", "data": data}, timeout=120)
    assert job["counts"]["failed"] and job["counts"]["updated"] and job["counts"]["created"], job["counts"]
    return {"job": job, "results": api.results(job["id"])}


def next_link(headers: dict[str, str]) -> str | None:
    found = re.search(r'<([^>]+)>; rel="next"', headers.get("Link", ""))
    return found.group(1) if found else None


def follow(api: Client, path: str) -> tuple[list[dict[str, Any]], set[int]]:
    """Every item of a list, following its next links; and the totals its pages gave."""
    items, totals, url = [], set(), path
    while url is not None:
        resp = api.get(url)
        assert resp.status == 200, resp.body
        items += resp.body["items"]
        totals.add(resp.body["total"])
        url = next_link(resp.headers)
    return items, totals


@pytest.mark.parametrize("outcome", ["created", "updated", "failed"])
def test_results_of_one_outcome_page_through_in_record_order(api: Client, mixed: dict[str, Any],
                                                             outcome: str) -> None:
    job = mixed["job"]
    items, totals = follow(api, f"/v1/jobs/{job['id']}/results?outcome={outcome}&limit=1000")
    assert items == [result for result in mixed["results"] if result["status"] == outcome]
    assert totals == {job["counts"][outcome]}


def test_an_outcome_filter_starts_at_the_record_index_given(api: Client, mixed: dict[str, Any]) -> None:
    job = mixed["job"]
    resp = api.get(f"/v1/jobs/{job['id']}/results?outcome=failed&offset=5001&limit=3")
    assert [item["index"] for item in resp.body["items"]] == [5005, 5010, 5015]
    assert api.get(f"/v1/jobs/{job['id']}/results?outcome=deleted").body == {"items": [], "total": 0}


@pytest.mark.parametrize("path", ["results", "results.ndjson"])
@pytest.mark.parametrize("value", ["", "Failed", "success", "failed,created"])
def test_an_unknown_outcome_is_a_400_naming_the_outcomes(api: Client, mixed: dict[str, Any], path: str,
                                                         value: str) -> None:
    resp = api.get(f"/v1/jobs/{mixed['job']['id']}/{path}?" + urllib.parse.urlencode({"outcome": value}))
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "unknown_outcome"
    assert resp.body["error"]["allowed"] == list(OUTCOMES)
    assert all(outcome in resp.body["error"]["message"] for outcome in OUTCOMES)


def ndjson(api: Client, path: str, **headers: str) -> list[dict[str, Any]]:
    resp = api.get(path, headers=headers)
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    body = gzip.decompress(resp.body) if resp.headers.get("Content-Encoding") == "gzip" else resp.body
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.splitlines()]


def test_ndjson_streams_every_result_of_a_json_job(api: Client, mixed: dict[str, Any]) -> None:
    assert ndjson(api, f"/v1/jobs/{mixed['job']['id']}/results.ndjson") == mixed["results"]


def test_ndjson_is_gzipped_for_a_client_that_accepts_it(api: Client, mixed: dict[str, Any]) -> None:
    resp = api.get(f"/v1/jobs/{mixed['job']['id']}/results.ndjson", headers={"Accept-Encoding": "gzip"})
    assert resp.headers.get("Content-Encoding") == "gzip"
    assert [json.loads(line) for line in gzip.decompress(resp.body).splitlines()] == mixed["results"]


@pytest.mark.parametrize("outcome", ["updated", "failed"])
def test_ndjson_of_one_outcome(api: Client, mixed: dict[str, Any], outcome: str) -> None:
    streamed = ndjson(api, f"/v1/jobs/{mixed['job']['id']}/results.ndjson?outcome={outcome}")
    assert streamed == [result for result in mixed["results"] if result["status"] == outcome]


def run_csv(api: Client, data: bytes, **settings: Any) -> dict[str, Any]:
    resp = api.post_csv(data, **settings)
    assert resp.status == 202, resp.body
    return api.wait_done(resp.body["id"])


def test_ndjson_and_filters_of_csv_jobs_skipped_and_deleted(api: Client) -> None:
    kind = unique("csv")
    upsert = run_csv(api, b"external_id,name\na,1\nshort\nb,2\n", operation="upsert", object_type=kind)
    assert [item["status"] for item in ndjson(api, f"/v1/jobs/{upsert['id']}/results.ndjson")] == [
        "created", "skipped", "created"]
    skipped = api.get(f"/v1/jobs/{upsert['id']}/results?outcome=skipped").body
    assert [item["index"] for item in skipped["items"]] == [1] and skipped["total"] == 1

    deletion = run_csv(api, b"external_id\na\nnope\nb\n", operation="delete", object_type=kind)
    deleted = ndjson(api, f"/v1/jobs/{deletion['id']}/results.ndjson?outcome=deleted")
    assert [item["index"] for item in deleted] == [0, 2]
    assert api.get(f"/v1/jobs/{deletion['id']}/results?outcome=deleted").body == {"items": deleted, "total": 2}


def test_ndjson_of_a_job_not_found_is_a_404(api: Client, api_b: Client, mixed: dict[str, Any]) -> None:
    assert api.get(f"/v1/jobs/{uuid.uuid4().hex}/results.ndjson").status == 404
    assert api_b.get(f"/v1/jobs/{mixed['job']['id']}/results.ndjson").status == 404  # another tenant's
