"""Streaming body parsing: JSON envelopes, bare arrays and NDJSON, read in chunks of any size."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from bulkjobs.api import array_splitter, bodies, envelope
from bulkjobs.api.array_splitter import MAX_ELEMENT_BYTES, ArraySplitter
from bulkjobs.api.bodies import BodyReader, ParsedBody, parse_json, parse_ndjson
from bulkjobs.api.envelope import MAX_FIELDS_BYTES
from bulkjobs.domain.records import Refused
from bulkjobs.errors import BadRequest, InvalidJson, TooLarge

Parse = Callable[[BodyReader], Awaitable[ParsedBody]]

SIZES = [1, 7, 64, 4096]
_RECORDS_OPEN = re.compile(rb'^\s*\[|"data"\s*:\s*\[')


def pieces_reader(pieces: list[bytes], max_bytes: int = 1 << 30) -> BodyReader:
    remaining = list(pieces)

    async def read_chunk() -> bytes:
        return remaining.pop(0) if remaining else b""

    return BodyReader(read_chunk, max_bytes)


def chunked_reader(body: bytes, size: int, max_bytes: int = 1 << 30) -> BodyReader:
    return pieces_reader([body[i:i + size] for i in range(0, len(body), size)], max_bytes)


async def parse_all(parse: Parse, reader: BodyReader) -> tuple[ParsedBody, list[Any], list[int]]:
    """Parse and drain the body: (parsed body, all records, record count of every chunk)."""
    body = await parse(reader)
    records: list[Any] = []
    sizes: list[int] = []
    async for chunk in body.chunks:
        records.extend(chunk.records)
        sizes.append(len(chunk.records))
    return body, records, sizes


# --- record sets and body forms ---------------------------------------------------------------

PLAIN = [{"type": "server", "external_id": f"srv-{i}", "attributes": {"n": i, "ok": i % 2 == 0}} for i in range(40)]

TRICKY = [
    {"type": "t", "attributes": {"s": "},{"}},
    {"type": "t", "attributes": {"s": '"],["'}},
    {"type": "t", "attributes": {"s": '"},{"a":1}, {"b": ["x"], ["y"]}'}},
    {"type": "t", "attributes": {"s": 'quote " backslash \\ tab \t newline \n'}},
    {"type": "t", "attributes": {"s": '\\", "'}},
    {"type": "t", "attributes": {"nested": [{"a": [{"b": 1}, {"c": [1, 2, {"d": []}]}]}, {"e": {}}, [], [[]]]}},
    {"type": "t", "attributes": {"data": [{"type": "inner"}], "unicode": "名前 ✓ \u2028 émoji 🚀"}},
    {},
    {"type": "t", "attributes": {"list_of_lists": [[1, 2], [3], ["a", "b"]], "empty": ""}},
    {"type": "t", "external_id": "],[", "attributes": {"n": None, "f": 1.5e-7, "big": 12345678901234567}},
]

IDS = [f"{i:032x}" for i in range(30)] + ['a","b', "],[", "},{", 'x"', "", "ünï"]

MIXED = [1, "x", {"a": 1}, [1, {"b": 2}], None, True, 2.5, "y", {"c": "},{"}]

RECORD_SETS = [
    pytest.param(PLAIN, id="plain"),
    pytest.param(TRICKY, id="tricky-strings"),
    pytest.param(IDS, id="id-strings"),
    pytest.param(MIXED, id="mixed-values"),
]

FIELDS = {"type": "resources", "action": "post", "description": "nightly load"}


def data_last(records: list[Any]) -> bytes:
    return orjson.dumps({**FIELDS, "data": records})


def data_first(records: list[Any]) -> bytes:
    return orjson.dumps({"data": records, **FIELDS})


def data_between(records: list[Any]) -> bytes:
    return orjson.dumps({"type": "resources", "data": records, "action": "post", "description": "nightly load"})


def pretty_envelope(records: list[Any]) -> bytes:
    return json.dumps({**FIELDS, "data": records}, indent=4, ensure_ascii=False).encode()


def tabbed_data_first(records: list[Any]) -> bytes:
    return ("\r\n\t " + json.dumps({"data": records, **FIELDS}, indent="\t") + "\r\n").encode()


def bare(records: list[Any]) -> bytes:
    return orjson.dumps(records)


def pretty_bare(records: list[Any]) -> bytes:
    return ("\n  " + json.dumps(records, indent=2, separators=(" ,", " : ")) + "\n\n").encode()


ENVELOPES = [data_last, data_first, data_between, pretty_envelope, tabbed_data_first]
BARE = [bare, pretty_bare]


def json_cases(forms: list[Any]) -> list[Any]:
    """(body, records, size) for every form, record set and read size; the bug's cases marked."""
    cases = []
    for form in forms:
        for record_set in RECORD_SETS:
            records, name = record_set.values[0], record_set.id
            for size in SIZES:
                body = form(records)
                cases.append(pytest.param(body, records, size,
                                          id=f"{form.__name__}-{name}-{size}"))
    return cases


