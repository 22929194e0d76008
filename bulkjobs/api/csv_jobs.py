"""CSV jobs in: receive the file (three ways), keep it as the job's original, then plan the
import and route its rows into batches like a JSON job's records.

The file streams to disk as it arrives (with its encoding sniffed on the way), and is then
read back in chunks in a thread: the API's memory does not grow with the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader

from bulkjobs.api.decoding import body_reader
from bulkjobs.api.idempotency import BodyDigest, body_digest
from bulkjobs.api.spool import BatchSpool
from bulkjobs.domain.csv_files import EncodingSniffer, RowReader, encoding_name
from bulkjobs.domain.csv_import import (
    SETTINGS,
    ImportPlan,
    ImportSettings,
    check_file_name,
    parse_settings,
    plan_import,
)
from bulkjobs.domain.dry_run import DRY_RUN, check_dry_run, dry_run_from_text
from bulkjobs.errors import BadRequest, InvalidField, TooLarge, check_known
from bulkjobs.store.files import READ_CHUNK, UploadFiles

CSV_TYPES = {"text/csv", "application/csv", "text/comma-separated-values"}
MULTIPART = "multipart/form-data"
# What a CSV job's settings may come with, by the form they come in (anything else is refused).
CSV_QUERY = (*SETTINGS, "schedule", "callback_url", "file_name", DRY_RUN)  # a text/csv body's query string
_MULTIPART_EXTRA = ("schedule", "callback_url", DRY_RUN)  # one part per setting, or the 'job' part's JSON
_FILE_CONTENT_EXTRA = ("schedule", "callback_url", "file_content", "file_name", "kind", DRY_RUN)  # a JSON object's


@dataclass
class CsvUpload:
    """A CSV job's file, saved, and the settings that came with it."""

    settings: ImportSettings
    schedule: Any  # as the request gave it; checked when the job is submitted
    name: str | None
    size: int
    encoding: str  # given, else sniffed
    callback_url: Any = None  # as the request gave it (None: none); checked when the job is submitted
    dry_run: bool | None = None  # None: not given


def _fields_from_strings(pairs: dict[str, str]) -> dict[str, Any]:
    """Settings sent as text (query parameters, form fields): field_mappings is JSON text,
    dry_run is true or false."""
    fields: dict[str, Any] = dict(pairs)
    if DRY_RUN in fields:
        fields[DRY_RUN] = dry_run_from_text(fields[DRY_RUN])
    for name in ("field_mappings", "schedule"):
        if name in fields:
            try:
                fields[name] = orjson.loads(fields[name])
            except orjson.JSONDecodeError:
                raise BadRequest(f"'{name}' must be JSON", field=name, code="invalid_json") from None
    return fields


class _UploadWriter:
    """Writes an upload to its job's file, enforcing the size limit and sniffing the encoding."""

    def __init__(self, files: UploadFiles, job_id: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.sniffer = EncodingSniffer()
        self._file = files.create(job_id)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise TooLarge(f"the file is larger than the limit of {self.max_bytes} bytes", limit=self.max_bytes)
        self.sniffer.feed(data)
        self._file.write(data)

    async def copy(self, read: Callable[[], Any]) -> None:
        while data := await read():
            self.write(data)

    def close(self) -> None:
        self._file.close()


def _upload(fields: dict[str, Any], extra: tuple[str, ...], name: str | None, writer: _UploadWriter) -> CsvUpload:
    settings = parse_settings(fields, extra)
    if writer.size == 0:
        raise BadRequest("the file is empty: a CSV job needs a header and at least one row", field="file",
                         code="empty_file")
    encoding = encoding_name(settings.character_encoding) if settings.character_encoding else writer.sniffer.encoding()
    return CsvUpload(settings, fields.get("schedule"), check_file_name(name), writer.size, encoding,
                     fields.get("callback_url"), check_dry_run(fields.get(DRY_RUN)))


async def receive(request: web.Request, files: UploadFiles, job_id: str, max_bytes: int) -> CsvUpload:
    """Save the CSV of a ``text/csv`` or ``multipart/form-data`` request as the job's file."""
    writer = _UploadWriter(files, job_id, max_bytes)
    try:
        if request.content_type.lower() == MULTIPART:
            fields, name = await _receive_multipart(request, writer)
            extra: tuple[str, ...] = _MULTIPART_EXTRA
        else:
            if request.content_length is not None and request.content_length > max_bytes:
                raise TooLarge(f"the file is larger than the limit of {max_bytes} bytes", limit=max_bytes)
            fields = _fields_from_strings(dict(request.query))
            extra = CSV_QUERY
            name = fields.pop("file_name", None)
            await writer.copy(body_reader(request, READ_CHUNK))  # inflated (api.decoding)
    finally:
        writer.close()
    return _upload(fields, extra, name, writer)


# What aiohttp's multipart reader raises on a malformed body: no, a wrong or an unclosed boundary
# (ValueError, AssertionError), a line or header too long (LineTooLong and the other
# HttpProcessingErrors), an unknown charset (LookupError), bytes the charset or the transfer
# encoding cannot decode (UnicodeDecodeError, binascii.Error: ValueErrors), an unknown transfer
# encoding (RuntimeError), a disposition it cannot parse (a warning, raised when warnings are errors).
_MALFORMED_MULTIPART = (ValueError, AssertionError, LookupError, RuntimeError, HttpProcessingError,
                        BadContentDispositionHeader)
MAX_SETTINGS_PART = 4 * 1024 * 1024  # bytes in one settings part (the 'job' JSON or one setting)


async def _receive_multipart(request: web.Request, writer: _UploadWriter) -> tuple[dict[str, Any], str | None]:
    """A ``file`` part (the CSV) and the settings: a ``job`` part holding JSON, or one part per
    setting. A body aiohttp cannot read as multipart is a 400, whatever it trips on."""
    try:
        return await _read_multipart(request, writer)
    except _MALFORMED_MULTIPART as exc:
        reason = str(exc)[:200] or type(exc).__name__
        raise BadRequest(f"the multipart body is malformed: {reason}", field="file",
                         code="invalid_multipart") from None


async def _read_multipart(request: web.Request, writer: _UploadWriter) -> tuple[dict[str, Any], str | None]:
    reader = await request.multipart()
    fields: dict[str, Any] = {}
    texts: dict[str, str] = {}
    name: str | None = None
    seen_file = False
    digest = body_digest(request)  # fed each part's name and content, not the boundary
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not supported", field="file")
        if digest is not None:
            digest.part(part.name, part.filename, part.headers.get(hdrs.CONTENT_TYPE))
        if part.name == "file":
            if seen_file:
                raise BadRequest("a multipart CSV job has one 'file' part", field="file")
            seen_file = True
            name = part.filename
            await _copy_file_part(part, writer, digest)
        elif part.name == "job":
            try:
                job = orjson.loads(await _setting_bytes(part, digest))
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"the 'job' part is not valid JSON: {exc}", field="job", code="invalid_json") from None
            if not isinstance(job, dict):
                raise BadRequest("the 'job' part must be a JSON object", field="job")
            fields.update(job)
        elif part.name in (*SETTINGS, *_MULTIPART_EXTRA):
            texts[part.name] = (await _setting_bytes(part, digest)).decode(part.get_charset(default="utf-8"))
        else:
            check_known([part.name or ""], ("file", "job", *SETTINGS, *_MULTIPART_EXTRA), "part")
    if not seen_file:
        raise BadRequest("a multipart CSV job needs a 'file' part", field="file")
    return {**_fields_from_strings(texts), **fields}, name


