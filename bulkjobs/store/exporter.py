"""Export jobs, run by the store process, where the view is.

A run reads one consistent snapshot of the view (one read transaction on its own connection:
WAL isolates it from the feeder's writes), counts what it will write, then streams the rows a
page at a time into files under ``DATA_DIR/exports/<job id>/``. It reports to the job tracker
on the job-events topic: ``ExportProgress`` now and then, ``ExportDone`` with the files at the
end, a ``fail`` command on an error.

The feeder shows ``Exports`` every export job status it has written, and ``Exports`` starts,
pauses, resumes and stops runs to match. A run cut short by a crash starts again from scratch
when the store is back (its files are written again under the same names), so an export takes
effect once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiosqlite
import orjson

from bulkjobs.clock import utc_now
from bulkjobs.domain.exports import (
    CSV,
    OBJECT_FIELDS,
    OBJECTS,
    RELATIONSHIP_FIELDS,
    ExportRequest,
    Renderer,
    file_name,
    parse_export,
    split,
)
from bulkjobs.domain.jobs import CANCELLED, DELETED, EXPORT, FAILED, PROCESSING, QUEUED, SUCCEEDED, SUSPENDED
from bulkjobs.kafka import clients
from bulkjobs.kafka.topics import ExportDone, ExportProgress, JobCommand, TopicNames, encode
from bulkjobs.settings import Settings
from bulkjobs.store.files import ExportFiles
from bulkjobs.store.reader import OBJECT_ORDER, RELATIONSHIP_ORDER
from bulkjobs.store.schema import connect

log = logging.getLogger(__name__)

PAGE = 1000  # rows fetched, rendered and written at a time
PROGRESS_RECORDS = 5000  # report progress after this many records...
PROGRESS_SECONDS = 0.5  # ...or this long, whichever comes first
RETRY_SECONDS = 1.0


class Reporter:
    """Publishes what runs do to the job-events topic, keyed by job id."""

    def __init__(self, settings: Settings) -> None:
        self.topic = TopicNames(settings.topic_prefix).job_events
        self.producer = clients.producer(settings.kafka_brokers)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def progress(self, job_id: str, written: int, total: int) -> None:
        """Best effort: the next report (absolute counts) or the end makes up for a lost one."""
        try:
            await self._send(job_id, ExportProgress(job_id=job_id, written=written, total=total, at=utc_now()))
        except Exception as exc:
            log.warning("export %s: progress not sent: %s", job_id, exc)

    async def done(self, job_id: str, total: int, files: list[dict[str, Any]]) -> None:
        await self._send_until_sent(job_id, ExportDone(job_id=job_id, total=total, files=files, at=utc_now()))

    async def fail(self, job_id: str, tenant: str, reason: str) -> None:
        await self._send_until_sent(job_id, JobCommand(job_id=job_id, tenant=tenant, kind="fail", at=utc_now(),
                                                       reason=reason))

    async def _send(self, job_id: str, message: Any) -> None:
        await self.producer.send_and_wait(self.topic, encode(message), key=job_id.encode())

    async def _send_until_sent(self, job_id: str, message: Any) -> None:
        """The end of a run is never dropped: without it the job would never finish."""
        while True:
            try:
                await self._send(job_id, message)
                return
            except Exception as exc:
                log.warning("export %s: %s not sent, retrying: %s", job_id, type(message).__name__, exc)
                await asyncio.sleep(RETRY_SECONDS)


# --- reading the snapshot --------------------------------------------------------------------


def _selection(request: ExportRequest, tenant: str) -> tuple[str, str, list[Any]]:
    """(table, WHERE clause, parameters) of the rows an export writes."""
    table, type_column = ("objects", "type") if request.source == OBJECTS else ("relationships", "relationship_type")
    where, params = f"tenant = ? AND {type_column} = ?", [tenant, request.object_type]
    if request.time_frame.date_from is not None:
        where += " AND updated_at >= ?"
        params.append(request.time_frame.date_from)
    if request.time_frame.date_to is not None:
        where += " AND updated_at < ?"
        params.append(request.time_frame.date_to)
    return table, where, params


async def _scalar_rows(db: aiosqlite.Connection, sql: str, params: list[Any]) -> list[Any]:
    async with db.execute(sql, params) as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def _attribute_names(db: aiosqlite.Connection, request: ExportRequest, tenant: str) -> list[str]:
    """Every attribute name the exported objects have: a CSV's columns must be known before its
    first row."""
    if request.format != CSV or request.source != OBJECTS or request.attributes is not None:
        return []
    table, where, params = _selection(request, tenant)
    return await _scalar_rows(
        db, f"SELECT DISTINCT a.key FROM (SELECT attributes FROM {table} WHERE {where}) AS o, "
        "json_each(o.attributes) AS a ORDER BY a.key", params)


def _records(source: str, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as the API shows them."""
    if source != OBJECTS:
        return [dict(zip(RELATIONSHIP_FIELDS, row, strict=True)) for row in rows]
    records = [dict(zip(OBJECT_FIELDS, row, strict=True)) for row in rows]
    for record in records:
        record["attributes"] = orjson.loads(record["attributes"])
    return records