@pytest.mark.parametrize("body, records, size", json_cases(ENVELOPES))
async def test_envelope_records_and_fields_survive_any_chunking(body: bytes, records: list[Any], size: int) -> None:
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, size))
    assert parsed == records
    assert parsed_body.fields == FIELDS


@pytest.mark.parametrize("body, records, size", json_cases(BARE))
async def test_bare_array_records_survive_any_chunking(body: bytes, records: list[Any], size: int) -> None:
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, size))
    assert parsed == records
    assert parsed_body.fields == {}


def sized(body: bytes, sizes: list[int] = SIZES) -> list[Any]:
    return [pytest.param(body, size, id=str(size)) for size in sizes]


@pytest.mark.parametrize("raw, size", sized(data_first(PLAIN)))
async def test_fields_after_the_data_are_known_once_the_chunks_are_drained(raw: bytes, size: int) -> None:
    body = await parse_json(chunked_reader(raw, size))
    assert body.fields == {}
    records = [record async for chunk in body.chunks for record in chunk.records]
    assert records == PLAIN
    assert body.fields == FIELDS


@pytest.mark.parametrize("form", [pytest.param(data_last, id="envelope"), pytest.param(bare, id="bare")])
async def test_a_large_array_streams_in_several_chunks(form: Any) -> None:
    records = [{"type": "server", "attributes": {"i": i, "pad": "x" * 50}} for i in range(500)]
    _, parsed, counts = await parse_all(parse_json, chunked_reader(form(records), 4096))
    assert parsed == records
    assert len(counts) > 5
    assert max(counts) < len(records)


@pytest.mark.parametrize("records", [pytest.param(TRICKY, id="tricky"), pytest.param(IDS, id="ids")])
@pytest.mark.parametrize("form", [pytest.param(data_last, id="data_last"), pytest.param(data_first, id="data_first"),
                                  pytest.param(bare, id="bare")])
async def test_every_two_piece_split(form: Any, records: list[Any]) -> None:
    body = form(records)
    for k in range(1, len(body)):
        parsed_body, parsed, _ = await parse_all(parse_json, pieces_reader([body[:k], body[k:]]))
        assert parsed == records, f"split at {k}: {body[:k][-20:]!r} | {body[k:][:20]!r}"
        assert parsed_body.fields == ({} if form is bare else FIELDS)


@pytest.mark.parametrize("form", [pytest.param(data_last, id="data_last"), pytest.param(data_first, id="data_first"),
                                  pytest.param(bare, id="bare")])
async def test_a_read_ending_right_after_the_opening_bracket(form: Any) -> None:
    body = form(PLAIN)
    k = _RECORDS_OPEN.search(body).end()
    _, parsed, _ = await parse_all(parse_json, pieces_reader([body[:k], body[k:]]))
    assert parsed == PLAIN


EMPTY_ARRAYS = {
    "envelope": b'{"type":"resources","action":"post","data":[]}',
    "envelope-data-first": b'{"data": [ ], "type":"resources","action":"post"}',
    "bare": b"[]",
    "bare-spaced": b" [ \n ] ",
}


