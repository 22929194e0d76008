"""The expiry: deletes the finished jobs of the job-events partitions this worker owns once
they are past their ``expires_at`` (``BULKJOBS_JOB_RETENTION`` after they completed).

A timer's look: for each owned partition, ``JobStates.expired`` hands the jobs now due (the
jobs wait in a heap by completion time, so a look costs only the jobs due); each is sent the
same ``delete`` command a user's DELETE sends, so the tracker deletes it and the store removes
it, its results and its files exactly as it would then. A job that is running is never due,
and the tracker refuses to delete one anyway. The command is acked before the look goes on, so
a job once due is deleted even if the partition moves or the worker stops; a worker that stops
before that rebuilds its heaps from the status topic and finds the job due again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bulkjobs.clock import utc_moment, utc_now
from bulkjobs.kafka.topics import JobCommand, TopicNames
from bulkjobs.streams.effects import Owned, Publish, publish_job_event
from bulkjobs.streams.state import JobStates

# Delete commands one look sends at the most (each waits for its ack): a backlog, after the
# service was down for a while, is sent over several looks, and the scheduler and the upload
# watch, which share the timer, keep their rhythm.
MAX_DELETES_PER_LOOK = 200


class Expiry:
    def __init__(self, *, publish: Publish, topics: TopicNames, job_states: JobStates, owned: Owned,
                 retention: int, moment: Callable[[], datetime] = utc_moment,
                 now: Callable[[], str] = utc_now) -> None:
        self.publish, self.topics, self.job_states, self.owned = publish, topics, job_states, owned
        self.retention, self.moment, self.now = retention, moment, now

    async def look(self) -> None:
        """Ask the tracker to delete the jobs of the partitions this worker owns that have expired."""
        if self.retention <= 0:
            return  # jobs are kept forever
        moment, budget = self.moment(), MAX_DELETES_PER_LOOK
        for partition in sorted(await self.owned()):
            for job in self.job_states.expired(partition, self.retention, moment, budget):
                command = JobCommand(job_id=job.id, tenant=job.tenant, kind="delete", at=self.now())
                await publish_job_event(self.publish, self.topics.job_events, command)
                budget -= 1