# --- writing the files -----------------------------------------------------------------------


class _ExportWriter:
    """Writes an export's records to its files, a new file every ``file_split_size`` records.
    Every method does file I/O: call them in a thread."""

    def __init__(self, files: ExportFiles, job_id: str, request: ExportRequest, renderer: Renderer) -> None:
        self.files, self.job_id, self.request, self.renderer = files, job_id, request, renderer
        self.written = 0
        self.number = 0  # the file being written, from 1; 0 before the first
        self.current: IO[bytes] | None = None
        self.in_file = 0
        self.listed: list[dict[str, Any]] = []

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        records = _records(self.request.source, rows)
        for number, start, end in split(self.written, len(records), self.request.file_split_size):
            if number != self.number:
                self._open(number)
            assert self.current is not None
            self.current.write(self.renderer.render(records[start:end]))
            self.in_file += end - start
        self.written += len(records)

    def finish(self) -> list[dict[str, Any]]:
        """Close the last file and list them all; an export of nothing still has one file."""
        if self.number == 0:
            self._open(1)
        self._close()
        return self.listed

    def discard(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def _open(self, number: int) -> None:
        self._close()
        self.number, self.in_file = number, 0
        self.current = self.files.create(self.job_id, file_name(self.job_id, number, self.request.format))
        self.current.write(self.renderer.header())

    def _close(self) -> None:
        if self.current is None:
            return
        size = self.current.tell()
        self.current.close()
        self.current = None
        self.listed.append({"name": file_name(self.job_id, self.number, self.request.format), "size": size,
                            "records": self.in_file, "created_at": utc_now()})


async def export(db_path: Path, files: ExportFiles, reporter: Reporter, job_id: str, tenant: str,
                 request: ExportRequest, gate: asyncio.Event) -> tuple[int, list[dict[str, Any]]]:
    """Write the export's files from one snapshot of the view, waiting at ``gate`` between
    pages (it is cleared while the job is suspended); (records written, files)."""
    db = await connect(db_path)
    try:
        await db.execute("BEGIN")  # one read transaction: every query below sees the same snapshot
        try:
            table, where, params = _selection(request, tenant)
            [total] = await _scalar_rows(db, f"SELECT count(*) FROM {table} WHERE {where}", params)
            await reporter.progress(job_id, 0, total)
            renderer = Renderer(request, await _attribute_names(db, request, tenant))
            writer = _ExportWriter(files, job_id, request, renderer)
            try:
                await _write_rows(db, reporter, writer, job_id, total, gate, table, where, params)
                listed = await asyncio.to_thread(writer.finish)
            finally:
                writer.discard()
        finally:
            await db.execute("ROLLBACK")  # nothing was written: only the snapshot ends
    finally:
        await db.close()
    return writer.written, listed


async def _write_rows(db: aiosqlite.Connection, reporter: Reporter, writer: _ExportWriter, job_id: str, total: int,
                      gate: asyncio.Event, table: str, where: str, params: list[Any]) -> None:
    columns = ", ".join(OBJECT_FIELDS if table == "objects" else RELATIONSHIP_FIELDS)
    reported, reported_at = 0, time.monotonic()
    order = ", ".join(OBJECT_ORDER if table == "objects" else RELATIONSHIP_ORDER)  # as the lists show them
    async with db.execute(f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {order}", params) as cursor:
        while rows := await cursor.fetchmany(PAGE):
            await gate.wait()
            await asyncio.to_thread(writer.write, rows)
            if writer.written - reported >= PROGRESS_RECORDS or time.monotonic() - reported_at >= PROGRESS_SECONDS:
                await reporter.progress(job_id, writer.written, total)
                reported, reported_at = writer.written, time.monotonic()


# --- following the jobs' statuses ------------------------------------------------------------


@dataclass
class _Run:
    task: asyncio.Task[None]
    gate: asyncio.Event  # set: the run may go on; cleared while its job is suspended


class Exports:
    """The export runs of this store process, kept in line with their jobs' statuses."""

    def __init__(self, settings: Settings, reporter: Reporter) -> None:
        self.db_path = settings.db_path
        self.files = ExportFiles(settings.data_dir)
        self.reporter = reporter
        self.runs: dict[str, _Run] = {}
        # Runs that ended here: a status the tracker published before their end may be read
        # after it, and must not start them again.
        self.ended: set[str] = set()
        # Until the feeder has read the status topic to its end, statuses are history: runs
        # start only after that, from what the view then says (``start_pending``).
        self.ready = False

    async def stop(self) -> None:
        for job_id in list(self.runs):
            await self._cancel(job_id)

    async def start_pending(self, db: aiosqlite.Connection) -> None:
        """The feeder has caught up: start again every export the view shows queued or
        processing (a processing one was cut short by a restart)."""
        self.ready = True
        async with db.execute("SELECT id, tenant, details FROM jobs WHERE type = ? AND status IN (?, ?) "
                              "AND schedule IS NULL", (EXPORT, QUEUED, PROCESSING)) as cursor:
            pending = list(await cursor.fetchall())
        for job_id, tenant, details in pending:
            self._start(job_id, tenant, orjson.loads(details) if details else {})

    async def observe(self, statuses: Iterable[dict[str, Any]]) -> None:
        """Follow the latest of these job statuses (in topic order) of every export job."""
        latest = {status["id"]: status for status in statuses if status["type"] == EXPORT}
        for status in latest.values():
            if not status.get("schedule"):  # a definition never exports: its runs do
                await self._follow(status)

    async def _follow(self, status: dict[str, Any]) -> None:
        job_id, state = status["id"], status["status"]
        run = self.runs.get(job_id)
        if state in (CANCELLED, FAILED, DELETED):
            await self._cancel(job_id)
            self.files.remove_job(job_id)
        elif state == SUCCEEDED:  # files deleted through the API are no longer listed
            listed = (status.get("details") or {}).get("files") or []
            self.files.keep_only(job_id, {file["name"] for file in listed})
        elif not self.ready:
            return
        elif state == SUSPENDED and run is not None:
            run.gate.clear()
        elif state in (QUEUED, PROCESSING):
            if run is not None:
                run.gate.set()
            elif job_id not in self.ended:
                self._start(job_id, status["tenant"], status.get("details") or {})

    def _start(self, job_id: str, tenant: str, details: dict[str, Any]) -> None:
        if job_id in self.runs:
            return
        gate = asyncio.Event()
        gate.set()
        self.runs[job_id] = _Run(task=asyncio.create_task(self._run(job_id, tenant, details, gate)), gate=gate)

    async def _cancel(self, job_id: str) -> None:
        run = self.runs.pop(job_id, None)
        if run is None:
            return
        run.task.cancel()
        await asyncio.gather(run.task, return_exceptions=True)

    async def _run(self, job_id: str, tenant: str, details: dict[str, Any], gate: asyncio.Event) -> None:
        log.info("export %s: starting", job_id)
        try:
            request = parse_export(details)
            self.files.remove_job(job_id)  # a run started again writes every file again
            total, listed = await export(self.db_path, self.files, self.reporter, job_id, tenant, request, gate)
            await self.reporter.done(job_id, total, listed)
            log.info("export %s: %d records in %d files", job_id, total, len(listed))
        except Exception as exc:
            log.exception("export %s failed", job_id)
            self.files.remove_job(job_id)
            await self.reporter.fail(job_id, tenant, f"the export failed: {exc}")
        finally:
            self.ended.add(job_id)
            if job_id in self.runs and self.runs[job_id].gate is gate:  # not cancelled: _cancel removed it
                del self.runs[job_id]
