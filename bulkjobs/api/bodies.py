"""Incremental parsing of job bodies: a JSON envelope, a bare JSON array, or NDJSON.

Records come out in chunks of parsed objects while the body streams in, so memory does not
grow with the body. Parsing runs in a thread (with the garbage collector paused for it), so
that the event loop keeps answering other requests during a large upload. Every step is linear
in the body's size, whatever the body. An envelope's members are read by ``api.envelope``, and a
JSON array is cut into its elements by ``api.array_splitter``; an NDJSON line may hold
``MAX_ELEMENT_BYTES``, like an element of an array.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from bulkjobs.api.array_splitter import MAX_ELEMENT_BYTES, ArraySplitter, Chunk
from bulkjobs.api.envelope import VALUE_STARTS, Envelope
from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest, InvalidJson, TooLarge
from bulkjobs.gcpause import without_gc

ReadChunk = Callable[[], Awaitable[bytes]]  # b"" at the end of the body

_INLINE_BYTES = 16 * 1024  # a smaller piece parses faster than a hop to a thread and back

T = TypeVar("T")


async def _off_loop(size: int, parse: Callable[..., T], *args: Any) -> T:
    """Parse ``size`` bytes in a thread when that could hold the event loop noticeably."""
    if size < _INLINE_BYTES:
        return without_gc(parse, *args)
    return await asyncio.to_thread(without_gc, parse, *args)


@dataclass
class ParsedBody:
    """Job fields found in the body (envelope keys) and the stream of record chunks.

    The fields of an envelope whose members come after its ``data`` are complete only once the
    chunks are drained."""

    fields: dict[str, Any]
    chunks: AsyncIterator[Chunk]
    envelope: bool  # the fields come from the body (else from the request's query)
    has_data: bool  # records stream (a bare array, NDJSON, or an envelope's data array)


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
    """The elements of the array, up to its closing bracket (what follows is ``splitter.rest``)."""
    data = first  # may be empty when a read ended right after the array's "["
    while True:
        if data:
            chunk = await _off_loop(len(data), splitter.feed, data)
            if chunk is not None and chunk.records:
                yield chunk
            if splitter.closed:
                return
        data = await reader.read()
        if not data:
            chunk = await _off_loop(len(splitter.buffer), splitter.finish)
            if chunk.records:
                yield chunk
            return


async def parse_json(reader: BodyReader) -> ParsedBody:
    """A JSON body: an envelope object whose ``data`` array streams, or a bare array."""
    head = b""
    while not head:  # whitespace before the body is dropped as it comes
        data = await reader.read()
        if not data:
            raise BadRequest("the body is empty")
        head = data.lstrip()
    if head[:1] == b"[":
        return ParsedBody({}, _bare_array_chunks(reader, head[1:]), envelope=False, has_data=True)
    if head[:1] != b"{":
        if head[:1] in VALUE_STARTS:
            raise BadRequest("the body must be a JSON object with type, action and data")
        raise InvalidJson("the body is not valid JSON: a JSON object or array was expected")
    envelope = Envelope()
    data = head
    while True:
        if await _off_loop(len(data), envelope.feed, data) == Envelope.DATA_BEGINS:
            chunks = _envelope_chunks(reader, envelope, envelope.take_rest())
            return ParsedBody(envelope.fields, chunks, envelope=True, has_data=True)
        data = await reader.read()
        if not data:
            envelope.finish()
            return ParsedBody(envelope.fields, _no_chunks(), envelope=True, has_data=False)


async def _no_chunks() -> AsyncIterator[Chunk]:
    return
    yield  # an async generator that yields nothing


async def _bare_array_chunks(reader: BodyReader, first: bytes) -> AsyncIterator[Chunk]:
    splitter = ArraySplitter()
    async for chunk in _array_chunks(reader, splitter, first):
        yield chunk
    data = bytes(splitter.rest)
    while True:
        if data.strip():
            raise InvalidJson("the body is not valid JSON: unexpected data after the array")
        if not (data := await reader.read()):
            return


async def _envelope_chunks(reader: BodyReader, envelope: Envelope, first: bytes) -> AsyncIterator[Chunk]:
    splitter = ArraySplitter()
    async for chunk in _array_chunks(reader, splitter, first):
        yield chunk
    data = bytes(splitter.rest)  # the envelope's members after the data array
    while True:
        if data and await _off_loop(len(data), envelope.feed, data) == Envelope.DATA_BEGINS:
            raise BadRequest("'data' must be one non-empty list of records", field="data")
        if not (data := await reader.read()):
            break
    envelope.finish()


async def parse_ndjson(reader: BodyReader) -> ParsedBody:
    """NDJSON: one record per line. A line that is not JSON is a bad record, not a bad body."""

    async def chunks() -> AsyncIterator[Chunk]:
        pending = bytearray()
        while True:
            data = await reader.read()
            if data:
                cut = data.rfind(b"\n")
                if cut < 0:
                    pending += data
                    if len(pending) > MAX_ELEMENT_BYTES:
                        raise TooLarge(f"an NDJSON line is longer than the limit of {MAX_ELEMENT_BYTES} bytes",
                                       limit=MAX_ELEMENT_BYTES, code="element_too_large")
                    continue
                lines = bytes(pending) + data[:cut]
                pending = bytearray(data[cut + 1 :])
            else:
                lines, pending = bytes(pending), bytearray()
            records, texts = await _off_loop(len(lines), _ndjson_records, lines)
            if records:
                yield Chunk(records, len(lines) + 1, texts=texts)
            if not data:
                return

    return ParsedBody({}, chunks(), envelope=False, has_data=True)


def _ndjson_records(lines: bytes) -> tuple[list[Any], list[bytes]]:
    """The records of the lines that are not blank, and those lines (the records' texts)."""
    texts = [line for line in lines.split(b"\n") if line.strip()]
    return [_ndjson_record(line) for line in texts], texts


def _ndjson_record(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refused("line is not valid JSON: " + line[:200].decode("utf-8", "replace"))
