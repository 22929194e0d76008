"""A property-based fuzz of the live API from its OpenAPI document (schemathesis): for every
documented operation, requests generated from the document, valid and invalid, never answer a
5xx; every answer's status, content type, headers and body are as documented; every 4xx is in
the error shape; invalid requests are refused and valid ones accepted. Bounded and repeatable:
a few dozen examples per operation, derandomized (the same requests on every run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bulkjobs.api.app import OPENAPI_PATH
from tests.support import Stack

HEADERS = {"x-api-key": "key-a"}
# The HTTP server refuses a request line longer than this (a plain-text 400) before the API sees it:
# a query string of a few thousand characters, each of them percent-encoded, gets there.
MAX_REQUEST_LINE = 8190
EXAMPLES = 25  # per operation, and sequences of calls: about 40 s for the whole file with its stack

# Sent as the text the document's string schema generates (schemathesis knows text/csv and JSON).
schemathesis.serializer.alias(["application/x-ndjson", "application/ndjson", "application/jsonl",
                               "application/x-jsonlines", "application/csv", "text/comma-separated-values"],
                              "text/plain")
# The sequences of calls follow the document's links alone (none inferred from names), with valid
# requests: the single calls already send invalid ones.
CONFIG = schemathesis.Config.from_dict({"phases": {"stateful": {"inference": {"algorithms": []},
                                                               "generation": {"mode": "positive"}}}})
# The websockets (GET /v1/live, /v1/jobs/{id}/live) answer only an upgrade: test_live covers them.
schema = schemathesis.openapi.from_path(OPENAPI_PATH, config=CONFIG).exclude(path_regex=r"/live$")

def error_shape(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is ``{"error": {"code", "message", ...}}`` with a snake_case code."""
    if 400 <= response.status_code < 500:
        body: Any = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"a {response.status_code} without the error shape: {response.text[:200]}"
        assert isinstance(error.get("code"), str) and error["code"].replace("_", "").isalnum(), error
        assert isinstance(error.get("message"), str), error


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, error_shape, negative_data_rejection, positive_data_acceptance, ignored_auth]


# A body these accept by its schema may still be refused for what no schema says: a CSV with a
# header only, records of a type and an action that do not go together, a schedule for a job that
# is not a definition, params for one that is not an export.
JUDGED_BY_MEANING = {"POST /v1/jobs", "PUT /v1/jobs/{job_id}"}


def checks(case: schemathesis.Case) -> list[Callable[..., Any]]:
    """The checks for ``case``: all of them, but that the operations in JUDGED_BY_MEANING may
    refuse a valid body, and that POST /v1/jobs reads its query parameters only for the body
    forms that carry the job's fields there (a bare array, NDJSON, text/csv): with another form
    a wrong one goes unread, so an invalid query is no reason to refuse that job."""
    label = case.operation.label
    query = case.meta.components.get(ParameterLocation.QUERY) if case.meta else None
    unread = label == "POST /v1/jobs" and query is not None and not query.mode.is_positive
    # A cursor is valid only as a Link header gave it, and never beside an offset: a made-up one is
    # rightly refused, whatever its schema allows.
    made_up_cursor = "cursor" in (case.query or {})
    skipped = ({positive_data_acceptance} if label in JUDGED_BY_MEANING or made_up_cursor else set()) | (
        {negative_data_rejection} if unread else set())
    return [check for check in CHECKS if check not in skipped]


@pytest.fixture(scope="module")
def fuzzed(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    """A stack of its own: the fuzz creates and deletes jobs at random."""
    stack = make_stack().start_all()
    yield stack
    stack.stop()


@pytest.mark.serial
@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_openapi_document_says(case: schemathesis.Case, fuzzed: Stack) -> None:
    response = case.call(base_url=fuzzed.base, headers=HEADERS, timeout=30)
    if len(response.request.url or "") > MAX_REQUEST_LINE:
        assert response.status_code == 400, response.text
        return
    case.validate_response(response, checks=checks(case), headers=HEADERS, transport_kwargs={"timeout": 30})


def test_calls_on_the_jobs_it_submits_answer_as_the_document_says(fuzzed: Stack) -> None:
    """Sequences of calls that follow the document's links: a job submitted, then read, changed,
    suspended, resumed, cancelled or deleted by its id (so the 200s and 409s of those, which
    random ids never reach)."""

    class Calls(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": fuzzed.base, "headers": HEADERS, "timeout": 30}

        def validate_response(self, response: schemathesis.Response, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=checks(case), headers=HEADERS, transport_kwargs=kwargs)

    Calls.run(settings=settings(max_examples=EXAMPLES, stateful_step_count=5, derandomize=True, deadline=None,
                                database=None, suppress_health_check=list(HealthCheck)))