@pytest.mark.parametrize("body, size", [
    pytest.param(body, size, id=f"{name}-{size}")
    for name, body in EMPTY_ARRAYS.items() for size in SIZES
])
async def test_an_empty_array_has_no_records(body: bytes, size: int) -> None:
    _, parsed, _ = await parse_all(parse_json, chunked_reader(body, size))
    assert parsed == []


async def test_an_envelope_with_data_under_another_key_first() -> None:
    body = orjson.dumps({"meta": {"data": [{"not": "records"}]}, **FIELDS, "data": PLAIN[:3]})
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, 7))
    assert parsed == PLAIN[:3]
    assert parsed_body.fields == {"meta": {"data": [{"not": "records"}]}, **FIELDS}


async def test_a_data_array_of_numbers() -> None:
    body = orjson.dumps({**FIELDS, "data": list(range(100))})
    _, parsed, _ = await parse_all(parse_json, chunked_reader(body, 7))
    assert parsed == list(range(100))


async def test_a_key_ending_in_an_escaped_quote_and_data() -> None:
    body = b'{"note\\"data": [1], "type": "resources", "action": "post", "data": [{"x": 1}]}'
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, 4096))
    assert parsed == [{"x": 1}]
    assert parsed_body.fields["type"] == "resources"


# --- bad bodies -------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b'{"type":"resources","action":"post","data":[{"a":1},{"b":}]}', id="bad-element"),
    pytest.param(b'{"type":"resources","action":"post","data":[{"a":1},{"b":2}', id="data-not-closed"),
    pytest.param(b'{"type":"resources","action":"post","data":[{"a":1},{"b":2}]', id="envelope-not-closed"),
    pytest.param(b'{"type":"resources","data":[{"a":1}], "action": }', id="bad-key-after-data"),
    pytest.param(b'{"type":"resources","data":[{"a":1}] "action":"post"}', id="missing-comma-after-data"),
    pytest.param(b'{"data":[{"a":1}]}, {"more": 1}', id="garbage-after-envelope"),
    pytest.param(b'{"type": "resources", "action": "post", "data": [1, 2', id="numbers-not-closed"),
    pytest.param(b'{"type": "resources", "action": ', id="truncated-before-data"),
    pytest.param(b"{nope", id="not-json"),
    pytest.param(b'[{"a":1}, {"b":2}] trailing', id="garbage-after-array"),
    pytest.param(b'[{"a":1}, {"b":2}', id="array-not-closed"),
    pytest.param(b'[{"a":1},,{"b":2}]', id="double-comma"),
    pytest.param(b'["a", "b" "c"]', id="missing-comma"),
]


@pytest.mark.parametrize("size", [7, 4096])
@pytest.mark.parametrize("body", MALFORMED)
async def test_malformed_json_is_invalid_json(body: bytes, size: int) -> None:
    with pytest.raises(InvalidJson):
        await parse_all(parse_json, chunked_reader(body, size))


@pytest.mark.parametrize("body, field", [
    pytest.param(b"", None, id="empty"),
    pytest.param(b" \n\t ", None, id="only-whitespace"),
    pytest.param(b'{"type":"resources","action":"post","data":{"a":1}}', "data", id="data-object"),
    pytest.param(b'{"type":"resources","action":"post","data":"x"}', "data", id="data-string"),
    pytest.param(b'"just a string"', None, id="string-body"),
    pytest.param(b"42", None, id="number-body"),
])
async def test_a_body_without_a_data_array_is_a_bad_request(body: bytes, field: str | None) -> None:
    with pytest.raises(BadRequest) as raised:
        await parse_all(parse_json, chunked_reader(body, 7))
    assert type(raised.value) is BadRequest
    assert raised.value.details.get("field") == field


