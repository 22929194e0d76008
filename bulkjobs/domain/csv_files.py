"""Reading CSV files as a stream: the character encoding, and cutting text into rows.

An upload is read in chunks of bytes and never held whole. ``EncodingSniffer`` watches the
chunks go by and names the encoding at the end; ``RowReader`` decodes chunks and returns the
complete rows they finish, so a quoted field may span lines and chunks.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator

from bulkjobs.errors import BadRequest, TooLarge

# Encodings found by their byte order mark, longest mark first.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SNIFF_BYTES = 4  # enough for any mark above
# One row at most: an unfinished row is held whole, and a record that large could not travel anyway
# (a batch message is capped well under 1 MB).
MAX_ROW_CHARS = 1024 * 1024
MAX_ENCODING_CHARS = 64
# Text codecs refused for files: domain-name labels, one that refuses everything, and UTF-7, whose
# incremental decoder decodes an unclosed base64 run again with every chunk (quadratic).
_NOT_FOR_FILES = frozenset({"punycode", "idna", "undefined", "utf-7"})


def encoding_name(name: str) -> str:
    """The canonical name of a text encoding a client gave; 400 when Python knows no such codec,
    or when the codec does not turn bytes into text (base64, zlib, rot13...)."""
    if len(name) > MAX_ENCODING_CHARS:
        raise BadRequest(f"'character_encoding' is longer than {MAX_ENCODING_CHARS} characters",
                         field="character_encoding", code="unknown_encoding")
    try:
        codec = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        raise BadRequest(f"unknown character encoding {name!r}", field="character_encoding",
                         code="unknown_encoding") from None
    if not codec._is_text_encoding or codec.name in _NOT_FOR_FILES:  # type: ignore[attr-defined]
        raise BadRequest(f"{name!r} is not a character encoding of text files", field="character_encoding",
                         code="unknown_encoding")
    return codec.name


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
    even. The reader keeps that parity as it goes, so each character is looked at a bounded
    number of times however long a quoted field runs. Whole rows are then parsed by the
    ``csv`` module (RFC 4180: comma, double quote). A row longer than ``max_row_chars`` is
    refused: the text of an unfinished row is held in memory until it ends.
    """

    def __init__(self, encoding: str, max_row_chars: int = MAX_ROW_CHARS) -> None:
        self.encoding = encoding
        self.max_row_chars = max_row_chars
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._pending: list[str] = []  # the text of the row not finished yet, in pieces
        self._pending_chars = 0
        self._in_quotes = False  # whether the text read so far ends inside a quoted field

    def feed(self, data: bytes) -> list[list[str]]:
        return _parse(self._complete(data))

    def finish(self) -> list[list[str]]:
        return _parse(self._rest())

    def feed_texts(self, data: bytes) -> list[tuple[list[str], str]]:
        """As ``feed``, each row with its own text (line break included); a blank line is an
        empty row here, so that the texts cover every character read."""
        return _row_texts(self._complete(data))

    def finish_texts(self) -> list[tuple[list[str], str]]:
        return _row_texts(self._rest())

    def _complete(self, data: bytes) -> str:
        """The text of the rows ``data`` completes; the rest is held."""
        text = self._decode(data, final=False)
        cut = _row_boundary(text, self._in_quotes)
        self._in_quotes ^= text.count('"') % 2 == 1
        if not cut:
            self._hold(text)
            return ""
        complete = "".join(self._pending) + text[:cut]
        self._pending, self._pending_chars = [], 0
        self._hold(text[cut:])
        return complete

    def _rest(self) -> str:
        """The text held at the end of the file."""
        text = self._decode(b"", final=True)
        self._in_quotes ^= text.count('"') % 2 == 1
        if self._in_quotes:
            raise NotCsv("the file is not valid CSV: a quoted field is not closed")
        rest = "".join(self._pending) + text
        self._pending, self._pending_chars = [], 0
        return rest

    def _hold(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars > self.max_row_chars:
            raise TooLarge(f"a row of the file is longer than the limit of {self.max_row_chars} characters"
                           + (" (a quoted field is not closed?)" if self._in_quotes else ""),
                           limit=self.max_row_chars, code="row_too_long")

    def _decode(self, data: bytes, final: bool) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the file is not valid {self.encoding}: {exc.reason} at byte {exc.start} of a chunk",
                             field="character_encoding", code="invalid_encoding") from None
        except UnicodeError as exc:  # a codec's own complaint, such as UTF-16 without a byte order mark
            raise BadRequest(f"the file is not valid {self.encoding}: {exc}", field="character_encoding",
                             code="invalid_encoding") from None
        if "\x00" in text:
            raise NotCsv("the file is not CSV: it holds NUL characters (a binary file, or the wrong encoding)")
        return text


