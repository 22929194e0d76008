"""The scheduler: fires the scheduled definitions of the job-events partitions this worker owns.

A timer's look: when ``next_due`` says a definition's run is due and all its batches are
parked, it sends a ``fire`` command with the due time, once per due time; the tracker makes the
run. A definition whose schedule cannot be computed is failed with the reason (once), and the
other definitions go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from bulkjobs.clock import utc_moment, utc_now
from bulkjobs.domain.jobs import Job
from bulkjobs.domain.schedules import next_due
from bulkjobs.kafka.topics import JobCommand, TopicNames
from bulkjobs.streams.effects import Owned, Publish, publish_job_event, request_fail
from bulkjobs.streams.state import JobStates

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, *, publish: Publish, topics: TopicNames, job_states: JobStates, owned: Owned,
                 moment: Callable[[], datetime] = utc_moment, now: Callable[[], str] = utc_now) -> None:
        self.publish, self.topics, self.job_states, self.owned = publish, topics, job_states, owned
        self.moment, self.now = moment, now
        self.fires_sent: dict[str, str] = {}  # definition -> the due time of the last fire command sent
        self.fails_sent: set[str] = set()  # definitions whose schedule failed, and the fail command is sent

    async def look(self) -> None:
        """Fire the definitions of the partitions this worker owns that are due."""
        owned = await self.owned()
        moment = self.moment()
        for job in self.job_states.definitions():
            if self.job_states.partitions.get(job.id) not in owned or len(job.parked) < (job.batches or 0):
                continue  # another worker's, or its batches are not all held yet
            await self._look_at(job, moment)

    async def _look_at(self, job: Job, moment: datetime) -> None:
        try:
            due = next_due(job.schedule or {}, created_at=job.created_at or self.now(), last_due=job.last_due,
                           runs_fired=job.runs_fired, now=moment)
        except Exception as exc:
            if job.id not in self.fails_sent:
                self.fails_sent.add(job.id)
                log.warning("definition %s: its schedule cannot run (%r); failing it", job.id, exc)
                await request_fail(self.publish, self.topics.job_events, job.id, job.tenant,
                                   f"the job's schedule cannot run: {exc!r}", self.now())
            return
        if due is None or self.fires_sent.get(job.id) == due:
            return
        self.fires_sent[job.id] = due
        command = JobCommand(job_id=job.id, tenant=job.tenant, kind="fire", at=self.now(), due=due)
        await publish_job_event(self.publish, self.topics.job_events, command)