@pytest.mark.parametrize("size", [7, 4096])
@pytest.mark.parametrize("parse, body", [
    pytest.param(parse_json, data_last(PLAIN), id="envelope"),
    pytest.param(parse_json, data_first(PLAIN), id="envelope-data-first"),
    pytest.param(parse_json, bare(PLAIN), id="bare"),
    pytest.param(parse_ndjson, b"\n".join(orjson.dumps(r) for r in PLAIN), id="ndjson"),
])
async def test_the_byte_limit(parse: Parse, body: bytes, size: int) -> None:
    _, parsed, _ = await parse_all(parse, chunked_reader(body, size, max_bytes=len(body)))
    assert parsed == PLAIN

    with pytest.raises(TooLarge) as raised:
        await parse_all(parse, chunked_reader(body, size, max_bytes=len(body) - 1))
    assert raised.value.details == {"limit": len(body) - 1}


@pytest.mark.parametrize("parse", [parse_json, parse_ndjson])
async def test_reading_stops_soon_after_the_limit(parse: Parse) -> None:
    body = data_last(PLAIN * 50) if parse is parse_json else b"\n".join(orjson.dumps(r) for r in PLAIN * 50)
    reader = chunked_reader(body, 64, max_bytes=1000)
    with pytest.raises(TooLarge):
        await parse_all(parse, reader)
    assert 1000 < reader.bytes_read <= 1000 + 64


# --- NDJSON -----------------------------------------------------------------------------------

def ndjson(records: list[Any], end: bytes = b"\n") -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + end


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("records", RECORD_SETS)
@pytest.mark.parametrize("end", [pytest.param(b"\n", id="trailing-newline"),
                                 pytest.param(b"", id="no-trailing-newline")])
async def test_ndjson_records_survive_any_chunking(records: list[Any], end: bytes, size: int) -> None:
    body, parsed, _ = await parse_all(parse_ndjson, chunked_reader(ndjson(records, end), size))
    assert parsed == records
    assert body.fields == {}


@pytest.mark.parametrize("size", SIZES)
async def test_ndjson_skips_blank_lines_and_takes_crlf(size: int) -> None:
    body = b'\n\n{"a": 1}\r\n   \n\t\n"id-1"\r\n\r\n[1, 2]\n\n'
    _, parsed, _ = await parse_all(parse_ndjson, chunked_reader(body, size))
    assert parsed == [{"a": 1}, "id-1", [1, 2]]


@pytest.mark.parametrize("size", SIZES)
async def test_ndjson_bad_lines_become_invalid_lines_in_place(size: int) -> None:
    body = b'{"a": 1}\n{not json\n{"b": 2}\n{"c": 3} trailing\n"unterminated\n{"d": 4}'
    _, parsed, _ = await parse_all(parse_ndjson, chunked_reader(body, size))
    assert parsed == [{"a": 1}, Refused("line is not valid JSON: {not json"), {"b": 2},
                      Refused('line is not valid JSON: {"c": 3} trailing'),
                      Refused('line is not valid JSON: "unterminated'), {"d": 4}]


async def test_ndjson_invalid_line_text_is_cut_and_decoded() -> None:
    long_line = b"x" * 500
    body = long_line + b"\n" + b"\xff\xfe{bad utf-8\n"
    _, parsed, _ = await parse_all(parse_ndjson, chunked_reader(body, 64))
    assert parsed == [Refused("line is not valid JSON: " + "x" * 200),
                      Refused("line is not valid JSON: \ufffd\ufffd{bad utf-8")]


@pytest.mark.parametrize("body", [b"", b"\n\n  \n"])
async def test_ndjson_without_records(body: bytes) -> None:
    _, parsed, counts = await parse_all(parse_ndjson, chunked_reader(body, 7))
    assert parsed == [] and counts == []


async def test_ndjson_streams_in_several_chunks() -> None:
    records = [{"i": i} for i in range(300)]
    _, parsed, counts = await parse_all(parse_ndjson, chunked_reader(ndjson(records), 256))
    assert parsed == records
    assert len(counts) > 5


async def test_an_envelope_without_data_has_fields_and_no_records() -> None:
    """An export or a CSV's file_content: the API decides; a JSON job without data is a 400 there."""
    parsed = await parse_json(chunked_reader(b'{"kind":"export","title":"t"}', 7))
    assert parsed.fields == {"kind": "export", "title": "t"}
    assert [record async for chunk in parsed.chunks for record in chunk.records] == []


