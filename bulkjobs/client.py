"""The HTTP and websocket client of the ``bulkjobs`` client commands.

It owns what talking to a running API takes: the client settings (``BULKJOBS_URL``,
``BULKJOBS_API_KEY``), how a file is sent to ``POST /v1/jobs`` (content type and query string
chosen by its extension, the body streamed from disk), the calls on jobs and their results,
following a job over ``GET /v1/jobs/{id}/live``, and turning error answers into ``ApiError``.
It does not print: the command line (``bulkjobs.cli``) does.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

Job = dict[str, Any]

DEFAULT_URL = "http://127.0.0.1:8080"
RESULTS_PAGE = 1000  # the API's largest limit
CHUNK = 64 * 1024
WS_UNAUTHORIZED = 1008  # the live socket's close codes for a refused key and an unknown job
WS_NOT_FOUND = 4404
STATUS_CODES = {401: "unauthorized", 404: "not_found"}  # for answers that carry no JSON error


@dataclass(frozen=True)
class ClientSettings:
    """Where the API is and the key to send."""

    url: str = DEFAULT_URL
    api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ClientSettings:
        return cls(url=env.get("BULKJOBS_URL") or DEFAULT_URL, api_key=env.get("BULKJOBS_API_KEY") or None)

    @property
    def base(self) -> str:
        # The README prints the API as http://host:port/v1: accept that form too.
        return self.url.rstrip("/").removesuffix("/v1")


class ApiError(Exception):
    """An error answer of the API, or a refusal on the live socket."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JobOptions:
    """Job settings given beside a file; the field names are the query parameter names."""

    type: str | None = None
    action: str | None = None
    description: str | None = None
    operation: str | None = None
    object_type: str | None = None
    job_type: str | None = None
    find_by: str | None = None
    field_mappings: str | None = None
    character_encoding: str | None = None
    dry_run: str | None = None  # "true": report what the job would do, change nothing (every form)

    def given(self) -> dict[str, str]:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Upload:
    """How one file is sent: its content type and query string."""

    path: Path
    content_type: str
    params: dict[str, str]


EVERY_FORM = frozenset({"dry_run"})  # a query parameter every form of a job takes
CSV_SETTINGS = frozenset({"description", "operation", "object_type", "job_type", "find_by", "field_mappings",
                          "character_encoding"}) | EVERY_FORM
RECORD_SETTINGS = frozenset({"type", "action", "description"}) | EVERY_FORM
NDJSON_SUFFIXES = (".ndjson", ".jsonl")


def plan_upload(path: Path, options: JobOptions) -> Upload:
    """Choose the content type and query string by the file's extension (and, for JSON, its first byte).

    Raises ``ValueError`` for an extension the API does not take, or a setting that the file's
    form cannot carry.
    """
    suffix = path.suffix.lower()
    given = options.given()
    if suffix == ".csv":
        _only(given, CSV_SETTINGS, "a CSV file")
        return Upload(path, "text/csv", {**given, "file_name": path.name})
    if suffix in NDJSON_SUFFIXES:
        _only(given, RECORD_SETTINGS, "an NDJSON file")
        return Upload(path, "application/x-ndjson", given)
    if suffix == ".json":
        if _first_byte(path) == b"[":
            _only(given, RECORD_SETTINGS, "a JSON array")
            return Upload(path, "application/json", given)
        # An envelope carries its own type, action and description; the API refuses a query then.
        _only(given, EVERY_FORM, "a JSON envelope (its type, action and description are in the file)")
        return Upload(path, "application/json", given)
    raise ValueError(f"{path.name}: send a .csv, .json, .ndjson or .jsonl file")


def _only(given: Mapping[str, str], allowed: frozenset[str], form: str) -> None:
    if extra := [name for name in given if name not in allowed]:
        options = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise ValueError(f"{options} cannot be used with {form}")


def _first_byte(path: Path) -> bytes:
    """The first byte that is not whitespace, read a chunk at a time; b"" for a blank file."""
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            if stripped := chunk.lstrip():
                return stripped[:1]
    return b""


