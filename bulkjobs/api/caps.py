"""The per-tenant cap on active jobs at ``POST /v1/jobs``: a tenant that has
``BULKJOBS_MAX_ACTIVE_JOBS`` jobs queued or processing gets 429 ``too_many_active_jobs`` with
``Retry-After``, before its body is read.

A tenant's active jobs are those the view shows, plus those this API process accepted that the
view does not show yet (``common.ACCEPTED``), plus the requests of the tenant this process is
taking in at the moment, so that requests sent together cannot pass the cap together. (With
several API processes, each sees the others' jobs once the view shows them.) Jobs produced
straight to Kafka meet the same cap in the worker's job tracker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from bulkjobs.api.common import ACCEPTED, READER
from bulkjobs.domain.jobs import ACTIVE, TOO_MANY_ACTIVE_JOBS, too_many_active
from bulkjobs.errors import TooManyRequests

RETRY_AFTER = 5  # seconds: jobs end in seconds to minutes, and a client polling harder gains nothing
_IDS_PER_LOOK = 100  # accepted job ids looked up in the view per query


class ActiveJobs:
    """Admits a tenant's job request while the tenant is under the cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.taking: Counter[str] = Counter()  # tenant -> its requests being taken in now

    @asynccontextmanager
    async def admitted(self, request: web.Request) -> AsyncIterator[None]:
        """Hold a place for the request while it is taken in; 429 if the tenant has none left."""
        tenant = request["tenant"]
        active = await request.app[READER].active_jobs(tenant) + await _not_shown_yet(request.app, tenant)
        if active + self.taking[tenant] >= self.cap:  # no await between the check and the place taken
            raise TooManyRequests(too_many_active(self.cap), retry_after=RETRY_AFTER, code=TOO_MANY_ACTIVE_JOBS,
                                  limit=self.cap)
        self.taking[tenant] += 1
        try:
            yield
        finally:
            self.taking[tenant] -= 1
            if not self.taking[tenant]:
                del self.taking[tenant]


ACTIVE_JOBS = web.AppKey("active_jobs", ActiveJobs)


async def _not_shown_yet(app: web.Application, tenant: str) -> int:
    """The tenant's active jobs that this process accepted and the view does not show yet; those
    it shows are forgotten (as ``common.job_of`` does), so the list stays short."""
    accepted = app[ACCEPTED]
    ids = [job_id for job_id, (owner, job) in list(accepted.items()) if owner == tenant and job["status"] in ACTIVE]
    shown: set[str] = set()
    for start in range(0, len(ids), _IDS_PER_LOOK):
        shown |= await app[READER].job_ids(tenant, ids[start:start + _IDS_PER_LOOK])
    for job_id in shown:
        accepted.pop(job_id, None)
    return len(ids) - len(shown)
