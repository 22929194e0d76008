"""Idempotent submission: ``POST /v1/jobs`` with an ``Idempotency-Key`` header.

The first request with a key (per tenant) claims it and creates the job; its answer is kept
(``store.idempotency``). A repeat with the same body gets that answer again, with
``Idempotent-Replayed: true``, and creates nothing; with another body, 422
``idempotency_key_reused``; while the first is still being received, 409
``idempotency_key_in_use``. A request refused or failed before its job was accepted releases
the key, so that a retry goes through.

"The same body" is a digest of the body as the job reads it (inflated; a multipart body's
parts, not its random boundary) and of what else shapes the job: the media type and the query
parameters. A repeat is read like any request, so its digest is known where every form meets
before publishing (``before_publish``): there it is replayed or refused, having published nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from bulkjobs.api.common import SETTINGS
from bulkjobs.domain.limits import check_idempotency_key
from bulkjobs.errors import BulkJobsError, Conflict, Unprocessable
from bulkjobs.store.idempotency import Answered, Claimed, IdempotencyKeys, InUse

log = logging.getLogger(__name__)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEYS = web.AppKey("idempotency_keys", IdempotencyKeys)


class BodyDigest:
    """What makes two submissions the same: their media type, query and body bytes (a multipart
    body's parts each hashed on their own, so that no two ways to cut it into parts agree)."""

    def __init__(self, request: web.Request) -> None:
        self._hash = hashlib.sha256(orjson.dumps([request.content_type.lower(), sorted(request.query.items())]))
        self._part: hashlib._Hash | None = None

    def feed(self, data: bytes) -> None:
        (self._part or self._hash).update(data)

    def part(self, name: str | None, filename: str | None, content_type: str | None) -> None:
        """A multipart part starts: its name, file name and type (its charset) are part of what it says."""
        self._end_part()
        self._part = hashlib.sha256(orjson.dumps([name, filename, content_type]))

    def hexdigest(self) -> str:
        self._end_part()
        return self._hash.hexdigest()

    def _end_part(self) -> None:
        if self._part is not None:
            self._hash.update(self._part.digest())
            self._part = None


DIGEST = web.RequestKey("body_digest", BodyDigest)
_EARLIER = web.RequestKey("idempotency_earlier", Answered)
_CLAIM = web.RequestKey("idempotency_claim", tuple)  # (tenant, key, owner) of a first request


class _Replay(BulkJobsError):
    """The request repeats an answered one: nothing is published (a refusal, to the intake,
    so that what it prepared is dropped); ``idempotent`` answers it with the earlier answer."""

    status = 200

    def __init__(self, earlier: Answered) -> None:
        super().__init__("replayed")
        self.earlier = earlier


def body_digest(request: web.Request) -> BodyDigest | None:
    """The digest the request's body bytes are fed to, if it carries a key."""
    return request.get(DIGEST)


def is_repeat(request: web.Request) -> bool:
    """Whether the request repeats a key already answered (it will publish nothing)."""
    return _EARLIER in request


async def before_publish(request: web.Request) -> None:
    """Where every form meets before publishing: a repeat of an answered key is replayed if
    its digest is the earlier one, and refused (422) if not; a first request goes on only if
    its claim is still its own (409 if its lease ran out and another request took the key)."""
    claim = request.get(_CLAIM)
    if claim is not None:
        tenant, key, owner = claim
        lease = request.app[SETTINGS].idempotency_lease
        if not await request.app[KEYS].renew(tenant, key, owner, time.time() + lease):
            raise _in_use()
    earlier = request.get(_EARLIER)
    if earlier is None:
        return
    if request[DIGEST].hexdigest() != earlier.digest:
        raise Unprocessable("this Idempotency-Key was used with another request: a key is for one job; "
                            "send a new key for a new job", code="idempotency_key_reused")
    raise _Replay(earlier)


async def idempotent(request: web.Request, create: Callable[[web.Request], Awaitable[web.Response]]
                     ) -> web.Response:
    """``create(request)`` under the request's Idempotency-Key, if it has one."""
    raw = request.headers.get(KEY_HEADER)
    if raw is None:
        return await create(request)
    key, tenant, owner = check_idempotency_key(raw), request["tenant"], uuid.uuid4().hex
    keys, settings = request.app[KEYS], request.app[SETTINGS]
    ttl, lease = settings.idempotency_ttl, settings.idempotency_lease
    request[DIGEST] = BodyDigest(request)
    claim = await keys.claim(tenant, key, owner, now=time.time(), lease=lease, ttl=ttl)
    if isinstance(claim, InUse):
        raise _in_use()
    if isinstance(claim, Answered):
        request[_EARLIER] = claim
        try:
            return await create(request)  # before_publish ends it
        except _Replay as replay:
            return web.Response(body=replay.earlier.response, status=replay.earlier.status,
                                content_type="application/json", headers={REPLAYED_HEADER: "true"})
    assert isinstance(claim, Claimed)
    request[_CLAIM] = (tenant, key, owner)
    try:
        async with _renewed(keys, tenant, key, owner, lease):
            response = await create(request)
    except BaseException:
        await asyncio.shield(keys.release(tenant, key, owner))
        raise
    assert isinstance(response, web.Response) and isinstance(response.body, bytes)
    # The job is accepted: its answer is kept even if the client is gone (it replays it).
    try:
        await asyncio.shield(keys.answer(tenant, key, owner, digest=request[DIGEST].hexdigest(),
                                         status=response.status, response=response.body,
                                         expires_at=time.time() + ttl))
    except Exception:  # the job is accepted all the same: answer it (a repeat after the lease makes another)
        log.exception("the answer to Idempotency-Key %r of tenant %s could not be kept", key, tenant)
    return response


def _in_use() -> Conflict:
    return Conflict("a request with this Idempotency-Key is still being received: wait for its answer, "
                    "then repeat it", code="idempotency_key_in_use")


@contextlib.asynccontextmanager
async def _renewed(keys: IdempotencyKeys, tenant: str, key: str, owner: str, lease: float
                   ) -> AsyncIterator[None]:
    """The claim renewed for ``lease`` seconds every third of it while the body is received."""
    async def renew() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await keys.renew(tenant, key, owner, time.time() + lease)
            except Exception:  # the next renewal may pass; before_publish checks the claim anyway
                log.warning("the claim of Idempotency-Key %r of tenant %s could not be renewed", key, tenant,
                            exc_info=True)

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