def _row_boundary(text: str, in_quotes: bool) -> int:
    """The end of the last complete row in ``text`` (0 if none), given whether the text before
    it ended inside quotes. Walks back from one line break to the previous one, counting only
    the quotes between them: linear in the text however many breaks sit inside quotes."""
    in_quotes_at = in_quotes ^ (text.count('"') % 2 == 1)  # at the end of the text
    end = len(text)
    cut = text.rfind("\n")
    while cut >= 0:
        in_quotes_at ^= text.count('"', cut, end) % 2 == 1
        if not in_quotes_at:
            return cut + 1
        end = cut
        cut = text.rfind("\n", 0, cut)
    return 0


def _parse(text: str) -> list[list[str]]:
    if not text:
        return []
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise NotCsv(f"the file is not valid CSV: {exc}") from None


def _row_texts(text: str) -> list[tuple[list[str], str]]:
    """Every row of ``text`` (blank lines as empty rows) with the text it was read from: the
    ``csv`` module pulls one line at a time, as many as a row needs."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    rows = []
    try:
        for row in csv.reader(lines()):
            rows.append((row, "".join(consumed)))
            consumed.clear()
    except csv.Error as exc:
        raise NotCsv(f"the file is not valid CSV: {exc}") from None
    return rows


class RowBytes:
    """Cuts a CSV file's bytes into its rows' own bytes, as sent (line breaks, quoting, byte
    order mark: the header's bytes begin with it), fed chunk by chunk.

    Rows are found in the decoded text (``RowReader``); a row's bytes are as many as its text
    encodes to. That holds for the encodings that encode each character on its own (UTF-8,
    UTF-16, the single-byte ones), not for those that shift state (the ISO-2022 family).
    """

    def __init__(self, encoding: str) -> None:
        self._reader = RowReader(encoding)
        name = codecs.lookup(encoding).name
        self._length_codec = {"utf-8-sig": "utf-8", "utf-16": "utf-16-le"}.get(name, name)
        self._marks = {"utf-8-sig": (codecs.BOM_UTF8,),
                       "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)}.get(name, ())
        self._buffer = bytearray()  # bytes read and not yet cut into rows
        self._mark: int | None = None  # the byte order mark's length, once the first bytes are in

    def feed(self, data: bytes) -> list[tuple[list[str], bytes]]:
        """The rows that ``data`` completes, each with its bytes; blank lines are left out."""
        self._buffer += data
        return self._cut(self._reader.feed_texts(data))

    def finish(self) -> list[tuple[list[str], bytes]]:
        return self._cut(self._reader.finish_texts())

    def _cut(self, texts: list[tuple[list[str], str]]) -> list[tuple[list[str], bytes]]:
        if self._mark is None and texts:
            self._mark = next((len(mark) for mark in self._marks if self._buffer.startswith(mark)), 0)
        start, rows = 0, []
        for row, text in texts:
            end = start + len(text.encode(self._length_codec)) + (self._mark or 0)
            self._mark = 0
            if row:
                rows.append((row, bytes(self._buffer[start:end])))
            start = end
        del self._buffer[:start]
        return rows


def write_rows(rows: list[list[str]]) -> str:
    """Rows as CSV text (RFC 4180, CRLF line ends)."""
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()
