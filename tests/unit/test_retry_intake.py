"""``POST /v1/jobs/{id}/retry`` without a broker: a view written as the store writes it, and the
fake publisher of the intake tests, which keeps the job and batches the retry publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import PARTIALLY_SUCCEEDED, QUEUED, Job
from bulkjobs.kafka.topics import encode, status_of
from bulkjobs.store.schema import connect
from bulkjobs.store.writer import ViewWriter
from tests.unit.test_intake import KEY, FakePublisher, client, publisher, settings  # noqa: F401 (fixtures)

ERROR = [{"code": "NotFound", "status": "404", "title": "Not Found", "detail": "gone"}]
REFUSED = [{"code": "InvalidRecord", "status": "400", "title": "Invalid Record", "detail": "not JSON"}]


def finished(job_id: str, total: int, status: str = PARTIALLY_SUCCEEDED) -> dict[str, Any]:
    job = Job(id=job_id, tenant="tenant-a", type="resources", action="update", description="d", total=total,
              batches=1, status=status, counts=Counts(processed=total), created_at="2026-01-01T00:00:00Z",
              updated_at="2026-01-01T00:00:00Z")
    return status_of(job)


def applied(job_id: str, results: list[list[Any]]) -> dict[str, Any]:
    return {"job_id": job_id, "tenant": "tenant-a", "seq": 0, "at": "2026-01-01T00:00:00Z",
            "counts": {"processed": len(results)}, "results": results, "ops": []}


async def in_view(tmp_path: Path, statuses: list[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
    db = await connect(tmp_path / "view.db")
    try:
        await ViewWriter(db).write(map(encode, batches), statuses, [])
    finally:
        await db.close()


JOB = "a" * 32
RESULTS = [
    [0, True, "x" * 32, None, "updated"],
    [1, False, None, ERROR, "failed", {"id": "1" * 32, "attributes": {"n": 1}}],
    [2, False, None, REFUSED, "failed"],  # refused on arrival: no body to send again
    [3, True, "y" * 32, None, "updated"],
    [4, False, None, ERROR, "failed", "4" * 32],
]


async def test_a_json_retry_publishes_the_kept_failed_records_with_their_source_indexes(
        tmp_path: Path, client: TestClient, publisher: FakePublisher) -> None:  # noqa: F811
    await in_view(tmp_path, [finished(JOB, 5)], [applied(JOB, RESULTS)])

    resp = await client.post(f"/v1/jobs/{JOB}/retry", headers=KEY)

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert (body["retry_of"], body["type"], body["action"], body["description"]) == (JOB, "resources", "update", "d")
    [(submitted, batches)] = publisher.jobs
    assert (submitted.job_id, submitted.retry_of, submitted.total) == (body["id"], JOB, 2)
    items = sorted((item[0], item[2], source) for batch in batches or [] for item, source in
                   zip(batch.items, batch.sources or [], strict=True))
    assert items == [(0, RESULTS[1][5], 1), (1, RESULTS[4][5], 4)]


async def test_a_job_whose_failed_records_have_no_body_has_nothing_to_retry(
        tmp_path: Path, client: TestClient, publisher: FakePublisher) -> None:  # noqa: F811
    await in_view(tmp_path, [finished(JOB, 1)], [applied(JOB, [RESULTS[2]])])

    resp = await client.post(f"/v1/jobs/{JOB}/retry?include=skipped", headers=KEY)

    assert resp.status == 409 and (await resp.json())["error"]["code"] == "nothing_to_retry"
    assert publisher.jobs == []


@pytest.mark.parametrize("settings", [{"max_active_jobs": 1}], indirect=True)
async def test_a_retry_counts_against_the_tenants_cap_of_active_jobs(
        tmp_path: Path, client: TestClient, publisher: FakePublisher) -> None:  # noqa: F811
    await in_view(tmp_path, [finished(JOB, 5), finished("b" * 32, 1, QUEUED)], [applied(JOB, RESULTS)])

    resp = await client.post(f"/v1/jobs/{JOB}/retry", headers=KEY)

    assert resp.status == 429 and (await resp.json())["error"]["code"] == "too_many_active_jobs"
    assert publisher.jobs == []
