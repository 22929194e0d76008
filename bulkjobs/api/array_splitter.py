"""A JSON array cut into its elements as its bytes stream in: the records of a bare array or of
an envelope's ``data``.

A cut is a boundary found by a pattern and confirmed by parsing: it is accepted only when the
bytes before it parse as whole elements, which (starting from a known boundary) can only happen
at a real boundary. Usually every boundary the pattern of the first element finds is real, and
the bytes between them are parsed one element at a time: when each piece parses alone, the
pieces are the elements (joined by commas they make a valid array), and each one's text comes
with it, so that a batch embeds it without encoding the record again. Once a piece does not
parse, the splitter parses whole runs of elements instead. Every step is linear in the array's
size: each byte is searched by a few patterns, and a buffer that could not be split yet is
parsed again only once it has doubled. One element may hold ``MAX_ELEMENT_BYTES``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from bulkjobs.api.jsonbytes import STRING_BODY, WHITESPACE, invalid_json, skip
from bulkjobs.errors import InvalidJson, TooLarge

MAX_ELEMENT_BYTES = 8 * 1024 * 1024  # one record of a data array (and one NDJSON line, api.bodies)

# Where one element may end and the next begin: after an object or array first (the usual
# records), then after any string (arrays of ids).
_ELEMENT_CUTS = (re.compile(rb'[}\]]\s*(,)\s*[{\[]'), re.compile(rb'"\s*(,)\s*"'))
_CUT_TRIES = 4
_CUT_OVERLAP = 64  # a cut's pattern can begin this far before the bytes just fed
_STRUCTURE = re.compile(rb'["\[\]{},]')
_FIRST_KEY = re.compile(rb'\{\s*("[^"\\]{0,200}")\s*:')
_INCOMPLETE = "unexpected end of data"
_ENDED = "unexpected content after document"


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
    texts: list[bytes] | None = None  # each record's own JSON text, when it came alone (an NDJSON line)


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
        # Patterns of the boundaries between elements like the first one, most specific first,
        # while every boundary they found was real (``_split_elements``).
        self._element_cuts: list[re.Pattern[bytes]] = []
        self._element_scanned = 0  # bytes of the buffer searched by the first of them, found without one
        self._literal_learned = False
        self._retry_at = 0  # a buffer that no cut split is tried again at this length
        # Where the exact search for a boundary stopped (it follows strings and nesting).
        self._exact_pos, self._exact_depth, self._exact_in_string = 0, 0, False

    def feed(self, data: bytes) -> Chunk | None:
        if self.closed:
            self.rest += data
            return None
        self.buffer += data
        if lead := skip(WHITESPACE, self.buffer):  # between elements: nothing to keep
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
        if self._element_cuts and (chunk := self._split_elements()) is not None:
            return chunk
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
        start = skip(WHITESPACE, self.buffer)
        if start == len(self.buffer):
            return
        self._first_key_known = True
        first = self.buffer[start]
        if first != ord("{"):
            if first in b'"[':
                self._element_cuts.append(_ELEMENT_CUTS[first == ord('"')])
            return
        key = _FIRST_KEY.match(self.buffer, start)
        if key is None:
            self._first_key_known = len(self.buffer) - start > 1024  # a key that long is no signature
            if self._first_key_known:
                self._element_cuts.append(_ELEMENT_CUTS[0])
            return
        self._element_cuts.append(re.compile(rb"[}\]]\s*(,)\s*\{\s*" + re.escape(key.group(1)) + rb"\s*:"))
        self._patterns.insert(0, self._element_cuts[0])
        self._cuts.insert(0, deque(maxlen=_CUT_TRIES))
        self._scanned.insert(0, 0)

    def _split_elements(self) -> Chunk | None:
        """The elements before the last boundary the first element pattern finds, each parsed
        alone, or None when it finds none; when a piece between two of its boundaries does not
        parse alone, one of them was no boundary, and the pattern is not used again.

        The first boundaries found, all real, teach the bytes that join elements of this body
        (say ``},{"type":``): a pattern of just those bytes searches several times faster than
        one that allows any whitespace, and the general one takes over where it misses."""
        pattern = self._element_cuts[0]
        matches = list(pattern.finditer(self.buffer, max(0, self._element_scanned - _CUT_OVERLAP)))
        if not matches:
            self._element_scanned = len(self.buffer)
            return None
        cuts = [match.start(1) for match in matches]
        text = b"[" + self.buffer[: cuts[-1]] + b"]"
        starts = [1, *(cut + 2 for cut in cuts[:-1])]
        texts = [text[start:cut + 1] for start, cut in zip(starts, cuts, strict=True)]
        try:
            records = [orjson.loads(piece) for piece in texts]
        except orjson.JSONDecodeError:
            del self._element_cuts[0]
            self._element_scanned = 0
            return None
        if not self._literal_learned:
            self._literal_learned = True
            joint, comma = matches[-1].group(0), cuts[-1] - matches[-1].start()
            self._element_cuts.insert(0, re.compile(
                re.escape(joint[:comma]) + b"(,)" + re.escape(joint[comma + 1:])))
        self._take(cuts[-1] + 1)
        return Chunk(records, cuts[-1] + 1, text, texts)

    def _try_cut(self, cut: int) -> Chunk | None:
        text = b"[" + self.buffer[:cut] + b"]"
        try:
            records = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if exc.msg == _ENDED:  # the array closed before this cut
                return self._close(text, _byte_offset(exc, text))
            if exc.msg != _INCOMPLETE and (not exc.doc or exc.pos < len(exc.doc) - 1):
                raise invalid_json(exc) from None  # wrong before the cut, whatever follows
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
                raise invalid_json(exc) from None
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
                end = skip(STRING_BODY, buffer, pos)
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
        self._element_scanned = max(0, self._element_scanned - size)
        if self._exact_pos >= size:
            self._exact_pos -= size
        else:  # the cut is a boundary between elements: the search starts again from it
            self._exact_pos, self._exact_depth, self._exact_in_string = 0, 0, False

    def _check_size(self) -> None:
        if len(self.buffer) > self.max_element_bytes:
            raise TooLarge(f"an element of the data array is larger than the limit of {self.max_element_bytes} "
                           "bytes (or a string in it is not closed)", limit=self.max_element_bytes,
                           code="element_too_large")
