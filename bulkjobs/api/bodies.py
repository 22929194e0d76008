"""Incremental parsing of job bodies: a JSON envelope, a bare JSON array, or NDJSON.

Records come out in chunks of parsed objects while the body streams in, so memory does not
grow with the body. Parsing runs in a thread (with the garbage collector paused for it), so
that the event loop keeps answering other requests during a large upload. Every step is linear
in the body's size, whatever the body: each byte is searched once, and a buffer that could not
be split yet is parsed again only once it has doubled.

- An envelope's members are read by a small tokenizer until its ``data`` array begins, and
  again after the array ends, so its keys may come in any order. The members other than
  ``data`` and ``file_content`` may hold ``MAX_FIELDS_BYTES`` together.
- A JSON array is cut at element boundaries found by a pattern and confirmed by parsing: a cut
  is accepted only when the bytes before it parse as whole elements, which (starting from a
  known boundary) can only happen at a real boundary. One element may hold
  ``MAX_ELEMENT_BYTES``, and so may one NDJSON line.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest, InvalidJson, TooLarge
from bulkjobs.gcpause import without_gc

ReadChunk = Callable[[], Awaitable[bytes]]  # b"" at the end of the body

MAX_ELEMENT_BYTES = 8 * 1024 * 1024  # one record of a data array, or one NDJSON line
MAX_FIELDS_BYTES = 256 * 1024  # an envelope's members but data and file_content, together

# Where one element may end and the next begin: after an object or array first (the usual
# records), then after any string (arrays of ids).
_ELEMENT_CUTS = (re.compile(rb'[}\]]\s*(,)\s*[{\[]'), re.compile(rb'"\s*(,)\s*"'))
_CUT_TRIES = 4
_CUT_OVERLAP = 64  # a cut's pattern can begin this far before the bytes just fed
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)  # stops at the closing quote or a lone \ at the end
_STRUCTURE = re.compile(rb'["\[\]{},]')
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_FIRST_KEY = re.compile(rb'\{\s*("[^"\\]{0,200}")\s*:')
_INCOMPLETE = "unexpected end of data"
_ENDED = "unexpected content after document"

_INLINE_BYTES = 16 * 1024  # a smaller piece parses faster than a hop to a thread and back

T = TypeVar("T")


async def _off_loop(size: int, parse: Callable[..., T], *args: Any) -> T:
    """Parse ``size`` bytes in a thread when that could hold the event loop noticeably."""
    if size < _INLINE_BYTES:
        return without_gc(parse, *args)
    return await asyncio.to_thread(without_gc, parse, *args)


def _skip(pattern: re.Pattern[bytes], data: bytes | bytearray, pos: int = 0) -> int:
    """Where ``pattern``, which matches nothing too, stops matching from ``pos``."""
    match = pattern.match(data, pos)
    return match.end() if match else pos


def _invalid(exc: orjson.JSONDecodeError) -> InvalidJson:
    return InvalidJson(f"the body is not valid JSON: {exc.msg}")


def _byte_offset(exc: orjson.JSONDecodeError, text: bytes) -> int:
    """The byte of ``text`` where the error lies (orjson counts characters)."""
    if len(exc.doc) == len(text):
        return exc.pos
    return len(exc.doc[: exc.pos].encode())


def _complete_utf8(data: bytes | bytearray) -> int:
    """The length of ``data`` without a character its last bytes only begin."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        if data[end - back] < 0x80:
            return end - back + 1
        if data[end - back] >= 0xC0:  # the first byte of the last character
            return end - back
    return end


@dataclass
class Chunk:
    records: list[Any]
    size: int  # bytes of body these records came from
    raw: bytes | None = None  # a JSON array of exactly these records, when they came from one