# --- hostile bodies: linear work, bounded memory, early answers -------------------------------

class CountingOrjson:
    """orjson, counting the bytes given to loads: the parsing work a body costs."""

    JSONDecodeError = orjson.JSONDecodeError

    def __init__(self) -> None:
        self.parsed = 0

    def loads(self, data: Any) -> Any:
        self.parsed += len(data)
        return orjson.loads(data)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingOrjson:
    counter = CountingOrjson()
    for module in (bodies, array_splitter, envelope):
        monkeypatch.setattr(module, "orjson", counter)
    return counter


async def test_an_array_nested_250000_levels_is_refused_at_once(counting: CountingOrjson) -> None:
    body = b"[" * 250_000 + b"]" * 250_000
    with pytest.raises(InvalidJson, match="depth limit"):
        await parse_all(parse_json, chunked_reader(body, 64 * 1024))
    assert counting.parsed < 4 * len(body)


@pytest.mark.parametrize("closed", [False, True], ids=["never-closed", "closed-at-the-end"])
async def test_an_array_whose_first_string_runs_on_full_of_cuts_is_refused_in_linear_work(
    counting: CountingOrjson, closed: bool
) -> None:
    body = b'[{"a": "' + b"}, {" * 6_000_000 + (b'"}]' if closed else b"")  # 24 MB
    reader = chunked_reader(body, 256 * 1024)
    with pytest.raises(TooLarge) as raised:
        await parse_all(parse_json, reader)
    assert raised.value.code == "element_too_large"
    assert raised.value.details == {"limit": MAX_ELEMENT_BYTES}
    assert reader.bytes_read <= MAX_ELEMENT_BYTES + 256 * 1024  # refused as soon as the element is too large
    assert counting.parsed < 30 * MAX_ELEMENT_BYTES  # a few parses per doubling, not one per read


@pytest.mark.parametrize("size", [4096, 256 * 1024])
async def test_splitting_costs_a_bounded_number_of_parses_per_byte(counting: CountingOrjson, size: int) -> None:
    records = [{"type": "t", "items": [{"k": j, "v": [{"a": 1}, {"b": 2}]} for j in range(10)]} for _ in range(3000)]
    body = data_last(records)
    _, parsed, counts = await parse_all(parse_json, chunked_reader(body, size))
    assert parsed == records
    assert len(counts) > 3
    assert counting.parsed < 12 * len(body)


async def test_records_that_do_not_begin_like_the_first_still_split(counting: CountingOrjson) -> None:
    records = [{"n": i} if i == 0 else {"type": "t", "items": [{"k": j} for j in range(20)]} for i in range(2000)]
    body = bare(records)
    _, parsed, counts = await parse_all(parse_json, chunked_reader(body, 4096))
    assert parsed == records
    assert len(counts) > 3
    assert counting.parsed < 12 * len(body)


async def test_a_body_wrong_early_is_refused_before_the_rest_is_read() -> None:
    body = b'[{"a": 1}, {"b": 2} {"c": 3}, ' + b'{"d": 4}, ' * 1_000_000 + b"{}]"
    reader = chunked_reader(body, 64 * 1024)
    with pytest.raises(InvalidJson):
        await parse_all(parse_json, reader)
    assert reader.bytes_read <= 128 * 1024


async def test_an_element_over_the_limit_is_too_large_and_one_within_it_is_kept() -> None:
    splitter = ArraySplitter(max_element_bytes=1000)
    records: list[Any] = []
    for piece in [orjson.dumps({"s": "x" * 900}) + b", ", b'{"s": "y"}, {"t": "' + b"z" * 500]:
        if (chunk := splitter.feed(piece)) is not None:
            records.extend(chunk.records)
    assert records == [{"s": "x" * 900}, {"s": "y"}]
    with pytest.raises(TooLarge):
        splitter.feed(b"z" * 600)


