"""Retrying a finished job's unsuccessful records: which jobs can be retried, which records a
retry takes, and, for a CSV job, the retry's file cut from the original, byte for byte.

A retry is a new job of the records picked, in their original order; its record ``i`` came from
record ``sources[i]`` of the job it retries (its ``source_index``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

from bulkjobs.domain.changes import Outcome
from bulkjobs.domain.csv_files import RowBytes
from bulkjobs.domain.jobs import EXPORT, TERMINAL
from bulkjobs.errors import BadRequest, Conflict

INCLUDES = ("skipped",)  # what ?include= may add to the failed records
NOTHING_TO_RETRY = "nothing_to_retry"
JOB_NOT_FINISHED = "job_not_finished"
NOT_RETRYABLE = "not_retryable"


def retried_outcomes(include: str | None) -> frozenset[str]:
    """The outcomes a retry takes: ``failed``, and ``skipped`` with ``include=skipped``."""
    if include is None:
        return frozenset({Outcome.FAILED})
    if include not in INCLUDES:
        raise BadRequest(f"unknown include {include[:100]!r}: only 'skipped' (the failed records are always "
                         "retried)", field="include")
    return frozenset({Outcome.FAILED, Outcome.SKIPPED})


def check_retryable(job: dict[str, Any]) -> None:
    """409 for a job that cannot be retried: an export (it has no records), a scheduled
    definition (its runs have the records: retry a run), a job not finished."""
    if job["type"] == EXPORT:
        raise Conflict("an export has no records to retry: submit the export again", code=NOT_RETRYABLE)
    if job.get("schedule") is not None:
        raise Conflict("a scheduled definition is retried through its runs: retry a run", code=NOT_RETRYABLE)
    if job["status"] not in TERMINAL:
        raise Conflict(f"the job is {job['status']}: only a finished job can be retried", code=JOB_NOT_FINISHED,
                       status=job["status"])


def nothing_to_retry(job_id: str, outcomes: frozenset[str]) -> Conflict:
    which = " or ".join(sorted(outcomes))
    return Conflict(f"job {job_id!r} has no {which} record to retry", code=NOTHING_TO_RETRY)


class Selection:
    """Which records of a job of ``total`` records a retry takes, one byte each: those whose
    outcome is one of ``outcomes``, and, when ``skipped`` is retried, those never applied
    (the job was cancelled or failed before it reached them)."""

    def __init__(self, total: int, outcomes: frozenset[str]) -> None:
        self.outcomes = outcomes
        self._picked = bytearray(b"\x01" if Outcome.SKIPPED in outcomes else b"\x00") * total

    def add_results(self, results: Iterable[tuple[int, str]]) -> None:
        """Take in the ``(index, outcome)`` of applied records."""
        picked, outcomes, total = self._picked, self.outcomes, len(self._picked)
        for index, outcome in results:
            if 0 <= index < total:
                picked[index] = outcome in outcomes

    def __contains__(self, index: int) -> bool:
        return 0 <= index < len(self._picked) and self._picked[index] == 1


def cut_rows(chunks: Iterable[bytes], encoding: str, picked: Callable[[int], bool],
             write: Callable[[bytes], object]) -> array[int]:
    """Write the header and the picked data rows of a CSV file (read as ``chunks``) as sent,
    in order; the index of each row written (``sources``). Blank lines are no rows."""
    rows = RowBytes(encoding)
    sources: array[int] = array("q")
    index = -1  # the header comes first
    for data in chain(chunks, [b""]):  # a chunk at a time, then the end of the file
        for _, raw in rows.feed(data) if data else rows.finish():
            if index < 0 or picked(index):
                write(raw)
                if index >= 0:
                    sources.append(index)
            index += 1
    return sources