class ArraySplitter:
    """Fed the bytes after a JSON array's ``[``; returns its elements as they become complete.

    Once the array's closing bracket is found, ``closed`` is set and what follows it is kept in
    ``rest``, and later feeds only add to ``rest``.
    """

    def __init__(self, max_element_bytes: int = MAX_ELEMENT_BYTES) -> None:
        self.max_element_bytes = max_element_bytes
        self.buffer = bytearray()
        self.closed = False
        self.rest = bytearray()
        self._patterns = list(_ELEMENT_CUTS)
        self._cuts: list[deque[int]] = [deque(maxlen=_CUT_TRIES) for _ in self._patterns]  # the last candidates
        self._scanned = [0] * len(self._patterns)  # bytes of the buffer searched for each pattern
        self._first_key_known = False
        self._retry_at = 0  # a buffer that no cut split is tried again at this length
        # Where the exact search for a boundary stopped (it follows strings and nesting).
        self._exact_pos, self._exact_depth, self._exact_in_string = 0, 0, False

    def feed(self, data: bytes) -> Chunk | None:
        if self.closed:
            self.rest += data
            return None
        self.buffer += data
        if lead := _skip(_WHITESPACE, self.buffer):  # between elements: nothing to keep
            self._take(lead)
        if not self._first_key_known:
            self._learn_first_key()
        if len(self.buffer) < self._retry_at:
            self._check_size()
            return None
        chunk = self._split()
        if chunk is None:
            self._retry_at = 2 * len(self.buffer)
            self._check_size()
        else:
            self._retry_at = 0
        return chunk

    def finish(self) -> Chunk:
        """The body has ended: the elements left, up to the array's closing bracket."""
        if self.closed:
            return Chunk([], 0, b"[]")
        chunk = self._end_or_wait()
        if chunk is None:
            raise InvalidJson("the body is not valid JSON: the data array is not closed")
        return chunk

    def _split(self) -> Chunk | None:
        """The elements before the last boundary that parses, or None: try the last few
        candidates of each pattern; else see whether the array has ended or gone wrong; else
        search for a boundary exactly."""
        for number, pattern in enumerate(self._patterns):
            cuts = self._cuts[number]
            start = max(0, self._scanned[number] - _CUT_OVERLAP)
            last = cuts[-1] if cuts else -1
            cuts.extend(cut for match in pattern.finditer(self.buffer, start) if (cut := match.start(1)) > last)
            self._scanned[number] = len(self.buffer)
            for cut in reversed(cuts):
                chunk = self._try_cut(cut)
                if chunk is not None:
                    return chunk
        chunk = self._end_or_wait()
        if chunk is not None:
            return chunk
        exact = self._exact_cut()
        return self._try_cut(exact) if exact is not None else None

    def _learn_first_key(self) -> None:
        """Records of one job tend to begin alike: a boundary followed by the first record's
        first key is the likeliest, even where records hold nested lists of objects."""
        start = _skip(_WHITESPACE, self.buffer)
        if start == len(self.buffer):
            return
        self._first_key_known = True
        if self.buffer[start] != ord("{"):
            return
        key = _FIRST_KEY.match(self.buffer, start)
        if key is None:
            self._first_key_known = len(self.buffer) - start > 1024  # a key that long is no signature
            return
        self._patterns.insert(0, re.compile(rb"[}\]]\s*(,)\s*\{\s*" + re.escape(key.group(1)) + rb"\s*:"))
        self._cuts.insert(0, deque(maxlen=_CUT_TRIES))
        self._scanned.insert(0, 0)

    def _try_cut(self, cut: int) -> Chunk | None:
        text = b"[" + self.buffer[:cut] + b"]"
        try:
            records = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if exc.msg == _ENDED:  # the array closed before this cut
                return self._close(text, _byte_offset(exc, text))
            if exc.msg != _INCOMPLETE and (not exc.doc or exc.pos < len(exc.doc) - 1):
                raise _invalid(exc) from None  # wrong before the cut, whatever follows
            return None  # not a boundary: inside a string or a nested value
        self._take(cut + 1)
        return Chunk(records, cut + 1, text)

    def _end_or_wait(self) -> Chunk | None:
        """No cut parsed: the array may have ended, be wrong, or need more bytes."""
        text = b"[" + self.buffer[: _complete_utf8(self.buffer)]
        try:
            records = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if exc.msg == _ENDED:
                return self._close(text, _byte_offset(exc, text))
            if exc.msg != _INCOMPLETE:
                raise _invalid(exc) from None
            return None
        return self._close(text, len(text), records)

    def _close(self, text: bytes, end: int, records: list[Any] | None = None) -> Chunk:
        """The array ends before byte ``end`` of ``text`` (the buffer after a ``[``)."""
        if records is None:
            text = text[:end]
            records = orjson.loads(text)
        self.closed = True
        self.rest = self.buffer[end - 1 :]
        self.buffer = bytearray()
        return Chunk(records, end - 1, text)

    def _exact_cut(self) -> int | None:
        """The last comma between elements in the bytes not searched yet, found by following
        strings and nesting: slower than the patterns (a step per string, bracket and comma),
        so only for a buffer that they could not split."""
        buffer = self.buffer
        pos, depth, in_string = self._exact_pos, self._exact_depth, self._exact_in_string
        last = None
        while True:
            if in_string:
                end = _skip(_STRING_BODY, buffer, pos)
                if end >= len(buffer) or buffer[end] != ord('"'):
                    pos = end
                    break
                pos, in_string = end + 1, False
                continue
            match = _STRUCTURE.search(buffer, pos)
            if match is None:
                pos = len(buffer)
                break
            byte = buffer[match.start()]
            if byte in b"]}" and depth == 0:
                pos = match.start()  # the array ends here: _end_or_wait finds it
                break
            pos = match.end()
            if byte == ord('"'):
                in_string = True
            elif byte in b"[{":
                depth += 1
            elif byte in b"]}":
                depth -= 1
            elif depth == 0:
                last = match.start()
        self._exact_pos, self._exact_depth, self._exact_in_string = pos, depth, in_string
        return last

    def _take(self, size: int) -> None:
        del self.buffer[:size]
        for number, cuts in enumerate(self._cuts):
            kept = [cut - size for cut in cuts if cut >= size]
            cuts.clear()
            cuts.extend(kept)
            self._scanned[number] = max(0, self._scanned[number] - size)
        if self._exact_pos >= size:
            self._exact_pos -= size
        else:  # the cut is a boundary between elements: the search starts again from it
            self._exact_pos, self._exact_depth, self._exact_in_string = 0, 0, False

    def _check_size(self) -> None:
        if len(self.buffer) > self.max_element_bytes:
            raise TooLarge(f"an element of the data array is larger than the limit of {self.max_element_bytes} "
                           "bytes (or a string in it is not closed)", limit=self.max_element_bytes,
                           code="element_too_large")