async def test_an_envelope_without_data_is_refused_once_its_fields_pass_the_limit() -> None:
    body = b'{"type": "resources", "action": "post", "x": "' + b"a" * (96 << 20) + b'"}'
    reader = chunked_reader(body, 64 * 1024)
    with pytest.raises(TooLarge) as raised:
        await parse_all(parse_json, reader)
    assert raised.value.code == "fields_too_large"
    assert reader.bytes_read <= MAX_FIELDS_BYTES + 64 * 1024


@pytest.mark.parametrize("where", ["before", "after"])
async def test_whitespace_between_members_costs_no_memory(where: str) -> None:
    padding = b" \n" * (8 << 20)
    body = (b'{"type": "resources",' + padding + b'"action": "post", "data": [{"a": 1}]}' if where == "before"
            else b'{"data": [{"a": 1}],' + padding + b'"type": "resources", "action": "post"}')
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, 64 * 1024))
    assert parsed == [{"a": 1}]
    assert parsed_body.fields == {"type": "resources", "action": "post"}


async def test_a_file_content_may_pass_the_fields_limit() -> None:
    csv = "name\n" + "x,\\\"y\n" * 100_000
    body = orjson.dumps({"file_content": csv, "description": "d"})
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, 4096))
    assert parsed_body.fields == {"file_content": csv, "description": "d"} and parsed == []
    assert not parsed_body.has_data


ODD_FIELDS = {"n": -1.5e3, "t": True, "f": False, "z": None, "o": {"a": [1, {"b": "}]"}]}, "s": 'q"uo\\te ✓',
              "k\u00e9y": [], "e": {}, "type": "resources", "action": "post"}


@pytest.mark.parametrize("form", [data_last, data_first, data_between])
async def test_members_of_every_kind_survive_every_two_piece_split(form: Any) -> None:
    body = orjson.dumps({**ODD_FIELDS, "data": [{"x": 1}, {"y": 2}]}) if form is data_last else \
        orjson.dumps({"data": [{"x": 1}, {"y": 2}], **ODD_FIELDS}) if form is data_first else \
        orjson.dumps({"n": 7, "data": [{"x": 1}, {"y": 2}], **ODD_FIELDS})
    expected = orjson.loads(body)
    del expected["data"]
    for k in range(1, len(body)):
        parsed_body, parsed, _ = await parse_all(parse_json, pieces_reader([body[:k], body[k:]]))
        assert parsed == [{"x": 1}, {"y": 2}], k
        assert parsed_body.fields == expected, k


@pytest.mark.parametrize("body", [
    pytest.param(b'{"data": [1], "type": "resources", "data": [2]}', id="data-twice"),
    pytest.param(b'{"data": null}', id="data-null"),
])
async def test_data_must_be_one_array(body: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        await parse_all(parse_json, chunked_reader(body, 7))
    assert raised.value.details.get("field") == "data"


@pytest.mark.parametrize("body", [
    pytest.param(b'{"a": 1,}', id="trailing-comma"),
    pytest.param(b'{"a" 1}', id="no-colon"),
    pytest.param(b'{"a": }', id="no-value"),
    pytest.param(b'{"a": 1 "b": 2}', id="no-comma"),
    pytest.param(b'{"a": tru}', id="bad-literal"),
    pytest.param(b'{"a": 1} x', id="after-the-object"),
    pytest.param(b'{"a": [1, 2}', id="bad-nesting"),
    pytest.param(b'{"a": "\x01"}', id="control-character"),
    pytest.param(b'\xef\xbb\xbf{"a": 1}', id="byte-order-mark"),
    pytest.param(b'{"a": "\xff"}', id="not-utf-8"),
    pytest.param(b'[1, 2] [3]', id="array-then-more"),
    pytest.param(b'[{"a": "\xff"}, {"b": 2}, {"c": 3}]', id="array-not-utf-8"),
])
@pytest.mark.parametrize("size", [1, 4096])
async def test_more_malformed_bodies_are_invalid_json(body: bytes, size: int) -> None:
    with pytest.raises(InvalidJson):
        await parse_all(parse_json, chunked_reader(body, size))


async def test_a_record_nested_deeper_than_a_batch_can_carry_still_parses() -> None:
    body = b'[{"a": 1}, ' + b"[" * 1000 + b"]" * 1000 + b', {"b": 2}]'
    _, parsed, _ = await parse_all(parse_json, chunked_reader(body, 4096))
    assert len(parsed) == 3 and parsed[0] == {"a": 1} and parsed[2] == {"b": 2}  # the batch refuses it alone


async def test_an_ndjson_line_over_the_limit_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "MAX_ELEMENT_BYTES", 1000)
    _, parsed, _ = await parse_all(parse_ndjson, chunked_reader(b'{"a": "' + b"x" * 900 + b'"}\n{"b": 1}\n', 64))
    assert len(parsed) == 2
    with pytest.raises(TooLarge) as raised:
        await parse_all(parse_ndjson, chunked_reader(b'{"a": 1}\n' + b"x" * 2000, 64))
    assert raised.value.code == "element_too_large"