async def _copy_file_part(part: BodyPartReader, writer: _UploadWriter, digest: BodyDigest | None) -> None:
    """The file part's bytes, undoing a base64 transfer encoding chunk by chunk (aiohttp cuts
    base64 chunks on whole quartets)."""
    if part.headers.get("Content-Transfer-Encoding", "binary").lower() not in ("base64", "binary", "7bit", "8bit"):
        raise BadRequest("the 'file' part's Content-Transfer-Encoding must be base64, binary, 7bit or 8bit",
                         field="file", code="invalid_multipart")
    while not part.at_eof():
        data = bytes(part.decode(await part.read_chunk(READ_CHUNK)))
        if digest is not None:
            digest.feed(data)
        writer.write(data)


async def _setting_bytes(part: BodyPartReader, digest: BodyDigest | None) -> bytes:
    """A settings part's bytes, transfer encoding undone; 413 past ``MAX_SETTINGS_PART``."""
    data = bytearray()
    while chunk := await part.read_chunk(READ_CHUNK):
        data += chunk
        if len(data) > MAX_SETTINGS_PART:
            raise TooLarge(f"the {part.name!r} part is larger than the limit of {MAX_SETTINGS_PART} bytes",
                           field=part.name, limit=MAX_SETTINGS_PART)
    decoded = bytes(part.decode(bytes(data)))
    if digest is not None:
        digest.feed(decoded)
    return decoded


def receive_text(fields: dict[str, Any], files: UploadFiles, job_id: str, max_bytes: int) -> CsvUpload:
    """Save the ``file_content`` of a JSON job request (the CSV as a string) as the job's file."""
    content = fields.get("file_content")
    if not isinstance(content, str):
        raise InvalidField("'file_content' must be a string holding the CSV", field="file_content")
    writer = _UploadWriter(files, job_id, max_bytes)
    try:
        writer.write(content.encode())
    finally:
        writer.close()
    name = fields.get("file_name")
    if name is not None and not isinstance(name, str):
        raise InvalidField("'file_name' must be a string", field="file_name")
    fields = {"character_encoding": "utf-8", **fields}  # a JSON string holds text, not bytes
    return _upload(fields, _FILE_CONTENT_EXTRA, name, writer)


def spool_rows(files: UploadFiles, job_id: str, upload: CsvUpload, max_records: int,
               new_spool: Callable[[str], BatchSpool]) -> tuple[ImportPlan, BatchSpool]:
    """Read the saved file: plan the import from its header, then route every row's record
    into a spool made by ``new_spool(action)``. Runs in a thread."""
    reader = RowReader(upload.encoding)
    planned: tuple[ImportPlan, BatchSpool] | None = None  # once the header is read
    ratio = 0.0  # bytes of encoded records per byte of CSV, measured on the first rows
    try:
        for data in chain(files.chunks(job_id), [b""]):  # read a chunk at a time, then finish
            rows = reader.feed(data) if data else reader.finish()
            if planned is None and rows:
                plan = plan_import(upload.settings, rows.pop(0))
                planned = plan, new_spool(plan.action)
            if planned is None or not rows:
                continue
            plan, spool = planned
            records = [plan.record(row) for row in rows]
            if spool.records + len(records) > max_records:
                raise TooLarge(f"the file has more than the limit of {max_records} rows",
                               limit=max_records, code="too_many_records")
            if not ratio:
                ratio = len(orjson.dumps(records)) / max(1, len(data))
            spool.add(records, int(len(data) * ratio))
        if planned is None:
            raise BadRequest("the file is empty: a CSV job needs a header and at least one row", field="file",
                             code="empty_file")
        plan, spool = planned
        if spool.records == 0:
            raise BadRequest("the file has a header but no rows", field="file", code="empty_file")
        spool.close()
    except BaseException:
        if planned is not None:
            planned[1].discard()
        raise
    return plan, spool
