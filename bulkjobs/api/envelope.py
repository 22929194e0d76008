"""The members of a JSON envelope (a job's fields around its ``data`` array), read by a small
tokenizer as the body streams in.

The members are read until the ``data`` array begins, and again after it ends, so the keys may
come in any order. The members other than ``data`` and ``file_content`` may hold
``MAX_FIELDS_BYTES`` together, counted as they stream in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from bulkjobs.api.jsonbytes import STRING_BODY, WHITESPACE, invalid_json, skip
from bulkjobs.errors import BadRequest, InvalidJson, TooLarge

MAX_FIELDS_BYTES = 256 * 1024  # an envelope's members but data and file_content, together

_SCALAR = re.compile(rb"[^ \t\r\n,\]}]*")
_NESTED = re.compile(rb'["\[\]{}]')
VALUE_STARTS = b'"{[-0123456789tfn'
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
                self.pos = skip(WHITESPACE, self.buffer, self.pos)
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
        if byte not in VALUE_STARTS:
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
        end = skip(STRING_BODY, self.buffer, self.pos)
        if end < len(self.buffer) and self.buffer[end] == ord('"'):
            self.pos = end + 1
            return True
        self.pos = end  # at the end, or at a backslash that ends the bytes so far
        return False

    def _value_scanned(self) -> bool:
        """Move past the value that begins at ``value_start``; False when more bytes are needed."""
        buffer = self.buffer
        if buffer[self.value_start] not in b'"{[':  # a number or literal
            end = skip(_SCALAR, buffer, self.pos)
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
            raise invalid_json(exc) from None

    def _compact(self) -> None:
        """Let go of the bytes already read but for the member being read."""
        keep = self.member_start if self.state in (IN_KEY, COLON, VALUE, IN_VALUE) else self.pos
        if keep > 64 * 1024 and keep > len(self.buffer) // 2:
            del self.buffer[:keep]
            self.pos -= keep
            self.member_start -= keep
            self.value_start -= keep
