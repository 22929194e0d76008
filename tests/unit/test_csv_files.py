"""Reading CSV as a stream: encoding detection and rows cut from arbitrary chunks."""

from __future__ import annotations

import csv
import io
import time

import pytest

from bulkjobs.domain.csv_files import EncodingSniffer, NotCsv, RowReader, encoding_name, write_rows
from bulkjobs.errors import BadRequest, TooLarge

TEXT = 'id,name,note\r\n1,Crème,"a, b"\r\n2,"multi\nline","say ""hi"""\r\n\r\n3,Smörgås,\n'
ROWS = [["id", "name", "note"], ["1", "Crème", "a, b"], ["2", "multi\nline", 'say "hi"'], ["3", "Smörgås", ""]]


def sniff(data: bytes, chunk: int = 3) -> str:
    sniffer = EncodingSniffer()
    for start in range(0, len(data), chunk):
        sniffer.feed(data[start:start + chunk])
    return sniffer.encoding()


@pytest.mark.parametrize("data, expected", [
    pytest.param(TEXT.encode("utf-8"), "utf-8", id="utf-8"),
    pytest.param(TEXT.encode("utf-8-sig"), "utf-8-sig", id="utf-8-bom"),
    pytest.param(TEXT.encode("utf-16-le").join([b"\xff\xfe", b""]), "utf-16", id="utf-16-le-bom"),
    pytest.param(b"\xfe\xff" + TEXT.encode("utf-16-be"), "utf-16", id="utf-16-be-bom"),
    pytest.param(TEXT.encode("cp1252") + "“”€".encode("cp1252"), "cp1252", id="windows-1252"),
    pytest.param(b"a,b\n\x81\x8d,\xe9\n", "iso8859-1", id="latin-1-fallback"),
    pytest.param(b"plain,ascii\n", "utf-8", id="ascii"),
    pytest.param(b"", "utf-8", id="empty"),
])
@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_the_encoding_is_found_whatever_the_chunks(data: bytes, expected: str, chunk: int) -> None:
    assert sniff(data, chunk) == expected


def test_a_utf8_character_cut_at_the_end_is_not_utf8() -> None:
    assert sniff("é".encode()[:1]) == "cp1252"


@pytest.mark.parametrize("name, canonical", [("UTF-8", "utf-8"), ("latin1", "iso8859-1"),
                                             ("windows-1252", "cp1252"), ("utf_16", "utf-16")])
def test_encoding_names_are_canonical(name: str, canonical: str) -> None:
    assert encoding_name(name) == canonical


def test_an_unknown_encoding_is_400() -> None:
    with pytest.raises(BadRequest) as err:
        encoding_name("klingon")
    assert err.value.code == "unknown_encoding"


@pytest.mark.parametrize("name", ["base64", "zlib", "rot13", "punycode", "hex", "bz2", "uu", "quopri", "idna",
                                  "undefined", "utf-7", "utf-8" + " " * 100, "a\x00b"])
def test_a_codec_that_is_not_a_text_encoding_is_400(name: str) -> None:
    with pytest.raises(BadRequest) as err:
        encoding_name(name)
    assert err.value.status == 400 and err.value.code == "unknown_encoding"


@pytest.mark.parametrize("data", [b"a\x00,\x00b\x00", b"a,b\n1,2\n"])
def test_utf16_without_a_byte_order_mark_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as err:
        read_all(data, "utf-16", 4)
    assert err.value.status == 400 and err.value.code == "invalid_encoding"


def read_all(data: bytes, encoding: str, chunk: int) -> list[list[str]]:
    reader = RowReader(encoding)
    rows: list[list[str]] = []
    for start in range(0, len(data), chunk):
        rows += reader.feed(data[start:start + chunk])
    return rows + reader.finish()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 100_000])
def test_rows_come_out_whole_whatever_the_chunks(encoding: str, chunk: int) -> None:
    assert read_all(TEXT.encode(encoding), encoding, chunk) == ROWS


def test_a_file_without_a_final_line_break_keeps_its_last_row() -> None:
    assert read_all(b"a,b\n1,2", "utf-8", 3) == [["a", "b"], ["1", "2"]]


def test_rows_are_returned_as_soon_as_they_are_complete() -> None:
    reader = RowReader("utf-8")
    assert reader.feed(b'a,b\n1,"x\n') == [["a", "b"]]
    assert reader.feed(b'y"\n2,') == [["1", "x\ny"]]
    assert reader.finish() == [["2", ""]]


@pytest.mark.parametrize("data", [b'a,b\n"never closed,1\n', b"a,b\n1,\x00\n"])
def test_what_is_not_csv_is_refused(data: bytes) -> None:
    with pytest.raises(NotCsv) as err:
        read_all(data, "utf-8", 4)
    assert err.value.status == 400 and err.value.code == "not_csv"


@pytest.mark.parametrize("chunk", [1000, 256 * 1024])
def test_an_unclosed_quote_before_many_line_breaks_is_read_in_linear_time(chunk: int) -> None:
    data = b'id,name\n"x' + b",y\n" * 200_000  # each line break is inside the quoted field
    started = time.perf_counter()
    with pytest.raises(NotCsv):
        read_all(data, "utf-8", chunk)
    assert time.perf_counter() - started < 1.0  # 40 s when quotes were recounted for every line break


@pytest.mark.parametrize("data", [b'a\n"' + b"x\n" * 600, b"a\n" + b"x" * 1200 + b"\n"])
def test_a_row_longer_than_the_limit_is_413_without_reading_further(data: bytes) -> None:
    reader = RowReader("utf-8", max_row_chars=1000)
    with pytest.raises(TooLarge) as err:
        for start in range(0, len(data), 100):
            reader.feed(data[start:start + 100])
    assert err.value.code == "row_too_long" and err.value.details["limit"] == 1000


def test_rows_up_to_the_limit_are_read() -> None:
    row = b"x" * 998 + b"\r\n"  # 1,000 characters with its line end
    data = b"a\n" + row * 3
    reader = RowReader("utf-8", max_row_chars=1000)
    rows = [row for start in range(0, len(data), 7) for row in reader.feed(data[start:start + 7])]
    assert rows + reader.finish() == [["a"]] + [["x" * 998]] * 3


def test_bytes_the_encoding_cannot_decode_are_refused() -> None:
    with pytest.raises(BadRequest) as err:
        read_all(b"a\n\xff\n", "utf-8", 2)
    assert err.value.code == "invalid_encoding"


def test_written_rows_read_back_the_same() -> None:
    text = write_rows(ROWS)
    assert text.endswith("\r\n")
    assert list(csv.reader(io.StringIO(text, newline=""))) == ROWS
