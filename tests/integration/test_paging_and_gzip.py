"""Paged lists and compression against a real broker: the Link headers walked to the end of the
job, result and object lists see every item once, with the totals; gzip bodies go in (JSON,
NDJSON, CSV) and come out (lists, results, results.csv, the log) the same as plain ones, and a
client that does not ask for gzip gets none."""

from __future__ import annotations

import gzip
import json
import re
import urllib.request
import uuid
from typing import Any

from tests.support import Client

NEXT = re.compile(r'<([^>]+)>; rel="next"')


def walk(api: Client, path: str) -> list[dict[str, Any]]:
    """Every item of a list, following its next links from ``path``."""
    items: list[dict[str, Any]] = []
    url: str | None = path
    totals = set()
    while url is not None:
        resp = api.get(url)
        assert resp.status == 200, resp.body
        assert resp.headers["X-Total-Count"] == str(resp.body["total"])
        totals.add(resp.body["total"])
        items.extend(resp.body["items"])
        found = NEXT.search(resp.headers.get("Link", ""))
        url = found.group(1) if found else None
    assert len(totals) == 1
    return items


def fetch(api: Client, path: str, accept: str | None) -> tuple[bytes, dict[str, str]]:
    """The raw body (not inflated) and headers of a GET, with ``Accept-Encoding: accept``."""
    headers = {"x-api-key": api.key or "", **({"Accept-Encoding": accept} if accept else {})}
    with urllib.request.urlopen(urllib.request.Request(api.base + path, headers=headers), timeout=60) as resp:
        return resp.read(), dict(resp.headers)


def test_walking_the_links_sees_every_job_result_and_object_once(api: Client) -> None:
    kind = f"walk{uuid.uuid4().hex[:8]}"
    jobs = [api.submit({"type": "resources", "action": "post", "description": kind,
                        "data": [{"type": kind, "external_id": f"{kind}-{j}-{i}"} for i in range(90)]})
            for j in range(3)]
    ids = {job["id"] for job in jobs}
    for job in jobs:
        api.wait_done(job["id"])

    listed = walk(api, f"/v1/jobs?q={kind}&limit=2")
    assert len(listed) == 3 and {job["id"] for job in listed} == ids
    results = walk(api, f"/v1/jobs/{jobs[0]['id']}/results?limit=25")
    assert [result["index"] for result in results] == list(range(90))
    objects = walk(api, f"/v1/objects?type={kind}&limit=40")
    assert len(objects) == 270 and len({o["id"] for o in objects}) == 270
    assert sorted(o["external_id"] for o in objects) == sorted(f"{kind}-{j}-{i}" for j in range(3) for i in range(90))
    deep = api.get(f"/v1/objects?type={kind}&limit=40&offset=240")
    assert [o["id"] for o in deep.body["items"]] == [o["id"] for o in objects[240:]]
    assert 'rel="prev"' in deep.headers["Link"] and 'rel="next"' not in deep.headers["Link"]


def test_gzip_in_and_out_gives_the_same_bodies(api: Client) -> None:
    kind = f"gz{uuid.uuid4().hex[:8]}"
    records = [{"type": kind, "external_id": f"{kind}-{i}", "attributes": {"n": i}} for i in range(300)]
    sent = [
        (json.dumps({"type": "resources", "action": "post", "data": records[:100]}).encode(), "application/json", ""),
        ("\n".join(json.dumps(r) for r in records[100:200]).encode(), "application/x-ndjson",
         "?type=resources&action=post"),
    ]
    job_ids = []
    for body, content_type, query in sent:
        resp = api.post("/v1/jobs" + query, data=gzip.compress(body), content_type=content_type,
                        headers={"Content-Encoding": "gzip"})
        assert resp.status == 202, resp.body
        job_ids.append(resp.body["id"])
    csv = "external_id,n\n" + "".join(f"{kind}-{i},{i}\n" for i in range(200, 300))
    resp = api.post(f"/v1/jobs?operation=insert&object_type={kind}", data=gzip.compress(csv.encode()),
                    content_type="text/csv", headers={"Content-Encoding": "gzip"})
    assert resp.status == 202, resp.body
    job_ids.append(resp.body["id"])
    for job_id in job_ids:
        assert api.wait_done(job_id)["counts"]["created"] == 100

    for path in (f"/v1/objects?type={kind}&limit=300", f"/v1/jobs/{job_ids[0]}/results",
                 f"/v1/jobs/{job_ids[2]}/results.csv", f"/v1/jobs/{job_ids[2]}/log", "/v1/jobs?limit=50"):
        plain, plain_headers = fetch(api, path, None)
        assert "Content-Encoding" not in plain_headers, path
        squeezed, headers = fetch(api, path, "gzip, deflate")
        assert headers.get("Content-Encoding") == "gzip", path
        assert gzip.decompress(squeezed) == plain, path
    listed = json.loads(fetch(api, f"/v1/objects?type={kind}&limit=300", None)[0])
    assert listed["total"] == 300  # the CSV's values are text
    assert sorted(int(o["attributes"]["n"]) for o in listed["items"]) == list(range(300))
