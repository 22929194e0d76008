"""Incremental parsing of job bodies: a JSON envelope, a bare JSON array, or NDJSON.

Records come out in chunks of parsed objects while the body streams in, so memory does not
grow with the body. Parsing runs in a thread, so that the event loop keeps answering other
requests during a large upload. A JSON array is cut at element boundaries found by a pattern and confirmed
by parsing: a cut is accepted only when the bytes before it parse as whole elements, which
(starting from a known boundary) can only happen at a real boundary.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import orjson

from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest, InvalidJson, TooLarge

ReadChunk = Callable[[], Awaitable[bytes]]  # b"" at the end of the body

# Where one element may end and the next begin: after an object or array first (the usual
# records), then after any string (arrays of ids).
_ELEMENT_CUTS = (re.compile(rb'[}\]]\s*(,)\s*[{\[]'), re.compile(rb'"\s*(,)\s*"'))
_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_CUT_WINDOW = 256 * 1024
_CUT_TRIES = 4
_MAX_ENVELOPE_PREFIX = 1024 * 1024


_INLINE_BYTES = 16 * 1024  # a smaller piece parses faster than a hop to a thread and back

T = TypeVar("T")


async def _off_loop(size: int, parse: Callable[..., T], *args: Any) -> T:
    """Parse ``size`` bytes in a thread when that could hold the event loop noticeably."""
    if size < _INLINE_BYTES:
        return parse(*args)
    return await asyncio.to_thread(parse, *args)


@dataclass
class Chunk:
    records: list[Any]
    size: int  # bytes of body these records came from


class ArraySplitter:
    """Fed the bytes after a JSON array's ``[``; returns its elements as they become complete."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.rest = b""  # what follows the array's closing bracket, once finished

    def feed(self, data: bytes) -> Chunk | None:
        self.buffer += data
        start = max(0, len(self.buffer) - _CUT_WINDOW)
        for pattern in _ELEMENT_CUTS:
            cuts = [m.start(1) for m in pattern.finditer(self.buffer, start)]
            for cut in reversed(cuts[-_CUT_TRIES:]):
                try:
                    records = orjson.loads(b"[" + self.buffer[:cut] + b"]")
                except orjson.JSONDecodeError:
                    continue
                del self.buffer[: cut + 1]
                return Chunk(records, cut + 1)
        return None

    def finish(self) -> Chunk:
        """The body has ended: parse what is left up to the array's closing bracket."""
        data = bytes(self.buffer)
        end = len(data)
        while (end := data.rfind(b"]", 0, end)) >= 0:
            try:
                records = orjson.loads(b"[" + data[:end] + b"]")
            except orjson.JSONDecodeError:
                continue
            self.rest = data[end + 1 :]
            return Chunk(records, end + 1)
        raise InvalidJson("the body is not valid JSON: the data array is not closed")


@dataclass
class ParsedBody:
    """Job fields found in the body (envelope keys) and the stream of record chunks."""

    fields: dict[str, Any]
    chunks: AsyncIterator[Chunk]


def _envelope_fields(text: bytes) -> dict[str, Any]:
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise BadRequest("the body must be a JSON object with type, action and data")
    return fields


class BodyReader:
    """Reads a body through ``read_chunk`` and enforces the size limit while doing so."""

    def __init__(self, read_chunk: ReadChunk, max_bytes: int) -> None:
        self._read_chunk = read_chunk
        self.max_bytes = max_bytes
        self.bytes_read = 0

    async def read(self) -> bytes:
        data = await self._read_chunk()
        self.bytes_read += len(data)
        if self.bytes_read > self.max_bytes:
            raise TooLarge(f"the body is larger than the limit of {self.max_bytes} bytes",
                           limit=self.max_bytes)
        return data


async def _array_chunks(reader: BodyReader, splitter: ArraySplitter, first: bytes) -> AsyncIterator[Chunk]:
    data = first  # may be empty when a read ended right after the array's "["
    while True:
        if data:
            chunk = await _off_loop(len(data), splitter.feed, data)
            if chunk is not None:
                yield chunk
        data = await reader.read()
        if not data:
            break
    yield splitter.finish()


async def parse_json(reader: BodyReader) -> ParsedBody:
    """A JSON body: an envelope object whose ``data`` array streams, or a bare array."""
    head = b""
    while not head.strip():
        data = await reader.read()
        if not data:
            raise BadRequest("the body is empty")
        head += data
    if head.lstrip()[:1] == b"[":
        stripped = head.lstrip()
        splitter = ArraySplitter()
        return ParsedBody({}, _bare_array_chunks(reader, splitter, stripped[1:]))
    while True:
        for match in _DATA_KEY.finditer(head):
            prefix = head[: match.start()]
            if prefix.rstrip()[-1:] not in (b"{", b","):
                continue  # inside a string or a key, not a key of the envelope
            try:
                fields = orjson.loads(prefix + b'"_":0}')
            except orjson.JSONDecodeError:
                continue
            if isinstance(fields, dict):
                fields.pop("_")
                splitter = ArraySplitter()
                return ParsedBody(fields, _envelope_chunks(reader, splitter, head[match.end() :], fields))
        data = await reader.read()
        if not data or len(head) > _MAX_ENVELOPE_PREFIX:
            while data:  # no streamable data array: the whole body is small or malformed
                head += data
                data = await reader.read()
            fields = _envelope_fields(head)
            records = fields.pop("data", [])  # none: an export, or a CSV's file_content (api.app decides)
            if not isinstance(records, list):
                raise BadRequest("'data' must be a non-empty list of records", field="data")
            return ParsedBody(fields, _one_chunk(Chunk(records, len(head))))
        head += data


async def _one_chunk(chunk: Chunk) -> AsyncIterator[Chunk]:
    yield chunk


async def _bare_array_chunks(reader: BodyReader, splitter: ArraySplitter, first: bytes) -> AsyncIterator[Chunk]:
    async for chunk in _array_chunks(reader, splitter, first):
        yield chunk
    if splitter.rest.strip():
        raise InvalidJson("the body is not valid JSON: unexpected data after the array")


async def _envelope_chunks(
    reader: BodyReader, splitter: ArraySplitter, first: bytes, fields: dict[str, Any]
) -> AsyncIterator[Chunk]:
    async for chunk in _array_chunks(reader, splitter, first):
        yield chunk
    # Keys after the data array: only the closing brace or more envelope keys may follow.
    fields.update(_envelope_fields(b'{"_":0' + splitter.rest))
    fields.pop("_")


async def parse_ndjson(reader: BodyReader) -> ParsedBody:
    """NDJSON: one record per line. A line that is not JSON is a bad record, not a bad body."""

    async def chunks() -> AsyncIterator[Chunk]:
        pending = b""
        while True:
            data = await reader.read()
            if data:
                pending += data
                cut = pending.rfind(b"\n")
                if cut < 0:
                    continue
                lines, pending = pending[:cut], pending[cut + 1 :]
            else:
                lines, pending = pending, b""
            records = await _off_loop(len(lines), _ndjson_records, lines)
            if records:
                yield Chunk(records, len(lines) + 1)
            if not data:
                return

    return ParsedBody({}, chunks())


def _ndjson_records(lines: bytes) -> list[Any]:
    return [_ndjson_record(line) for line in lines.split(b"\n") if line.strip()]


def _ndjson_record(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refused("line is not valid JSON: " + line[:200].decode("utf-8", "replace"))