async def test_a_chunk_carries_the_json_it_was_parsed_from() -> None:
    body = await parse_json(chunked_reader(data_first(PLAIN), 4096))
    async for chunk in body.chunks:
        assert chunk.raw is not None and orjson.loads(chunk.raw) == chunk.records


def varied_joints(records: list[Any]) -> bytes:
    """A bare array whose elements are joined by different whitespace: no one joint finds every boundary."""
    joints = [b",", b", ", b",\n", b" ,\t"]
    return b"[" + b"".join(joints[i % 4] * (i > 0) + orjson.dumps(r) for i, r in enumerate(records)) + b"]"


NESTED_ALIKE = [{"type": "t", "items": [{"type": "inner", "n": j} for j in range(i % 3)]} for i in range(300)]


@pytest.mark.parametrize("size", [64, 4096])
@pytest.mark.parametrize("records", [*RECORD_SETS, pytest.param(NESTED_ALIKE, id="nested-records-begin-alike")])
@pytest.mark.parametrize("form", [data_last, bare, pretty_bare, tabbed_data_first, varied_joints])
async def test_a_record_that_comes_with_its_own_text_is_that_text(form: Any, records: list[Any], size: int) -> None:
    body = await parse_json(chunked_reader(form(records), size))
    parsed: list[Any] = []
    async for chunk in body.chunks:
        if chunk.texts is not None:
            assert [orjson.loads(text) for text in chunk.texts] == chunk.records
        parsed.extend(chunk.records)
    assert parsed == records


@pytest.mark.parametrize("form", [data_last, bare, pretty_bare, varied_joints])
async def test_records_that_begin_alike_come_with_their_texts(form: Any) -> None:
    records = PLAIN * 50
    body = await parse_json(chunked_reader(form(records), 4096))
    chunks = [chunk async for chunk in body.chunks]
    assert [record for chunk in chunks for record in chunk.records] == records
    assert len(chunks) > 3
    # The last chunk ends the array; with varied joints, the one where the first joint learned missed one.
    assert sum(chunk.texts is None for chunk in chunks[:-1]) == (form is varied_joints)


async def test_whitespace_before_the_body_costs_no_memory(counting: CountingOrjson) -> None:
    body = b" \r\n\t" * (4 << 20) + data_last(PLAIN)
    parsed_body, parsed, _ = await parse_all(parse_json, chunked_reader(body, 64 * 1024))
    assert parsed == PLAIN and parsed_body.fields == FIELDS
    assert counting.parsed < 4 * len(data_last(PLAIN))


@pytest.mark.parametrize("form", [data_last, bare])
async def test_whitespace_between_elements_costs_no_memory(form: Any) -> None:
    body = form([{"a": 1}, {"b": 2}]).replace(b"},", b"}," + b" \n" * (8 << 20))
    _, parsed, _ = await parse_all(parse_json, chunked_reader(body, 64 * 1024))
    assert parsed == [{"a": 1}, {"b": 2}]
