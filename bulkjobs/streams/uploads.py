"""The upload watch: fails the jobs whose submitter fell silent before it sealed them.

``UploadClock`` notes, in memory, when the tracker last handled a sign of life (its
``JobSubmitted`` or a ``beat``) of each uploading job. A new owner of a partition starts each
job's clock when it first sees the job, so it waits a whole timeout before it judges.
``UploadWatch`` (a timer's look) sends an ``upload_timeout`` command, once per silence, for each
job of the partitions this worker owns that has been silent for longer than the timeout; the
tracker judges again when it reads that command, after every beat sent before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bulkjobs.clock import utc_now
from bulkjobs.kafka.topics import JobCommand, TopicNames
from bulkjobs.streams.effects import Owned, Publish, publish_job_event
from bulkjobs.streams.state import JobStates


class UploadClock:
    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout, self.clock = timeout, clock
        self.beats: dict[str, float] = {}  # job -> when (clock) its last sign of life was handled
        self.timeouts_sent: dict[str, float] = {}  # job -> the beat time its last upload_timeout was sent for

    def heard(self, job_id: str) -> None:
        """The job's submitter gave a sign of life."""
        self.beats[job_id] = self.clock()

    def silent_for(self, job_id: str) -> float | None:
        """How long the job's submitter has been silent, if longer than the upload timeout (the
        clock starts now for a job not seen before)."""
        silent = self.clock() - self.beats.setdefault(job_id, self.clock())
        return silent if silent > self.timeout else None

    def first_timeout(self, job_id: str) -> bool:
        """Whether no ``upload_timeout`` was sent for this silence yet; from now on, one was."""
        if self.timeouts_sent.get(job_id) == self.beats[job_id]:
            return False
        self.timeouts_sent[job_id] = self.beats[job_id]
        return True

    def forget(self, job_id: str) -> None:
        """The job is sealed or has ended: it is not watched any more."""
        self.beats.pop(job_id, None)
        self.timeouts_sent.pop(job_id, None)

    def restart(self, lost: set[int], partition_of: dict[str, int]) -> None:
        """Partitions went to another worker: if one comes back, its uploads' clocks start again."""
        for job_id in [job_id for job_id in self.beats if partition_of.get(job_id) in lost]:
            del self.beats[job_id]


class UploadWatch:
    def __init__(self, *, publish: Publish, topics: TopicNames, job_states: JobStates, clock: UploadClock,
                 owned: Owned, now: Callable[[], str] = utc_now) -> None:
        self.publish, self.topics, self.job_states, self.clock = publish, topics, job_states, clock
        self.owned, self.now = owned, now

    async def look(self) -> None:
        """Ask the tracker to fail the uploading jobs of the partitions this worker owns whose
        submitter has been silent for longer than the upload timeout. The tracker judges again
        when the command comes in order after every beat sent before it, so a tracker that lags
        behind its partition never fails a job whose beats are still waiting to be read."""
        owned = await self.owned()
        for job in self.job_states.uploads():
            if self.job_states.partitions.get(job.id) not in owned or self.clock.silent_for(job.id) is None:
                continue
            if not self.clock.first_timeout(job.id):
                continue  # sent for this silence already
            command = JobCommand(job_id=job.id, tenant=job.tenant, kind="upload_timeout", at=self.now())
            await publish_job_event(self.publish, self.topics.job_events, command)
