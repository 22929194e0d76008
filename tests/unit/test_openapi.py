"""The OpenAPI document (bulkjobs/api/openapi.json) against the app: every /v1 route is in it and
everything in it is a route, it is a valid OpenAPI 3.1 document, and it is served without a key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from bulkjobs.api.app import OPENAPI_PATH, build_app
from bulkjobs.settings import Settings

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


async def no_resources(app: web.Application) -> AsyncIterator[None]:
    yield


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    return build_app(Settings(data_dir=tmp_path, api_keys={"key-a": "tenant-a"}), no_resources)


def document() -> dict[str, Any]:
    return json.loads(OPENAPI_PATH.read_text())


def test_the_document_is_a_valid_openapi_3_1_document() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_v1_route_is_documented_and_every_documented_route_exists(app: web.Application) -> None:
    # aiohttp answers HEAD for every GET by itself: the document describes the GET.
    routed = {(route.resource.canonical, route.method.lower()) for route in app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/v1/") and route.method != "HEAD"}
    documented = {(path, method) for path, item in document()["paths"].items() for method in item if method in METHODS}
    assert routed - documented == set(), "routes missing from the document"
    assert documented - routed == set(), "documented routes the app does not have"


def test_every_operation_documents_its_errors_in_the_error_shape() -> None:
    spec = document()
    error = {"$ref": "#/components/schemas/Error"}
    for name, response in spec["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == error, name
    for path, item in spec["paths"].items():
        for method in set(item) & set(METHODS):
            statuses = [status for status in item[method]["responses"] if status.startswith(("4", "5"))]
            assert "400" in statuses, (method, path)
            for status in statuses:
                assert item[method]["responses"][status]["$ref"].startswith("#/components/responses/"), (method, path)


async def test_the_document_is_served_without_a_key(app: web.Application) -> None:
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == document()
