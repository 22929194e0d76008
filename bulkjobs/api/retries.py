"""Where a retry's records come from (``POST /v1/jobs/{id}/retry``, routed in ``api.intake``).

A CSV job's retry is a new file: the original's header and the picked rows, cut from the
original as sent. A JSON job's retry is the bodies of its failed records, which the view keeps
(``results.record``). Both are read a page or a chunk at a time, the file in a thread.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from bulkjobs.api.array_splitter import Chunk
from bulkjobs.api.csv_jobs import CsvUpload
from bulkjobs.domain.csv_import import parse_settings
from bulkjobs.domain.retries import Selection, cut_rows
from bulkjobs.gcpause import without_gc
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import ViewReader

PAGE = 5000  # results read from the view at a time

# What of a CSV job's body (``domain.csv_import.ImportPlan.details``) are its settings.
_PLAN_SETTINGS = ("job_type", "operation", "object_type", "find_by", "field_mappings")


@dataclass(frozen=True)
class Retry:
    """What a retry job knows of the job it retries: its id, and by record index, the index of
    each record in it."""

    of: str
    sources: array[int]


async def selection(reader: ViewReader, job: dict[str, Any], outcomes: frozenset[str]) -> Selection:
    """The records of a finished job that a retry of ``outcomes`` takes, from its results."""
    picked = Selection(job["counts"]["total"] or 0, outcomes)
    start = 0
    while page := await reader.outcomes(job["id"], start, PAGE):
        picked.add_results(page)
        start = page[-1][0] + 1
    return picked


def _cut_file(files: UploadFiles, job: dict[str, Any], job_id: str, picked: Selection) -> tuple[CsvUpload, Retry]:
    """Write the retry's file (``job_id``): the header and the picked rows of the original's
    file. Runs in a thread."""
    file = job["file"]
    with files.create(job_id) as out:
        sources = cut_rows(files.chunks(job["id"]), file["character_encoding"], picked.__contains__, out.write)
        size = out.tell()
    fields = {name: job[name] for name in _PLAN_SETTINGS}
    settings = parse_settings({**fields, "description": job["description"],
                               "character_encoding": file["character_encoding"]})
    return CsvUpload(settings, None, file["name"], size, file["character_encoding"]), Retry(job["id"], sources)


async def cut_file(files: UploadFiles, job: dict[str, Any], job_id: str,
                   picked: Selection) -> tuple[CsvUpload, Retry]:
    return await asyncio.to_thread(without_gc, _cut_file, files, job, job_id, picked)


async def failed_records(reader: ViewReader, job_id: str, outcomes: frozenset[str],
                         sources: array[int]) -> AsyncIterator[Chunk]:
    """The kept bodies of a JSON job's records of ``outcomes``, a page at a time (parsed in a
    thread), in record order; each record's index goes into ``sources`` first."""
    start = 0
    while page := await reader.failed_records(job_id, outcomes, start, PAGE):
        sources.extend(index for index, _ in page)
        raw = b"[" + b",".join(record for _, record in page) + b"]"
        yield Chunk(await asyncio.to_thread(orjson.loads, raw), len(raw), raw)
        start = page[-1][0] + 1