# --- the envelope -----------------------------------------------------------------------------

_SCALAR = re.compile(rb"[^ \t\r\n,\]}]*")
_NESTED = re.compile(rb'["\[\]{}]')
_VALUE_STARTS = b'"{[-0123456789tfn'
_STREAMED = ("data",)  # members whose value is an array that streams
_UNBOUNDED = ("data", "file_content")  # members outside MAX_FIELDS_BYTES (data streams; a CSV's text)

# Where the envelope tokenizer is: before "{", before a key (or "}" for an empty object), in a
# key, before ":", before a value, in a value, before "," or "}", after "}".
OPEN, KEY, IN_KEY, COLON, VALUE, IN_VALUE, NEXT, END = range(8)
_WAIT = "wait"  # a step needs more bytes


class Envelope:
    """The members of a JSON object body, read as the body streams in.

    ``feed`` returns ``DATA_BEGINS`` when the ``data`` array begins (``take_rest`` then gives
    the bytes after its ``[``; feed what follows its ``]`` back in), else None. ``finish``
    checks that the object was closed.
    """

    DATA_BEGINS = "data"

    def __init__(self, max_fields_bytes: int = MAX_FIELDS_BYTES) -> None:
        self.max_fields_bytes = max_fields_bytes
        self.fields: dict[str, Any] = {}
        self.buffer = bytearray()
        self.pos = 0
        self.state = OPEN
        self.first = True  # no member yet: "}" may close the object
        self.key = ""
        self.member_start = 0  # where the current member began (its key's quote)
        self.value_start = 0
        self.depth = 0  # of a nested value
        self.in_string = False  # within a string of a value
        self.used = 0  # bytes of the members counted against the limit
        self.seen_data = False

    def feed(self, data: bytes | bytearray) -> str | None:
        self.buffer += data
        event = self._scan()
        self._compact()
        return event

    def take_rest(self) -> bytes:
        rest = bytes(self.buffer[self.pos :])
        self.buffer = bytearray()
        self.pos = 0
        self.state = NEXT
        return rest

    def finish(self) -> None:
        if self.state == IN_VALUE and self.depth == 0 and not self.in_string:
            self._value_ends(len(self.buffer))  # a number or literal ends with the body
            self.state = NEXT
        if self.state != END:
            raise InvalidJson("the body is not valid JSON: the object is not closed")

    def _scan(self) -> str | None:
        """Step through the buffer until more bytes are needed (None) or the data array begins."""
        while True:
            if self.state not in (IN_KEY, IN_VALUE):  # between tokens: whitespace is skipped
                self.pos = _skip(_WHITESPACE, self.buffer, self.pos)
                if self.pos >= len(self.buffer):
                    return None
            event = self._STEPS[self.state](self)
            if event is not None:
                return event if event == self.DATA_BEGINS else None

    # One step per state: it moves on (None), waits for more bytes (_WAIT), or reports that the
    # data array begins. The states between tokens start at a byte that is not whitespace.

    def _open(self) -> str | None:
        if self.buffer[self.pos] != ord("{"):
            raise InvalidJson("the body is not valid JSON: a JSON object or array was expected")
        self.pos += 1
        self.state = KEY
        return None

    def _before_key(self) -> str | None:
        byte = self.buffer[self.pos]
        if byte == ord("}") and self.first:
            self.pos += 1
            self.state = END
        elif byte == ord('"'):
            self.member_start = self.pos
            self.pos += 1
            self.state = IN_KEY
        else:
            raise InvalidJson("the body is not valid JSON: a key was expected")
        return None

    def _in_key(self) -> str | None:
        if not self._string_ends():
            self._count_partial()
            return _WAIT
        self.key = self._decode(self.member_start, self.pos)
        self.state = COLON
        return None

    def _colon(self) -> str | None:
        if self.buffer[self.pos] != ord(":"):
            raise InvalidJson("the body is not valid JSON: ':' was expected after a key")
        self.pos += 1
        self.state = VALUE
        return None

    def _before_value(self) -> str | None:
        byte = self.buffer[self.pos]
        if byte not in _VALUE_STARTS:
            raise InvalidJson("the body is not valid JSON: a value was expected")
        if self.key in _STREAMED:
            if byte != ord("[") or self.seen_data:
                raise BadRequest("'data' must be one non-empty list of records", field="data")
            self.seen_data = True
            self.pos += 1
            self.first = False
            return self.DATA_BEGINS
        self.value_start = self.pos
        self.depth = 0
        self.in_string = False
        self.state = IN_VALUE
        return None

    def _in_value(self) -> str | None:
        if not self._value_scanned():
            self._count_partial()
            return _WAIT
        self._value_ends(self.pos)
        self.state = NEXT
        return None

    def _next(self) -> str | None:
        byte = self.buffer[self.pos]
        if byte == ord(","):
            self.pos += 1
            self.first = False
            self.state = KEY
        elif byte == ord("}"):
            self.pos += 1
            self.state = END
        else:
            raise InvalidJson("the body is not valid JSON: ',' or '}' was expected")
        return None

    def _end(self) -> str | None:
        raise InvalidJson("the body is not valid JSON: unexpected data after the object")  # only whitespace may follow

    _STEPS: dict[int, Callable[[Envelope], str | None]] = {
        OPEN: _open, KEY: _before_key, IN_KEY: _in_key, COLON: _colon, VALUE: _before_value, IN_VALUE: _in_value,
        NEXT: _next, END: _end,
    }

    def _string_ends(self) -> bool:
        """Within a string: move past its closing quote (True), or to where more bytes are needed."""
        end = _skip(_STRING_BODY, self.buffer, self.pos)
        if end < len(self.buffer) and self.buffer[end] == ord('"'):
            self.pos = end + 1
            return True
        self.pos = end  # at the end, or at a backslash that ends the bytes so far
        return False

    def _value_scanned(self) -> bool:
        """Move past the value that begins at ``value_start``; False when more bytes are needed."""
        buffer = self.buffer
        if buffer[self.value_start] not in b'"{[':  # a number or literal
            end = _skip(_SCALAR, buffer, self.pos)
            self.pos = end
            return end < len(buffer)
        while True:
            if self.in_string:
                if not self._string_ends():
                    return False
                self.in_string = False
                if self.depth == 0:
                    return True
                continue
            if self.pos == self.value_start:  # the value's first byte: a string or a container
                match = _NESTED.match(buffer, self.pos)
            else:
                match = _NESTED.search(buffer, self.pos)
            if match is None:
                self.pos = len(buffer)
                return False
            byte = buffer[match.start()]
            self.pos = match.end()
            if byte == ord('"'):
                self.in_string = True
            elif byte in b"[{":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    return True

    def _value_ends(self, end: int) -> None:
        self.fields[self.key] = self._decode(self.value_start, end)
        if self.key not in _UNBOUNDED:
            self.used += end - self.member_start
            self._check_used(0)

    def _count_partial(self) -> None:
        """A member not read to its end yet must fit the limit too, as it streams in."""
        if self.state == IN_KEY or self.key not in _UNBOUNDED:
            self._check_used(len(self.buffer) - self.member_start)

    def _check_used(self, partial: int) -> None:
        if self.used + partial > self.max_fields_bytes:
            raise TooLarge(f"the job's fields other than data and file_content are larger than the limit of "
                           f"{self.max_fields_bytes} bytes", limit=self.max_fields_bytes, code="fields_too_large")

    def _decode(self, start: int, end: int) -> Any:
        try:
            return orjson.loads(bytes(self.buffer[start:end]))
        except orjson.JSONDecodeError as exc:
            raise _invalid(exc) from None

    def _compact(self) -> None:
        """Let go of the bytes already read but for the member being read."""
        keep = self.member_start if self.state in (IN_KEY, COLON, VALUE, IN_VALUE) else self.pos
        if keep > 64 * 1024 and keep > len(self.buffer) // 2:
            del self.buffer[:keep]
            self.pos -= keep
            self.member_start -= keep
            self.value_start -= keep


# --- bodies -----------------------------------------------------------------------------------


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
        if head[:1] in _VALUE_STARTS:
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
            records = await _off_loop(len(lines), _ndjson_records, lines)
            if records:
                yield Chunk(records, len(lines) + 1)
            if not data:
                return

    return ParsedBody({}, chunks(), envelope=False, has_data=True)


def _ndjson_records(lines: bytes) -> list[Any]:
    return [_ndjson_record(line) for line in lines.split(b"\n") if line.strip()]


def _ndjson_record(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refused("line is not valid JSON: " + line[:200].decode("utf-8", "replace"))
