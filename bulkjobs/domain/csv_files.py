"""Reading CSV files as a stream: the character encoding, and cutting text into rows.

An upload is read in chunks of bytes and never held whole. ``EncodingSniffer`` watches the
chunks go by and names the encoding at the end; ``RowReader`` decodes chunks and returns the
complete rows they finish, so a quoted field may span lines and chunks.
"""

from __future__ import annotations

import codecs
import csv
import io

from bulkjobs.errors import BadRequest

# Encodings found by their byte order mark, longest mark first.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SNIFF_BYTES = 4  # enough for any mark above


def encoding_name(name: str) -> str:
    """The canonical name of an encoding a client gave; 400 when Python knows no such codec."""
    try:
        return codecs.lookup(name).name
    except (LookupError, TypeError):
        raise BadRequest(f"unknown character encoding {name!r}", field="character_encoding",
                         code="unknown_encoding") from None


class EncodingSniffer:
    """Finds the encoding of a file fed chunk by chunk: UTF-8 or UTF-16 by their byte order
    mark; otherwise UTF-8 if every byte decodes as UTF-8, else Windows-1252 if every byte has a
    character there, else Latin-1 (which decodes anything)."""

    def __init__(self) -> None:
        self._head = b""
        self._utf8: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()
        self._cp1252: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("cp1252")()

    def feed(self, data: bytes) -> None:
        if len(self._head) < _SNIFF_BYTES:
            self._head += data[: _SNIFF_BYTES - len(self._head)]
        self._utf8 = _still_decodes(self._utf8, data)
        if self._utf8 is None:
            self._cp1252 = _still_decodes(self._cp1252, data)

    def encoding(self) -> str:
        for bom, name in _BOMS:
            if self._head.startswith(bom):
                return name
        if _still_decodes(self._utf8, b"", final=True) is not None:
            return "utf-8"
        if _still_decodes(self._cp1252, b"", final=True) is not None:
            return "cp1252"
        return "iso8859-1"  # Latin-1


def _still_decodes(decoder: codecs.IncrementalDecoder | None, data: bytes,
                   final: bool = False) -> codecs.IncrementalDecoder | None:
    if decoder is None:
        return None
    try:
        decoder.decode(data, final)
    except UnicodeDecodeError:
        return None
    return decoder


class NotCsv(BadRequest):
    code = "not_csv"


class RowReader:
    """Decodes a CSV file's bytes and returns its rows as they complete.

    A row ends at a line break outside quotes: where the number of quote characters so far is
    even. Whole rows are then parsed by the ``csv`` module (RFC 4180: comma, double quote).
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._pending = ""

    def feed(self, data: bytes) -> list[list[str]]:
        text = self._pending + self._decode(data, final=False)
        cut = _row_boundary(text)
        self._pending = text[cut:]
        return _parse(text[:cut])

    def finish(self) -> list[list[str]]:
        text = self._pending + self._decode(b"", final=True)
        self._pending = ""
        if text.count('"') % 2:
            raise NotCsv("the file is not valid CSV: a quoted field is not closed")
        return _parse(text)

    def _decode(self, data: bytes, final: bool) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the file is not valid {self.encoding}: {exc.reason} at byte {exc.start} of a chunk",
                             field="character_encoding", code="invalid_encoding") from None
        if "\x00" in text:
            raise NotCsv("the file is not CSV: it holds NUL characters (a binary file, or the wrong encoding)")
        return text


def _row_boundary(text: str) -> int:
    """The end of the last complete row in ``text`` (0 if none)."""
    cut = text.rfind("\n")
    while cut >= 0 and text.count('"', 0, cut) % 2:  # that line break is inside a quoted field
        cut = text.rfind("\n", 0, cut)
    return cut + 1


def _parse(text: str) -> list[list[str]]:
    if not text:
        return []
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise NotCsv(f"the file is not valid CSV: {exc}") from None


def write_rows(rows: list[list[str]]) -> str:
    """Rows as CSV text (RFC 4180, CRLF line ends)."""
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()
