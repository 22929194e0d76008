"""The API's metrics, served at ``GET /metrics``: requests by route pattern and status with their
latency, the body bytes read, and the jobs accepted with their records, by the form they came in."""

from __future__ import annotations

from enum import StrEnum

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from bulkjobs.metrics import new_registry

REGISTRY = new_registry()


class Form(StrEnum):
    """How a job came in: the label of the job and record counts."""

    JSON = "json"  # an envelope or a bare array
    NDJSON = "ndjson"
    CSV = "csv"  # a text/csv body
    MULTIPART = "multipart"
    FILE_CONTENT = "file_content"  # a CSV file in an envelope
    EXPORT = "export"
    RETRY = "retry"  # the failed records of a finished job (POST /v1/jobs/{id}/retry)


UNMATCHED = "unmatched"  # the route of a request no route matches (404, 405)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Uploads of large jobs take minutes: the buckets reach past the default 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("bulkjobs_api_requests", "HTTP requests answered, by method, route pattern and status",
                   ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("bulkjobs_api_request_seconds", "Seconds from a request's arrival to its answer (for a "
                    "websocket: until it closed), by method and route pattern", ["method", "route"],
                    buckets=LATENCY_BUCKETS, registry=REGISTRY)
RECEIVED_BYTES = Counter("bulkjobs_api_received_bytes", "Request body bytes read, as sent (before inflating), "
                         "by route pattern", ["route"], registry=REGISTRY)
JOBS = Counter("bulkjobs_api_jobs_submitted", "Jobs accepted (202), by the form they came in", ["form"],
               registry=REGISTRY)
RECORDS = Counter("bulkjobs_api_records_received", "Records of the jobs accepted (202), by the form they came in",
                  ["form"], registry=REGISTRY)
for _form in Form:  # every form shows from the start, at 0
    JOBS.labels(_form)
    RECORDS.labels(_form)


def route_of(request: web.Request) -> str:
    """The pattern of the route that matched (``/v1/jobs/{job_id}``), never the path itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def request_answered(request: web.Request, status: int, seconds: float) -> None:
    route = route_of(request)
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)
    if request.content.total_bytes:
        RECEIVED_BYTES.labels(route).inc(request.content.total_bytes)


def job_accepted(form: Form, records: int) -> None:
    JOBS.labels(form).inc()
    RECORDS.labels(form).inc(records)


async def serve_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the API process's metrics in Prometheus' text format (no API key)."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
