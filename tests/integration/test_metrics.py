"""Prometheus metrics end to end: each process serves its own without an API key, and its counters
move by a job's record count."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulkjobs.broker import free_port
from tests.support import Stack, wait_for

RECORDS = 2500  # a few batches on each of several partitions


@dataclass
class Scrape:
    text: str

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(sample.value for family in text_string_to_metric_families(self.text) for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    def labels(self, name: str) -> list[dict[str, str]]:
        return [sample.labels for family in text_string_to_metric_families(self.text) for sample in family.samples
                if sample.name == name]


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as resp:  # no API key
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(resp.read().decode())


@pytest.fixture(scope="module")
def metered(make_stack: Callable[..., Stack]) -> Stack:
    stack = make_stack()
    stack.metrics_ports = {"worker": free_port(), "store": free_port()}
    return stack.start_all()


def test_every_process_serves_metrics_that_move_by_a_jobs_records(metered: Stack) -> None:
    api = metered.client()
    before = {name: scrape(metered.metrics_url(name)) for name in ("api", "worker", "store")}
    data = [{"type": "machine", "external_id": f"m{i}", "attributes": {"rpm": i}} for i in range(RECORDS)]
    job = api.run({"type": "resources", "action": "external_id_set", "data": data})
    assert job["status"] == "succeeded", job

    def moved(name: str, metric: str, **labels: str) -> float:
        return scrape(metered.metrics_url(name)).value(metric, **labels) - before[name].value(metric, **labels)

    assert moved("api", "bulkjobs_api_records_received_total") == RECORDS
    assert moved("api", "bulkjobs_api_jobs_submitted_total", form="json") == 1
    assert moved("api", "bulkjobs_api_requests_total", method="POST", route="/v1/jobs", status="202") == 1
    assert moved("api", "bulkjobs_api_request_seconds_count", method="GET", route="/v1/jobs/{job_id}") >= 1
    assert moved("api", "bulkjobs_api_received_bytes_total", route="/v1/jobs") > RECORDS * 40
    wait_for(lambda: moved("worker", "bulkjobs_worker_records_applied_total") == RECORDS,
             what="the worker to count the job's records", timeout=10)
    assert moved("worker", "bulkjobs_worker_records_applied_total", outcome="created") == RECORDS
    applied = moved("worker", "bulkjobs_worker_batches_total", outcome="applied")
    assert applied >= 3
    assert moved("worker", "bulkjobs_worker_batch_apply_seconds_count") == applied
    wait_for(lambda: moved("store", "bulkjobs_store_rows_written_total", table="job_batches") == applied,
             what="the store to count the job's applied batches (their results in them)", timeout=10)

    wait_for(lambda: scrape(metered.metrics_url("worker")).value("bulkjobs_worker_live_ids", kind="object") >= RECORDS,
             what="the worker's gauges to count the new objects (they are updated every second)", timeout=10)
    worker, store, answers = (scrape(metered.metrics_url(name)) for name in ("worker", "store", "api"))
    assert {labels["topic"] for labels in worker.labels("bulkjobs_worker_consumer_lag")} == {
        f"{metered.prefix}-batches", f"{metered.prefix}-job-events"}
    assert store.value("bulkjobs_view_rows", table="job_batches") >= applied
    assert store.value("bulkjobs_view_jobs", status="succeeded") >= 1
    assert store.value("bulkjobs_store_transaction_seconds_count") >= 1
    assert store.labels("bulkjobs_store_consumer_lag")
    wait_for(lambda: scrape(metered.metrics_url("store")).value("bulkjobs_store_consumer_lag") == 0,
             what="the store to catch up", timeout=10)
    assert job["id"] not in answers.text  # routes are labelled by their pattern, never a job's id
    assert "tenant-a" not in answers.text + worker.text + store.text
