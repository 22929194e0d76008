"""Idempotency keys without a broker: the header's rule, the shared table's claims (on a temp
SQLite file, with the clock passed in) and the body digest."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from hypothesis import assume, given
from hypothesis import strategies as st

from bulkjobs.api.app import build_app
from bulkjobs.api.common import PUBLISHER, READER
from bulkjobs.api.idempotency import KEYS, BodyDigest
from bulkjobs.domain.limits import MAX_IDEMPOTENCY_KEY_CHARS, check_idempotency_key
from bulkjobs.errors import BadRequest
from bulkjobs.settings import Settings
from bulkjobs.store import idempotency
from bulkjobs.store.idempotency import PURGE_EVERY, Answered, Claimed, IdempotencyKeys, InUse
from bulkjobs.store.reader import ViewReader
from bulkjobs.store.schema import connect
from tests.unit.test_intake import FakePublisher

# --- the header's rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", " ", "~", "x" * 254, "x" * MAX_IDEMPOTENCY_KEY_CHARS,
                                 "8e03978e-40d5-43e8-bc93-6894a57f9324", '"quoted"',
                                 "a b!#$%&'()*+,-./:;<=>?@[\\]^_`{|}"])
def test_1_to_255_printable_ascii_characters_are_a_key(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * (MAX_IDEMPOTENCY_KEY_CHARS + 1), "tab\tkey", "\x1f", "del\x7f",
                                 "caf\u00e9", "\u2603"])
def test_anything_else_is_a_400(key: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_idempotency_key(key)
    assert caught.value.code == "invalid_idempotency_key"
    assert caught.value.details["limit"] == MAX_IDEMPOTENCY_KEY_CHARS


# --- the shared table ---------------------------------------------------------------------------------

LEASE, TTL = 30.0, 1000.0


@pytest_asyncio.fixture
async def keys(tmp_path: Path) -> AsyncIterator[IdempotencyKeys]:
    opened = await IdempotencyKeys.open(tmp_path / "keys.db")
    yield opened
    await opened.close()


async def claim(keys: IdempotencyKeys, owner: str, now: float = 0.0, tenant: str = "t", key: str = "k") -> object:
    return await keys.claim(tenant, key, owner, now=now, lease=LEASE, ttl=TTL)


async def answer(keys: IdempotencyKeys, owner: str, now: float = 0.0, body: bytes = b'{"id": 1}') -> bool:
    return await keys.answer("t", "k", owner, digest="d1", status=202, response=body, expires_at=now + TTL)


async def test_the_first_claim_wins_and_the_next_finds_it_in_use(keys: IdempotencyKeys) -> None:
    assert isinstance(await claim(keys, "first"), Claimed)
    assert isinstance(await claim(keys, "second", now=LEASE - 0.001), InUse)


async def test_an_answered_key_gives_its_answer(keys: IdempotencyKeys) -> None:
    await claim(keys, "first")
    assert await answer(keys, "first")
    assert await claim(keys, "second", now=TTL - 0.001) == Answered("d1", 202, b'{"id": 1}')
    assert await claim(keys, "second", now=LEASE * 10) == Answered("d1", 202, b'{"id": 1}'), "no lease once answered"


async def test_an_answered_key_expires_after_the_ttl(keys: IdempotencyKeys) -> None:
    await claim(keys, "first")
    await answer(keys, "first")
    assert isinstance(await claim(keys, "second", now=TTL), Claimed)


async def test_keys_of_two_tenants_never_collide(keys: IdempotencyKeys) -> None:
    assert isinstance(await claim(keys, "a", tenant="ta"), Claimed)
    assert isinstance(await claim(keys, "b", tenant="tb"), Claimed)
    assert isinstance(await claim(keys, "a2", tenant="ta", key="other"), Claimed)


async def test_a_claim_whose_owner_stopped_renewing_is_taken_over_after_its_lease(keys: IdempotencyKeys) -> None:
    await claim(keys, "crashed")
    assert isinstance(await claim(keys, "next", now=LEASE - 0.001), InUse)
    assert isinstance(await claim(keys, "next", now=LEASE), Claimed)
    assert not await answer(keys, "crashed"), "the old owner no longer holds it"
    assert not await keys.renew("t", "k", "crashed", LEASE * 2)


async def test_a_renewed_claim_holds_past_its_first_lease(keys: IdempotencyKeys) -> None:
    await claim(keys, "slow")
    assert await keys.renew("t", "k", "slow", LEASE * 2)
    assert isinstance(await claim(keys, "next", now=LEASE * 2 - 0.001), InUse)
    assert isinstance(await claim(keys, "next", now=LEASE * 2), Claimed)


async def test_a_released_claim_frees_the_key_and_only_its_owner_releases_it(keys: IdempotencyKeys) -> None:
    await claim(keys, "first")
    await keys.release("t", "k", "someone else")
    assert isinstance(await claim(keys, "second"), InUse)
    await keys.release("t", "k", "first")
    assert isinstance(await claim(keys, "second"), Claimed)


async def test_an_answer_is_never_released(keys: IdempotencyKeys) -> None:
    await claim(keys, "first")
    await answer(keys, "first")
    await keys.release("t", "k", "first")
    assert isinstance(await claim(keys, "second"), Answered)


async def test_expired_keys_are_purged(keys: IdempotencyKeys) -> None:
    for n in range(3):
        await keys.claim("t", f"k{n}", "o", now=0.0, lease=LEASE, ttl=TTL)

    async def rows() -> int:
        async with keys.db.execute("SELECT count(*) FROM idempotency_keys") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    assert await rows() == 3
    await keys.claim("t", "new", "o", now=max(TTL, PURGE_EVERY), lease=LEASE, ttl=TTL)
    assert await rows() == 1


async def test_a_purge_deletes_a_bounded_number_and_goes_on_at_the_next_claims(
        keys: IdempotencyKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "PURGE_ROWS", 2)
    for n in range(5):
        await keys.claim("t", f"k{n}", "o", now=0.0, lease=LEASE, ttl=TTL)
    left = []
    for n in range(4):  # within a minute of each other: only the backlog makes them purge
        await keys.claim("t", f"new{n}", "o", now=TTL + n, lease=LEASE, ttl=TTL)
        async with keys.db.execute("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'k%'") as cursor:
            row = await cursor.fetchone()
        left.append(row[0] if row else None)
    assert left == [3, 1, 0, 0]


# --- the body digest ---------------------------------------------------------------------------------


Part = tuple[str, str | None, list[bytes]]  # a multipart part: name, Content-Type, its bytes in chunks


def digest(content_type: str = "application/json", query: str = "", body: list[bytes] | None = None,
           parts: list[Part] | None = None) -> str:
    made = BodyDigest(make_mocked_request("POST", "/v1/jobs" + query, headers={"Content-Type": content_type}))
    for data in body or []:
        made.feed(data)
    for name, part_type, chunks in parts or []:
        made.part(name, None, part_type)
        for data in chunks:
            made.feed(data)
    return made.hexdigest()


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_the_same_bytes_cut_differently_are_the_same_body(body: bytes, cuts: list[int]) -> None:
    points = [0, *sorted(min(cut, len(body)) for cut in cuts), len(body)]
    assert digest(body=[body]) == digest(body=[body[a:b] for a, b in itertools.pairwise(points)])


@given(st.binary(max_size=50), st.binary(max_size=50))
def test_other_bytes_are_another_body(one: bytes, other: bytes) -> None:
    assume(one != other)
    assert digest(body=[one]) != digest(body=[other])


@pytest.mark.parametrize("other", [
    {"body": [b"[1, 3]"]},
    {"content_type": "application/x-ndjson", "body": [b"[1, 2]"]},
    {"query": "?type=resources", "body": [b"[1, 2]"]},
])
def test_another_body_media_type_or_query_is_another_request(other: dict) -> None:
    assert digest(body=[b"[1, 2]"]) != digest(**other)


def test_the_query_is_compared_whatever_its_order() -> None:
    assert digest(query="?a=1&b=2") == digest(query="?b=2&a=1")


def test_multipart_parts_are_compared_part_by_part() -> None:
    same: list[Part] = [("job", None, [b"{}"]), ("file", "text/csv", [b"a,b\r\n", b"1,2\r\n"])]
    assert digest(parts=same) == digest(parts=[("job", None, [b"{}"]), ("file", "text/csv", [b"a,b\r\n1,2\r\n"])])
    assert digest(parts=same) != digest(parts=[("job", None, [b"{}a,b\r\n"]), ("file", "text/csv", [b"1,2\r\n"])])
    assert digest(parts=same) != digest(parts=[("file", "text/csv", [b"a,b\r\n1,2\r\n"]), ("job", None, [b"{}"])])
    assert digest(parts=same) != digest(parts=[("job", None, [b"{}"]),
                                               ("file", "text/csv; charset=latin-1", [b"a,b\r\n1,2\r\n"])])


# --- the intake under a key, over a fake publisher ---------------------------------------------------


@pytest_asyncio.fixture
async def intake(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[TestClient, FakePublisher]]:
    """The API over a fake publisher, an empty view and a real key table; ``indirect`` settings."""
    publisher = FakePublisher()
    settings = Settings(**{"data_dir": tmp_path, "api_keys": {"key-a": "tenant-a"}, **getattr(request, "param", {})})

    async def resources(app: web.Application) -> AsyncIterator[None]:
        db = await connect(tmp_path / "view.db")
        keys = await IdempotencyKeys.open(settings.idempotency_path)
        app[PUBLISHER] = publisher  # type: ignore[misc]
        app[READER] = ViewReader(db)
        app[KEYS] = keys
        yield
        await keys.close()
        await db.close()

    async with TestClient(TestServer(build_app(settings, resources))) as client:
        yield client, publisher


ENVELOPE = {"type": "resources", "action": "post", "data": [{"type": "server", "external_id": "e1"}]}


def keyed(key: str = "k-1") -> dict[str, str]:
    return {"x-api-key": "key-a", "Idempotency-Key": key}


async def test_a_replayed_csv_job_publishes_nothing_and_keeps_no_second_file(
        tmp_path: Path, intake: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = intake
    answers = []
    for _ in range(2):
        resp = await client.post("/v1/jobs?operation=upsert&object_type=server",
                                 headers={**keyed(), "Content-Type": "text/csv"}, data=b"external_id\ne1\n")
        answers.append((resp.status, resp.headers.get("Idempotent-Replayed"), await resp.read()))
    assert [answer[:2] for answer in answers] == [(202, None), (202, "true")]
    assert answers[0][2] == answers[1][2]
    assert len(publisher.jobs) == 1
    assert [path.name for path in (tmp_path / "uploads").glob("*")] == [publisher.jobs[0][0].job_id]


async def test_a_job_kafka_refused_frees_its_key(intake: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = intake
    publisher.refuse = True
    assert (await client.post("/v1/jobs", headers=keyed(), json=ENVELOPE)).status == 503
    publisher.refuse = False
    resp = await client.post("/v1/jobs", headers=keyed(), json=ENVELOPE)
    assert resp.status == 202 and "Idempotent-Replayed" not in resp.headers
    assert len(publisher.jobs) == 1


async def test_a_refused_request_frees_its_key(intake: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = intake
    assert (await client.post("/v1/jobs", headers=keyed(), json={**ENVELOPE, "data": []})).status == 400
    assert (await client.post("/v1/jobs", headers=keyed(), json=ENVELOPE)).status == 202
    assert len(publisher.jobs) == 1


@pytest.mark.parametrize("intake", [{"max_active_jobs": 1}], indirect=True)
async def test_a_repeat_is_not_held_back_by_the_cap_of_active_jobs(intake: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = intake
    first = await client.post("/v1/jobs", headers=keyed(), json=ENVELOPE)
    assert first.status == 202
    assert (await client.post("/v1/jobs", headers=keyed("another"), json=ENVELOPE)).status == 429
    again = await client.post("/v1/jobs", headers=keyed(), json=ENVELOPE)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.read() == await first.read()
    assert len(publisher.jobs) == 1


async def test_a_request_without_a_key_is_not_remembered(intake: tuple[TestClient, FakePublisher]) -> None:
    client, publisher = intake
    for _ in range(2):
        resp = await client.post("/v1/jobs", headers={"x-api-key": "key-a"}, json=ENVELOPE)
        assert resp.status == 202 and "Idempotent-Replayed" not in resp.headers
    assert len(publisher.jobs) == 2