class BulkJobsClient:
    """The API's calls, on one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, settings: ClientSettings) -> None:
        self._session = session
        self._settings = settings

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: ClientSettings) -> AsyncIterator[BulkJobsClient]:
        headers = {"x-api-key": settings.api_key} if settings.api_key else {}
        # No total timeout: the 202 of a large file comes only once Kafka holds every record.
        timeout = aiohttp.ClientTimeout(total=None, connect=30)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            yield cls(session, settings)

    def _url(self, path: str) -> str:
        return self._settings.base + path

    def _job_url(self, job_id: str, suffix: str = "") -> str:
        # The id comes from the user: quoted, it cannot reach another path.
        return self._url(f"/v1/jobs/{quote(job_id, safe='')}{suffix}")

    async def submit(self, upload: Upload) -> Job:
        """POST the file, streamed from disk; the job as the 202 gives it."""
        with upload.path.open("rb") as body:
            async with self._session.post(self._url("/v1/jobs"), data=body, params=upload.params,
                                          headers={"Content-Type": upload.content_type}) as resp:
                return await _json(resp)

    async def jobs(self, status: str | None = None, limit: int = 20) -> dict[str, Any]:
        params = {"limit": str(limit), **({"status": status} if status else {})}
        async with self._session.get(self._url("/v1/jobs"), params=params) as resp:
            return await _json(resp)

    async def job(self, job_id: str) -> Job:
        async with self._session.get(self._job_url(job_id)) as resp:
            return await _json(resp)

    async def cancel(self, job_id: str) -> Job:
        async with self._session.post(self._job_url(job_id, "/cancel")) as resp:
            return await _json(resp)

    async def retry(self, job_id: str, include_skipped: bool = False) -> Job:
        """A new job of the finished job's failed (and skipped) records, as the 202 gives it."""
        params = {"include": "skipped"} if include_skipped else {}
        async with self._session.post(self._job_url(job_id, "/retry"), params=params) as resp:
            return await _json(resp)

    async def results(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every result in record order, a page at a time."""
        offset = 0
        while True:
            params = {"offset": str(offset), "limit": str(RESULTS_PAGE)}
            async with self._session.get(self._job_url(job_id, "/results"), params=params) as resp:
                items = (await _json(resp))["items"]
            if not items:
                return
            for item in items:
                yield item
            offset = items[-1]["index"] + 1

    async def results_csv(self, job_id: str) -> AsyncIterator[bytes]:
        """A CSV job's rows with their outcome, as the API streams them."""
        async with self._session.get(self._job_url(job_id, "/results.csv")) as resp:
            await _raise_for_error(resp)
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk

    async def live(self, job_id: str) -> AsyncGenerator[Job, None]:
        """The job now and after each change, until the server closes the socket.

        The last job is terminal unless the connection broke; a refused key or an unknown job
        raises ``ApiError``.
        """
        try:
            ws = await self._session.ws_connect(self._job_url(job_id, "/live"), heartbeat=30)
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(exc.status, STATUS_CODES.get(exc.status, f"http_{exc.status}"),
                           f"cannot follow job {job_id}: {exc.message}") from exc
        async with ws:
            while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                yield orjson.loads(message.data)
        reason = message.extra if message.type is aiohttp.WSMsgType.CLOSE else None
        if ws.close_code == WS_UNAUTHORIZED:
            raise ApiError(401, "unauthorized", reason or "the API key was refused")
        if ws.close_code == WS_NOT_FOUND:
            raise ApiError(404, "not_found", reason or f"job {job_id!r} not found")


async def _json(resp: aiohttp.ClientResponse) -> Any:
    await _raise_for_error(resp)
    return orjson.loads(await resp.read())


async def _raise_for_error(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    raw = await resp.read()
    try:
        error = orjson.loads(raw)["error"]
        raise ApiError(resp.status, error["code"], error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        # Not the API's error shape, e.g. a proxy's page: report the HTTP status.
        raise ApiError(resp.status, STATUS_CODES.get(resp.status, f"http_{resp.status}"),
                       resp.reason or raw[:200].decode(errors="replace")) from None
