"""Paged lists over a view on disk: the Link headers walked to the end see every item once, in
the list's order (ties and nulls included, either direction), with the total in the body and in
X-Total-Count; offset= still pages; a cursor the API did not give is a 400. And gzip: a client
that accepts it gets large answers compressed, the same body once inflated; others get none."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bulkjobs.api.app import build_app
from bulkjobs.api.common import READER
from bulkjobs.settings import Settings
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect

KEY = {"x-api-key": "key-a"}
NEXT = re.compile(r'<([^>]+)>; rel="next"')
PREV = re.compile(r'<([^>]+)>; rel="prev"')


async def fill(db: aiosqlite.Connection) -> None:
    """37 jobs (every third never started, times tied in pairs), 250 objects (created in tied
    pairs) and 12 files of tenant-a, and one object of tenant-b."""
    for n in range(37):
        started = None if n % 3 == 0 else f"2026-01-01T00:{n // 2:02d}:00Z"
        await db.execute("INSERT INTO jobs (id, tenant, type, action, status, description, created_at, started_at) "
                         "VALUES (?, 'tenant-a', 'resources', 'post', 'succeeded', ?, ?, ?)",
                         (f"{n:032x}", f"job {n % 5}", f"2026-01-01T00:{n // 2:02d}:00Z", started))
    for n in range(250):
        at = f"2026-01-01T00:00:{n // 2:03d}Z"
        await db.execute("INSERT INTO objects VALUES (?, 'tenant-a', ?, ?, '{}', ?, ?)",
                         (f"{(n * 7919) % 1000:032x}", "a" if n % 2 else "b", f"e{n}", at, at))
    await db.execute("INSERT INTO objects VALUES ('f' , 'tenant-b', 'a', 'x', '{}', '2026', '2026')")
    for n in range(12):
        await db.execute("INSERT INTO files VALUES (?, 'tenant-a', ?, 'title', 'csv', 1, 1, ?)",
                         (f"{1:032x}-{n}", f"{1:032x}", f"2026-01-01T00:00:{n // 4:02d}Z"))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")
        await fill(db)
        app[READER] = ViewReader(db)
        yield
        await db.close()

    settings = Settings(data_dir=tmp_path, api_keys={"key-a": "tenant-a"})
    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client


async def walk(client: TestClient, path: str) -> list[dict[str, Any]]:
    """Every item of a list, following its next links; each page's total is the same."""
    items: list[dict[str, Any]] = []
    totals = set()
    url: str | None = path
    while url is not None:
        resp = await client.get(url, headers=KEY)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert resp.headers["X-Total-Count"] == str(body["total"])
        totals.add(body["total"])
        items.extend(body["items"])
        found = NEXT.search(resp.headers.get("Link", ""))
        url = found.group(1) if found else None
        assert url is None or "offset=" not in url
    assert totals == {len(items)}
    return items


def by(key: str, items: list[dict[str, Any]], reverse: bool = False) -> list[Any]:
    """The ids of ``items`` sorted by ``key`` (nulls last) then id, as the lists sort."""
    present = sorted((item for item in items if item[key] is not None), key=lambda item: (item[key], item["id"]),
                     reverse=reverse)
    missing = sorted((item for item in items if item[key] is None), key=lambda item: item["id"], reverse=reverse)
    return [item["id"] for item in present + missing]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["started_at", "created_at", "description"])
async def test_walking_the_job_list_sees_every_job_once_in_order(client: TestClient, sort: str, order: str) -> None:
    walked = await walk(client, f"/v1/jobs?sort={sort}&order={order}&limit=4")
    assert len(walked) == 37
    assert [job["id"] for job in walked] == by(sort, walked, reverse=order == "desc")


async def test_walking_objects_files_and_filtered_lists(client: TestClient) -> None:
    objects = await walk(client, "/v1/objects?limit=7")
    assert len(objects) == 250 and len({o["id"] for o in objects}) == 250
    # Oldest first; objects made at one time in the order they were written (ids out of order).
    assert [o["id"] for o in objects] == [f"{(n * 7919) % 1000:032x}" for n in range(250)]
    of_a = await walk(client, "/v1/objects?type=a&limit=9")
    assert [o["id"] for o in of_a] == [f"{(n * 7919) % 1000:032x}" for n in range(1, 250, 2)]
    files = await walk(client, "/v1/files?limit=5")
    assert [f["name"] for f in files] == [f"{1:032x}-{n}" for n in (11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)]
    assert len(await walk(client, "/v1/jobs?q=job%203&limit=2")) == 7


async def test_offset_still_pages_and_links_back(client: TestClient) -> None:
    resp = await client.get("/v1/objects?limit=10&offset=120&type=b", headers=KEY)
    body = await resp.json()
    assert len(body["items"]) == 10 - 5 and body["total"] == 125
    assert resp.headers["X-Total-Count"] == "125" and "next" not in resp.headers["Link"]
    prev = PREV.search(resp.headers["Link"])
    assert prev and "offset=110" in prev.group(1) and "type=b" in prev.group(1)
    first = await client.get("/v1/objects?limit=10", headers=KEY)
    assert "prev" not in first.headers["Link"]


@pytest.mark.parametrize("cursor", ["nope", "WzFd", "eyJhIjoxfQ"])
async def test_a_cursor_the_api_did_not_give_is_a_400(client: TestClient, cursor: str) -> None:
    resp = await client.get(f"/v1/objects?cursor={cursor}", headers=KEY)
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "cursor"


async def test_large_answers_are_gzipped_for_clients_that_accept_it(client: TestClient) -> None:
    plain = await client.get("/v1/objects?limit=100", headers={**KEY, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    raw = await client.get("/v1/objects?limit=100", headers={**KEY, "Accept-Encoding": "gzip"},
                           auto_decompress=False)
    assert raw.headers["Content-Encoding"] == "gzip" and raw.headers["Vary"] == "Accept-Encoding"
    body = await raw.read()
    assert orjson.loads(gzip.decompress(body)) == await plain.json()
    assert len(body) < len(await plain.read()) / 3
    small = await client.get("/v1/objects?limit=1", headers={**KEY, "Accept-Encoding": "gzip"},
                             auto_decompress=False)
    assert "Content-Encoding" not in small.headers
