"""Property-based fuzzing of the live API: every route and body form, as a hostile or careless
client would send them.

Every answer must be under 500, come within ``REQUEST_SECONDS``, and a 4xx must have the JSON
error shape ``{"error": {"code": str, "message": str}}``; after the run the stack must still be
healthy. Only requests that are malformed at the HTTP level (``Req.refused_by_aiohttp``) may be
answered by aiohttp's own protocol layer in ``text/plain``.

Hypothesis runs derandomized, without an example database and without shrinking, so every run
sends the same requests and takes a bounded time (a failure is reported as generated, not
shrunk). Each input that broke the service is kept as a named case in ``KNOWN``. The module
prints how many generated cases ran.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.test_producers import send_raw as produce
from tests.support import Stack, wait_for

REQUEST_SECONDS = 5.0
AIOHTTP_MAX_LINE = 8190
KEY = "key-a"
LIMITS = {"BULKJOBS_MAX_RECORDS": "1000", "BULKJOBS_MAX_BODY_BYTES": str(1 << 20),
          "BULKJOBS_MAX_UPLOAD_BYTES": str(1 << 20)}


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    phases=(Phase.explicit, Phase.generate), print_blob=False,
                    suppress_health_check=list(HealthCheck))


# Requests and the rule every answer follows


@dataclass(frozen=True)
class Req:
    method: str
    path: str  # percent-encoded as sent
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    protocol: bool = False  # malformed HTTP: aiohttp itself may answer, in text/plain

    @property
    def refused_by_aiohttp(self) -> bool:
        """Malformed HTTP, or a request line over aiohttp's 8,190 bytes: aiohttp answers it."""
        return self.protocol or len(f"{self.method} {self.path} HTTP/1.1") > AIOHTTP_MAX_LINE

    def __repr__(self) -> str:  # bodies can be a megabyte: show their start
        body = repr(self.body[:300]) + (f"... ({len(self.body)} bytes)" if len(self.body) > 300 else "")
        return f"Req({self.method} {self.path[:300]!r}, headers={dict(self.headers)}, body={body})"


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    seconds: float


@dataclass
class Target:
    """The fuzzed stack and the ids of things that exist on it."""

    stack: Stack
    job_ids: list[str]  # a JSON job, a CSV job, an export, a scheduled export, a job produced to Kafka
    file_names: list[str]
    object_ids: list[str]
    produced: list[str]  # more jobs produced to Kafka, for the named cases (the fuzzing may delete the first)
    sent: int = 0  # generated cases run

    def send(self, req: Req) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=2 * REQUEST_SECONDS)
        headers = {"x-api-key": KEY, **dict(req.headers)}
        start = time.monotonic()
        try:
            conn.request(req.method, req.path, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except TimeoutError:
            raise AssertionError(f"no answer within {2 * REQUEST_SECONDS:.0f} s: {req!r}") from None
        finally:
            conn.close()
        return Answer(resp.status, resp.headers.get_content_type(), body, time.monotonic() - start)


def check(target: Target, req: Req) -> None:
    answer = target.send(req)
    target.sent += 1
    assert_answer(req, answer)


def assert_answer(req: Req, answer: Answer) -> None:
    said = f"{req!r} -> {answer.status} {answer.body[:500]!r}"
    assert answer.seconds < REQUEST_SECONDS, f"{answer.seconds:.1f} s: {said}"
    assert answer.status < 500, said
    if answer.status >= 400:
        if req.refused_by_aiohttp and answer.content_type == "text/plain":
            return
        assert answer.content_type == "application/json", said
        error = json.loads(answer.body)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), said


# Values


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def query(params: list[tuple[str, str]]) -> str:
    return "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params) if params else ""


def sometimes(usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], one_in: int = 4
              ) -> st.SearchStrategy[Any]:
    """Mostly ``usual`` values, so that most requests get past the first check; one in ``one_in`` hostile."""
    return st.integers(1, one_in).flatmap(lambda pick: hostile if pick == one_in else usual)


def rare(draw: st.DrawFn, one_in: int) -> bool:
    """True about one time in ``one_in`` (Hypothesis starts from the smallest integer: the usual case)."""
    return draw(st.integers(1, one_in)) == one_in


def dumps(value: Any) -> str:
    return json.dumps(value)  # the stdlib writes big integers and NaN too: both are hostile input


scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def usually(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` values, and one in four any JSON value."""
    return sometimes(usual, json_values)


texts = st.one_of(st.text(max_size=30),
                  st.sampled_from(["", " ", "%", "%zz", "_", "' OR 1=1 --", "\x00", "é", "😀"]))
numbers_as_text = st.one_of(st.integers().map(str), st.sampled_from(
    ["", "0", "-1", "1001", "1e3", "0x10", " 5", "9" * 400, "1.5", "NaN", "∞", "٣"]))
dates = st.sampled_from(["2026-11-01T00:00:00Z", "2026-12-01", "0001-01-01T00:00:00+01:00",
                         "9999-12-31T23:59:59.9999", "2026-02-30T00:00:00Z", "not a date", "", "1e9",
                         "2026-11-01T00:00:00+99:00", "-0001-01-01"]) | scalars
crons = st.sampled_from(["0 2 * * *", "*/5 * * * *", "0 0 31 2 *", "0 0 30 2 *", "61 * * * *", "* * * *",
                         "* * * * * * *", "@yearly", "", "0 0 29 2 1", "* * * * * */70"]) | scalars
schedules = sometimes(st.one_of(
    st.fixed_dictionaries({"cron": crons}, optional={"immediately": usually(st.booleans()),
                                                     "runs": usually(st.integers(min_value=-3, max_value=3)),
                                                     "start_date": dates}),
    st.fixed_dictionaries({"start_date": dates}, optional={"immediately": usually(st.booleans())}),
    st.fixed_dictionaries({"immediately": usually(st.booleans())}),
), json_values, one_in=6)
DEEP = [2, 254, 255, 300, 1023, 1024, 5000, 20000]


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def envelope(items: list[tuple[str, str]]) -> bytes:
    """A JSON object from (key, JSON text) pairs, in this order (keys may repeat)."""
    return ("{" + ",".join(f"{dumps(key)}:{value}" for key, value in items) + "}").encode()


# Body transformations: truncation, garbage and content encodings


@st.composite
def mangled(draw: st.DrawFn, body: bytes) -> bytes:
    how = draw(st.sampled_from(["as is"] * 9 + ["truncated", "garbage", "byte"]))
    if how == "truncated" and body:
        return body[:draw(st.integers(0, len(body) - 1))]
    if how == "garbage":
        return body + draw(st.binary(min_size=1, max_size=20))
    if how == "byte" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:]
    return body


ENCODINGS = ["gzip", "deflate", "br", "zstd", "x-unknown", "gzip, deflate", "identity"]


@st.composite
def encoded(draw: st.DrawFn, body: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The body sent as is or under a Content-Encoding, whole or corrupt."""
    if not rare(draw, 4):  # mostly sent plain
        return body, ()
    encoding = draw(st.sampled_from(ENCODINGS))
    data = {"gzip": lambda: gzip.compress(body), "deflate": lambda: zlib.compress(body)}.get(encoding, lambda: body)()
    corruption = draw(st.sampled_from(["none", "truncated", "flipped", "raw"]))
    if corruption == "truncated" and len(data) > 1:
        data = data[:len(data) // 2]
    elif corruption == "flipped" and data:
        data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
    elif corruption == "raw":
        data = body
    return data, (("Content-Encoding", encoding),)


JSON_TYPES = ["application/json", "text/json", "application/octet-stream", "application/json; charset=latin-1"]
NDJSON_TYPES = ["application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"]
CSV_TYPES = ["text/csv", "application/csv", "text/comma-separated-values", "text/csv; charset=utf-16"]
OTHER_TYPES = ["", "application/xml", "application/x-www-form-urlencoded", "multipart/mixed", "text/plain",
               "application/json; boundary=x", "*/*", "application/json, text/csv"]


@st.composite
def posted(draw: st.DrawFn, body: bytes, content_types: list[str], path: str = "/v1/jobs") -> Req:
    body, headers = draw(encoded(draw(mangled(body))))
    content_type = draw(sometimes(st.sampled_from(content_types), st.sampled_from(OTHER_TYPES), one_in=8))
    if content_type or draw(st.booleans()):
        headers += (("Content-Type", content_type),)
    return Req("POST", path, body, headers)


# JSON jobs: envelopes, bare arrays, NDJSON


kinds = sometimes(st.sampled_from(["resources", "relationships"]),
                  usually(st.sampled_from(["export", "", "RESOURCES"])))
actions = sometimes(st.sampled_from(["post", "update", "delete", "external_id_set", "external_id_update",
                                     "external_id_delete"]), usually(st.just("explode")))
records = sometimes(
    st.fixed_dictionaries({}, optional={
        "type": usually(st.sampled_from(["machine", "fz"])), "external_id": usually(texts),
        "attributes": usually(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        "id": usually(texts), "relationship_type": texts, "source": texts, "target": texts,
    }),
    json_values,
    one_in=5,
)


@st.composite
def record_texts(draw: st.DrawFn) -> list[str]:
    """Records as JSON text: generated, deeply nested or long."""
    found = [dumps(record) for record in draw(st.lists(records, min_size=0, max_size=5))]
    extra = draw(st.sampled_from(["none", "none", "deep", "deep object", "long"]))
    if extra == "deep":
        found.append(nested(draw(st.sampled_from(DEEP))))
    elif extra == "deep object":
        found.append('{"type":"fz","attributes":' + nested(draw(st.sampled_from(DEEP)), '{"a":', "}")
                     .replace('{"a":}', '{"a":1}') + "}")
    elif extra == "long":
        found.append(dumps({"type": "fz", "attributes": {"a": "x" * draw(st.sampled_from([1000, 700_000]))}}))
    return found


@st.composite
def json_envelopes(draw: st.DrawFn) -> Req:
    items: list[tuple[str, str]] = []
    if not rare(draw, 6):
        items.append(("type", dumps(draw(kinds))))
    if not rare(draw, 6):
        items.append(("action", dumps(draw(actions))))
    if draw(st.booleans()):
        description = draw(usually(texts) | st.sampled_from([1000, 1_010_000, 1_100_000]))
        items.append(("description", dumps("d" * description if isinstance(description, int) and
                                           description >= 1000 else description)))
    if not rare(draw, 6):
        data = "[" + ",".join(draw(record_texts())) + "]" if not rare(draw, 5) else dumps(draw(json_values))
        items.append(("data", data))
    for key in draw(st.lists(st.sampled_from(["kind", "schedule", "file_content", "unknown", "data", "type"]),
                             max_size=2)):
        items.append((key, dumps(draw(schedules if key == "schedule" else json_values))))
    items = draw(st.permutations(items))
    body = envelope(items).decode()
    if rare(draw, 7):  # the envelope itself nested
        depth = draw(st.sampled_from(DEEP))
        body = "[" * depth + body + "]" * depth
    return draw(posted(body.encode(), JSON_TYPES))


def job_query(draw: st.DrawFn) -> str:
    params = [(name, draw(value)) for name, value in (("type", kinds), ("action", actions), ("description", texts))
              if not rare(draw, 5)]
    return query([(name, value if isinstance(value, str) else dumps(value)) for name, value in params])


@st.composite
def bare_arrays(draw: st.DrawFn) -> Req:
    body = "[" + ",".join(draw(record_texts())) + "]"
    return draw(posted(body.encode(), JSON_TYPES, "/v1/jobs" + job_query(draw)))


@st.composite
def ndjson_bodies(draw: st.DrawFn) -> Req:
    lines = draw(record_texts()) + draw(st.lists(st.text(max_size=10), max_size=2))
    separator = draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
    return draw(posted(separator.join(lines).encode(), NDJSON_TYPES, "/v1/jobs" + job_query(draw)))


# CSV jobs: text/csv, multipart, file_content

HEADER_NAMES = ["external_id", "name", "rpm", "id", "agentId", "userName", "ssoUserName", "agentServices", "", "é"]
ENCODING_NAMES = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "cp1252", "latin-1", "base64", "zlib",
                  "rot13", "punycode", "idna", "hex", "uu", "quopri", "bz2", "undefined", "nonsense", ""]


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(HEADER_NAMES) | st.text(max_size=6), min_size=1, max_size=5))
    cell = st.sampled_from(["m-1", "900", "abc", "", '"', '"quoted, with comma"', '"a\nb"', "1;2", "true"]) | texts
    rows = draw(st.lists(st.lists(cell, max_size=len(header) + 2), max_size=6))
    text = "\n".join(",".join(row) for row in [header, *rows])
    shape = draw(st.sampled_from(["plain", "plain", "unclosed quote", "NUL", "wide header", "many lines"]))
    if shape == "unclosed quote":
        text = text + '\n"' + "a,b\n" * draw(st.sampled_from([1, 100, 5000]))
    elif shape == "NUL":
        text = text + "\x00"
    elif shape == "wide header":
        text = ",".join(f"c{i}" for i in range(draw(st.sampled_from([1000, 15000])))) + "\n" + text
    elif shape == "many lines":
        text = text + "\nm-9,x" * 2000
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "cp1252", "bytes"]))
    if encoding == "bytes":
        return draw(st.binary(max_size=200))
    return text.encode(encoding, errors="replace")


def field_mappings(draw: st.DrawFn) -> Any:
    mapping = st.fixed_dictionaries(
        {"api_name": usually(st.sampled_from(HEADER_NAMES)), "index": usually(st.integers(-2, 20))},
        optional={"type": usually(st.sampled_from(["string", "integer", "number", "boolean", "list", "date"])),
                  "default_value": json_values})
    return draw(usually(st.lists(mapping, max_size=3)))


@st.composite
def csv_settings(draw: st.DrawFn) -> dict[str, Any]:
    """The settings of a CSV job, as JSON values (strings mostly, as forms send them)."""
    choices = {
        "operation": usually(st.sampled_from(["insert", "update", "upsert", "delete", "merge"])),
        "object_type": usually(st.sampled_from(["machine", "agent"]) | texts),
        "find_by": st.sampled_from(["external_id", "id", "name", "agentId"]) | texts,
        "job_type": usually(st.sampled_from(["objects", "sso_migration", "agent_service_association", "nope"])),
        "character_encoding": usually(st.sampled_from(ENCODING_NAMES)),
        "description": usually(texts),
        "file_name": usually(texts),
        "schedule": schedules,
        "unknown": json_values,
    }
    found = {name: draw(value) for name, value in choices.items() if rare(draw, 4)}
    if rare(draw, 3):
        found["field_mappings"] = field_mappings(draw)
    if not rare(draw, 3):
        found.setdefault("operation", "upsert")
        found.setdefault("object_type", "machine")
    return found


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


@st.composite
def csv_bodies(draw: st.DrawFn) -> Req:
    fields = draw(csv_settings())
    path = "/v1/jobs" + query([(name, as_text(value)) for name, value in fields.items()])
    return draw(posted(draw(csv_files()), CSV_TYPES, path))


@st.composite
def multipart_bodies(draw: st.DrawFn) -> Req:
    boundary = draw(st.sampled_from(["b0undary", "x" * 80, "a b", "\u00e9", "--", ""]))
    fields = draw(csv_settings())
    parts: list[tuple[str, str, bytes]] = []  # (name, extra header lines, content)
    if not rare(draw, 6):
        filename = draw(st.sampled_from(['; filename="m.csv"', "", '; filename=""', '; filename="\u00e9\\"x"',
                                         "; filename*=utf-8''%FF"]))
        parts.append(("file", filename, draw(csv_files())))
    if draw(st.booleans()):
        parts.append(("job", "", (dumps(fields) if not rare(draw, 5) else draw(texts)).encode()))
    else:
        for name, value in fields.items():
            header = draw(st.sampled_from(["", "\r\nContent-Type: text/plain; charset=nonsense",
                                           "\r\nContent-Type: text/plain; charset=utf-16",
                                           "\r\nContent-Transfer-Encoding: base64",
                                           "\r\nContent-Transfer-Encoding: quoted-printable",
                                           "\r\nX-Huge: " + "h" * 10000]))
            parts.append((name, header, as_text(value).encode()))
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
                    + content + b"\r\n" for name, extra, content in parts)
    ending = draw(st.sampled_from([f"--{boundary}--\r\n", f"--{boundary}--\r\n", "", f"--{boundary}\r\n",
                                   "--other--\r\n"]))
    body += ending.encode()
    if rare(draw, 7):
        body = draw(st.binary(max_size=300))
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                         f'multipart/form-data; boundary="{boundary}"', "multipart/form-data",
                                         "multipart/form-data; boundary=wrong",
                                         "multipart/form-data; boundary=" + "b" * 200]))
    data, headers = draw(encoded(body))
    return Req("POST", "/v1/jobs", data, headers + (("Content-Type", content_type),))


@st.composite
def file_content_bodies(draw: st.DrawFn) -> Req:
    fields = draw(csv_settings())
    content = draw(csv_files())
    fields["file_content"] = (content.decode("utf-8", errors="replace") if not rare(draw, 5)
                              else draw(json_values))
    items = draw(st.permutations([(name, dumps(value)) for name, value in fields.items()]))
    return draw(posted(envelope(items), JSON_TYPES))


# Exports and schedules


@st.composite
def export_bodies(draw: st.DrawFn) -> Req:
    time_frame = usually(st.fixed_dictionaries({}, optional={"all": usually(st.booleans()), "date_from": dates,
                                                               "date_to": dates}))
    params = usually(st.fixed_dictionaries({}, optional={
        "format": usually(st.sampled_from(["jsonl", "csv", "xml"])),
        "file_split_size": usually(st.integers(-1, 10**12)),
        "attributes": usually(st.lists(texts, max_size=3)),
    }))
    choices = {
        "title": usually(texts), "description": usually(texts),
        "source": usually(st.sampled_from(["objects", "relationships", "files"])),
        "object_type": usually(st.sampled_from(["machine", "feeds"]) | texts),
        "time_frame": time_frame, "params": params,
    }
    fields = {"kind": draw(sometimes(st.just("export"), st.sampled_from(["import", "EXPORT"]) | json_values))}
    fields.update({name: draw(value) for name, value in choices.items() if not rare(draw, 3)})
    fields.update({name: draw(value) for name, value in (("schedule", schedules), ("data", json_values))
                   if rare(draw, 2 if name == "schedule" else 6)})
    items = draw(st.permutations([(name, dumps(value)) for name, value in fields.items()]))
    return draw(posted(envelope(items), JSON_TYPES))


# Every other route


JOB_ROUTES = ["", "/results", "/results.csv", "/file", "/log", "/cancel", "/suspend", "/resume", "/runs", "/live",
              "/files"]
OTHER_ROUTES = ["/v1/objects/{}", "/v1/relationships/{}", "/v1/files/{}", "/v1/history/{}",
                "/v1/history/{}/progress", "/v1/job-types/{}", "/v1/job-types/{}/template"]
LISTS = ["/v1/jobs", "/v1/history", "/v1/objects", "/v1/relationships", "/v1/files", "/v1/job-types",
         "/v1/job-statuses", "/v1/version", "/v1/health", "/v1/live", "/v1/jobs/{}/runs", "/v1/jobs/{}/results",
         "/v1/jobs/{}/files", "/v1/job-types/{}/template"]
METHODS = ["GET", "GET", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"]
ODD_IDS = ["nope", "a-b", "a_b", "%25", "%", "%zz", "%00", "%2F", "..", ".", "%2E%2E%2Fetc", "x" * 3000,
           quote("ü"), quote("😀"), quote("a,b"), quote(" "), "objects", "sso_migration"]
QUERY_NAMES = ["limit", "offset", "status", "sort", "order", "q", "type", "external_id", "relationship_type",
               "job_id", "name", "job_title", "created_from", "created_to", "object_type", "ids", "names", "api_key"]
QUERY_VALUES = st.one_of(numbers_as_text, texts, dates.map(as_text), st.sampled_from(
    ["queued", "succeeded", "scheduled", "created_at", "description", "status", "asc", "desc", "DESC", "id",
     "field:value", "name:", ":", "a:b c:d", "external_id:m-1", "jsonl", "csv", "a,b,,c", "," * 200]))


def ids_from(target: Target) -> st.SearchStrategy[str]:
    real = target.job_ids + target.file_names + target.object_ids
    return st.sampled_from(real) | st.sampled_from(ODD_IDS) | st.text(min_size=1, max_size=20).map(quote)


def hostile_query(draw: st.DrawFn) -> str:
    params = draw(st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=5), QUERY_VALUES), max_size=4))
    text = query(params)
    if rare(draw, 7):
        text += draw(st.sampled_from(["&limit=%FF", "&q=%", "&&&", "&=", "&limit", "&sort=%00"]))
    return text


@st.composite
def put_bodies(draw: st.DrawFn) -> bytes:
    if rare(draw, 5):
        return draw(st.binary(max_size=50) | json_values.map(lambda value: dumps(value).encode()))
    choices = {"description": usually(texts), "schedule": schedules, "suspended": usually(st.booleans()),
               "params": usually(st.fixed_dictionaries({}, optional={
                   "format": st.sampled_from(["jsonl", "csv", "x"]), "file_split_size": st.integers(-1, 10**9),
                   "attributes": json_values})),
               "status": json_values}
    return dumps({name: draw(value) for name, value in choices.items() if draw(st.booleans())}).encode()


@st.composite
def job_route_requests(draw: st.DrawFn, target: Target) -> Req:
    path = f"/v1/jobs/{draw(ids_from(target))}{draw(st.sampled_from(JOB_ROUTES))}"
    method = draw(st.sampled_from(METHODS))
    body = draw(put_bodies()) if method in ("PUT", "POST", "PATCH") and not rare(draw, 4) else b""
    headers = (("Content-Type", "application/json"),) if body and not rare(draw, 4) else ()
    return Req(method, path + hostile_query(draw), body, headers)


@st.composite
def list_requests(draw: st.DrawFn, target: Target) -> Req:
    path = draw(st.sampled_from(LISTS)).replace("{}", draw(ids_from(target)))
    method = draw(st.sampled_from(["GET", "GET", "GET", "DELETE", "POST"]))
    if method == "DELETE" and draw(st.booleans()):
        path = draw(st.sampled_from(["/v1/jobs", "/v1/history", "/v1/files"]))
        listed = ",".join(draw(st.lists(ids_from(target), max_size=4)))
        return Req(method, path + "?" + draw(st.sampled_from(["ids", "names"])) + "=" + listed + hostile_query(draw))
    return Req(method, path + hostile_query(draw))


@st.composite
def other_route_requests(draw: st.DrawFn, target: Target) -> Req:
    name = draw(ids_from(target) | st.sampled_from(["objects", "sso_migration", "agent_service_association"]))
    path = draw(st.sampled_from(OTHER_ROUTES)).replace("{}", name)
    return Req(draw(st.sampled_from(METHODS)), path + hostile_query(draw))


# The stack


@pytest.fixture(scope="module")
def target(make_stack: Callable[..., Stack], pytestconfig: pytest.Config) -> Iterator[Target]:
    """A small stack of its own with low limits (hostile bodies stay cheap), holding a JSON job,
    a CSV job, an export with its file, a scheduled export and jobs produced to Kafka with ids
    holding ``-`` and ``_`` (the API makes only hex ids)."""
    stack = make_stack(**LIMITS).start_all()
    api = stack.client(KEY)
    json_job = api.run({"type": "resources", "action": "external_id_set",
                        "data": [{"type": "machine", "external_id": f"m-{i}", "attributes": {"n": i}}
                                 for i in range(3)]})
    csv_job = api.post_csv(b"external_id,name\nm-1,press\nm-9\n", operation="upsert", object_type="machine")
    assert csv_job.status == 202, csv_job.body
    export = api.run({"kind": "export", "title": "fuzz", "object_type": "machine"})
    definition = api.submit({"kind": "export", "title": "nightly", "object_type": "machine",
                             "schedule": {"cron": "0 2 * * *"}})
    produced = [f"fz-{uuid.uuid4().hex[:6]}_kafka{n}" for n in range(4)]
    produce(stack, [(job_id.encode(), message) for job_id in produced for message in (
        json.dumps({"kind": "request", "job_id": job_id, "tenant": "tenant-a", "type": "resources",
                    "action": "external_id_set", "description": "from kafka", "parts": 1}).encode(),
        json.dumps({"kind": "part", "job_id": job_id, "part": 0,
                    "records": [{"type": "machine", "external_id": "k-1"}]}).encode())])
    for job_id in produced:
        wait_for(lambda job_id=job_id: api.get(f"/v1/jobs/{job_id}").status == 200, what=f"the produced job {job_id}")
        api.wait_done(job_id)
    files = [item["name"] for item in api.get(f"/v1/jobs/{export['id']}/files").body["items"]]
    objects = [item["id"] for item in api.get("/v1/objects?type=machine").body["items"]]
    found = Target(stack, [json_job["id"], csv_job.body["id"], export["id"], definition["id"], produced[0]],
                   files, objects, produced[1:])
    started = time.monotonic()
    yield found
    with pytestconfig.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        pytestconfig.pluginmanager.get_plugin("terminalreporter").write_line(
            f"\ntest_fuzz: {found.sent} generated cases ran in {time.monotonic() - started:.0f} s")
    stack.stop()


# The properties

@fuzz_settings(max_examples=800)
@given(data=st.data())
def test_json_job_bodies_get_an_answer_in_shape(target: Target, data: st.DataObject) -> None:
    check(target, data.draw(st.one_of(json_envelopes(), bare_arrays(), ndjson_bodies())))


@fuzz_settings(max_examples=800)
@given(data=st.data())
def test_csv_job_bodies_get_an_answer_in_shape(target: Target, data: st.DataObject) -> None:
    check(target, data.draw(st.one_of(csv_bodies(), multipart_bodies(), file_content_bodies())))


@fuzz_settings(max_examples=400)
@given(data=st.data())
def test_export_and_schedule_bodies_get_an_answer_in_shape(target: Target, data: st.DataObject) -> None:
    check(target, data.draw(export_bodies()))


@fuzz_settings(max_examples=1000)
@given(data=st.data())
def test_job_routes_with_odd_ids_get_an_answer_in_shape(target: Target, data: st.DataObject) -> None:
    check(target, data.draw(job_route_requests(target)))


@fuzz_settings(max_examples=1000)
@given(data=st.data())
def test_lists_and_other_routes_get_an_answer_in_shape(target: Target, data: st.DataObject) -> None:
    check(target, data.draw(st.one_of(list_requests(target), other_route_requests(target))))


# Inputs that once broke the service, each kept as a named case


def json_post(body: bytes | str, content_type: str = "application/json", path: str = "/v1/jobs",
              encoding: str | None = None) -> Req:
    data = body.encode() if isinstance(body, str) else body
    headers = (("Content-Type", content_type),) + ((("Content-Encoding", encoding),) if encoding else ())
    return Req("POST", path, data, headers)


def multipart(body: bytes, content_type: str = "multipart/form-data; boundary=b0undary") -> Req:
    return Req("POST", "/v1/jobs", body, (("Content-Type", content_type),))


def part(name: str, content: bytes, extra: str = "", filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--b0undary\r\nContent-Disposition: {disposition}{extra}\r\n\r\n".encode() + content + b"\r\n"


CSV = b"external_id,name\nm-1,press\n"
CSV_FIELDS = part("operation", b"upsert") + part("object_type", b"machine")
EXPORT = '{"kind":"export","title":"t","object_type":"machine",'
RECORD = '{"type":"resources","action":"post","data":[%s]}'

KNOWN: dict[str, Callable[[Target], Req]] = {
    # JSON jobs
    "type-as-list": lambda t: json_post('{"type":["resources"],"action":"post","data":[{}]}'),
    "type-as-object": lambda t: json_post('{"type":{"a":1},"action":"post","data":[{}]}'),
    "action-as-list": lambda t: json_post('{"type":"resources","action":["post"],"data":[{}]}'),
    "action-as-object-in-the-query": lambda t: json_post("[{}]", path="/v1/jobs?type=resources&action=%7B%7D"),
    "type-twice-the-second-a-list": lambda t: json_post('{"type":"resources","action":"post","type":[{}]}'),
    "record-nested-300-deep": lambda t: json_post(RECORD % nested(300)),
    "record-nested-1023-deep": lambda t: json_post(RECORD % nested(1023)),
    "attributes-nested-500-deep": lambda t: json_post(RECORD % ('{"type":"fz","attributes":' + "{\"a\":" * 500
                                                                + "1" + "}" * 500 + "}")),
    "array-nested-20000-deep": lambda t: json_post(nested(20000)),
    "kind-after-data": lambda t: json_post('{"type":"resources","action":"post","data":[{"type":"m"}],'
                                           '"kind":"import"}'),
    "export-kind-after-data": lambda t: json_post('{"data":[{}],"kind":"export","title":"t","object_type":"machine"}'),
    # Content encodings
    "corrupt-gzip": lambda t: json_post(gzip.compress(RECORD.encode() % b"{}")[:20], encoding="gzip"),
    "plain-body-said-gzip": lambda t: json_post(RECORD % "{}", encoding="gzip"),
    "empty-gzip-stream": lambda t: json_post(gzip.compress(b""), encoding="gzip"),
    "plain-body-said-deflate": lambda t: json_post("[{}]", "application/octet-stream",
                                                   "/v1/jobs?type=resources&action=post", encoding="deflate"),
    "corrupt-deflate": lambda t: json_post(zlib.compress(RECORD.encode() % b"{}")[:12], encoding="deflate"),
    "truncated-deflate": lambda t: json_post(b"x\x9c\xabV*\xc9,\xc9IU\xb2RRW\xf0\x0fR0\xb45T\xd0\xd5U\xd2Q\xca"
                                             b"\xce\xccK\x01\n\xa6V\x14\xe4\x17\x95\x00", "text/json",
                                             encoding="deflate"),
    "brotli": lambda t: json_post(RECORD % "{}", encoding="br"),
    "zstd": lambda t: json_post(RECORD % "{}", encoding="zstd"),
    "unknown-encoding": lambda t: json_post(RECORD % "{}", encoding="x-unknown"),
    "gzip-inflating-past-the-body-limit": lambda t: json_post(
        gzip.compress(b'{"type":"resources","action":"post","x":"' + b"a" * (4 << 20) + b'"}'), encoding="gzip"),
    "corrupt-gzip-csv": lambda t: Req("POST", "/v1/jobs?operation=upsert&object_type=machine",
                                      gzip.compress(CSV)[:15], (("Content-Type", "text/csv"),
                                                                ("Content-Encoding", "gzip"))),
    # Multipart
    "multipart-without-boundary": lambda t: multipart(part("file", CSV, filename="m.csv") + b"--b0undary--\r\n",
                                                      "multipart/form-data"),
    "multipart-empty-boundary": lambda t: multipart(b"--\r\n", "multipart/form-data; boundary="),
    "multipart-wrong-boundary": lambda t: multipart(part("file", CSV) + b"--b0undary--\r\n",
                                                    "multipart/form-data; boundary=wrong"),
    "multipart-boundary-over-70-characters": lambda t: multipart(b"--" + b"b" * 200 + b"--\r\n",
                                                                 "multipart/form-data; boundary=" + "b" * 200),
    "multipart-non-ascii-boundary": lambda t: multipart("--é\r\n".encode(), "multipart/form-data; boundary=é"),
    "multipart-unclosed": lambda t: multipart(CSV_FIELDS + part("file", CSV)[:-2]),
    "multipart-garbage": lambda t: multipart(b"\xb0garbage"),
    "multipart-empty": lambda t: multipart(b""),
    "multipart-huge-part-header": lambda t: multipart(
        CSV_FIELDS + part("file", CSV, "\r\nX-Huge: " + "h" * 10000) + b"--b0undary--\r\n"),
    "multipart-setting-with-unknown-charset": lambda t: multipart(
        part("file", CSV) + part("operation", b"upsert", "\r\nContent-Type: text/plain; charset=nonsense")
        + part("object_type", b"machine") + b"--b0undary--\r\n"),
    "multipart-setting-with-bad-base64": lambda t: multipart(
        part("file", CSV) + part("operation", b"!!!", "\r\nContent-Transfer-Encoding: base64")
        + part("object_type", b"machine") + b"--b0undary--\r\n"),
    "multipart-setting-not-utf-8": lambda t: multipart(
        part("file", CSV) + part("operation", b"\x9eupsert") + part("object_type", b"machine") + b"--b0undary--\r\n"),
    "multipart-ends-with-another-boundary": lambda t: multipart(CSV_FIELDS + part("file", CSV) + b"--other--\r\n"),
    "multipart-job-part-not-json": lambda t: multipart(part("file", CSV) + part("job", b"{") + b"--b0undary--\r\n"),
    "multipart-nested": lambda t: multipart(part("file", CSV, "\r\nContent-Type: multipart/mixed; boundary=in")
                                            + b"--b0undary--\r\n"),
    # CSV encodings
    **{f"csv-encoding-{name}": lambda t, name=name: Req(
        "POST", f"/v1/jobs?operation=upsert&object_type=machine&character_encoding={name}", CSV,
        (("Content-Type", "text/csv"),))
       for name in ("base64", "zlib", "rot13", "punycode", "hex", "uu", "bz2", "quopri", "idna", "undefined")},
    "csv-utf-16-without-bom": lambda t: Req("POST", "/v1/jobs?operation=upsert&object_type=machine&"
                                                    "character_encoding=utf-16", CSV, (("Content-Type", "text/csv"),)),
    "csv-utf-16-odd-length": lambda t: Req("POST", "/v1/jobs?operation=upsert&object_type=machine&"
                                                   "character_encoding=utf-16", b"\xff\xfe" + CSV,
                                           (("Content-Type", "text/csv"),)),
    "csv-file-content-encoding-base64": lambda t: json_post(
        '{"operation":"upsert","object_type":"machine","character_encoding":"base64","file_content":"a,b\\n1,2\\n"}'),
    "csv-unclosed-quote-then-5000-lines": lambda t: Req(
        "POST", "/v1/jobs?operation=upsert&object_type=machine", b'external_id,name\n"m-1,x\n' + b"a,b\n" * 5000,
        (("Content-Type", "text/csv"),)),
    # Dates
    "export-date-from-year-1-east-of-utc": lambda t: json_post(
        EXPORT + '"time_frame":{"date_from":"0001-01-01T00:00:00+01:00","date_to":"2026-01-01T00:00:00Z"}}'),
    "export-date-to-year-9999-with-fraction": lambda t: json_post(
        EXPORT + '"time_frame":{"date_from":"2026-01-01T00:00:00Z","date_to":"9999-12-31T23:59:59.9999"}}'),
    "schedule-start-year-9999": lambda t: json_post(EXPORT + '"schedule":{"start_date":"9999-12-31T23:59:59.9999"}}'),
    "schedule-start-year-1-with-cron": lambda t: json_post(
        EXPORT + '"schedule":{"cron":"0 2 * * *","start_date":"0001-01-01T00:00:00+01:00"}}'),
    "schedule-that-never-fires": lambda t: json_post(EXPORT + '"schedule":{"cron":"0 0 31 2 *"}}'),
    "files-created-from-year-1-east-of-utc": lambda t: Req(
        "GET", "/v1/files?created_from=" + quote("0001-01-01T00:00:00+01:00")),
    "files-created-to-year-9999-with-fraction": lambda t: Req(
        "GET", "/v1/files?created_to=" + quote("9999-12-31T23:59:59.9999")),
    "put-schedule-year-9999": lambda t: Req(
        "PUT", f"/v1/jobs/{t.job_ids[3]}",
        b'{"schedule":{"cron":"0 2 * * *","start_date":"9999-12-31T23:59:59.9999"}}',
        (("Content-Type", "application/json"),)),
    # Deletes and ids
    "delete-a-job-whose-id-has-dash-and-underscore": lambda t: Req("DELETE", f"/v1/jobs/{t.produced[0]}"),
    "delete-jobs-listing-an-id-with-dash-and-underscore": lambda t: Req(
        "DELETE", f"/v1/jobs?ids={t.produced[1]},{t.job_ids[1]}"),
    "delete-history-of-an-id-with-dash-and-underscore": lambda t: Req("DELETE", f"/v1/history/{t.produced[2]}"),
    "job-id-3000-characters": lambda t: Req("GET", "/v1/jobs/" + "x" * 3000),
    "job-id-percent-encoded-nul": lambda t: Req("GET", "/v1/jobs/%00/results.csv"),
    "job-id-invalid-utf-8": lambda t: Req("GET", "/v1/jobs/%FF%FE/log"),
    "limit-400-digits": lambda t: Req("GET", "/v1/jobs?limit=" + "9" * 400),
    "offset-over-int64": lambda t: Req("GET", "/v1/objects?offset=" + str(2**64)),
    "live-without-upgrade": lambda t: Req("GET", f"/v1/jobs/{t.job_ids[0]}/live"),
    "template-q-without-colon": lambda t: Req("GET", "/v1/job-types/sso_migration/template?q=nocolon"),
    "template-limit-huge": lambda t: Req("GET", "/v1/job-types/objects/template?object_type=machine&limit=99999999"),
}


# Where the issue says more than "no 5xx": what the service cannot read is refused (a Content-Encoding
# it cannot decode: 415 or 400), schedules are checked for a next fire time when accepted, and
# the keys of an envelope may come in any order.
REFUSED = {"type-as-list", "type-as-object", "action-as-list", "type-twice-the-second-a-list", "corrupt-gzip",
           "plain-body-said-gzip", "plain-body-said-deflate", "corrupt-deflate", "truncated-deflate", "brotli",
           "zstd", "unknown-encoding", "csv-utf-16-without-bom",
           "csv-file-content-encoding-base64", "schedule-that-never-fires", "export-kind-after-data",
           *(name for name in KNOWN if name.startswith("multipart-")),
           *(name for name in KNOWN if name.startswith("csv-encoding-") and name != "csv-encoding-idna")}
ACCEPTED = {"kind-after-data"}


@pytest.mark.parametrize("name", KNOWN)
def test_known_hostile_requests_get_an_answer_in_shape(target: Target, name: str) -> None:
    req = KNOWN[name](target)
    answer = target.send(req)
    assert_answer(req, answer)
    if name in REFUSED:
        assert 400 <= answer.status < 500, f"{req!r} -> {answer.status} {answer.body[:300]!r}"
    if name in ACCEPTED:
        assert answer.status == 202, f"{req!r} -> {answer.status} {answer.body[:300]!r}"


def test_a_schedule_that_never_fires_leaves_the_worker_running(target: Target) -> None:
    """Refused at the door, or accepted: either way the worker's scheduler goes on firing the
    other definitions, and the worker keeps running."""
    api = target.stack.client(KEY)
    never = api.post("/v1/jobs", json_body={"kind": "export", "title": "never", "object_type": "machine",
                                            "schedule": {"cron": "0 0 31 2 *"}})
    assert never.status in (202, 400), never.body
    if never.status == 202:
        wait_for(lambda: any(job["id"] == never.body["id"]
                             for job in api.get("/v1/jobs?status=scheduled&limit=1000").body["items"]),
                 timeout=20, what="the definition in the view")
    soon = api.submit({"kind": "export", "title": "soon", "object_type": "machine",
                       "schedule": {"immediately": True, "runs": 1}})
    runs = wait_for(lambda: api.get(f"/v1/jobs/{soon['id']}/runs").body["items"], timeout=20,
                    what="the run of a definition that fires at once")
    assert api.wait_done(runs[0]["id"], timeout=20)["status"] == "succeeded"
    target.stack.wait_healthy(timeout=30)


# Malformed HTTP, sent over a raw socket

RAW_REQUESTS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "request line too long": b"GET /v1/jobs/" + b"x" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too long": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 20000 + b"\r\n\r\n",
    "header without colon": b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "bad chunk size": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunked and content-length": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\nContent-Length: 3\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "negative content-length": b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\nContent-Length: -1\r\n\r\n",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown version": b"GET /v1/jobs HTTP/9.9\r\nHost: x\r\nx-api-key: key-a\r\n\r\n",
    "absolute url": b"GET http://elsewhere/v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\n\r\n",
}


def send_raw(port: int, data: bytes) -> Answer | None:
    """Send bytes as they are; the answer, or None if the server closed without one."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=4 * REQUEST_SECONDS) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    if not received:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    content_type = headers.get("content-type", "").split(";")[0]
    if headers.get("transfer-encoding") == "chunked":
        body = b""  # not needed: only the status and type of protocol answers are checked
    return Answer(int(lines[0].split()[1]), content_type, body, time.monotonic() - start)


@pytest.mark.parametrize("raw", RAW_REQUESTS.values(), ids=RAW_REQUESTS.keys())
def test_malformed_http_gets_a_4xx_or_a_closed_connection(target: Target, raw: bytes) -> None:
    answer = send_raw(target.stack.port, raw)
    if answer is not None:
        assert_answer(Req("RAW", raw[:60].decode("latin-1"), protocol=True), answer)


def test_the_stack_is_healthy_and_applies_jobs_after_the_fuzzing(target: Target) -> None:
    api = target.stack.client(KEY)
    job = api.run({"type": "resources", "action": "post", "data": [{"type": "after-fuzz"}]}, timeout=30)
    assert job["status"] == "succeeded"
    target.stack.wait_healthy(timeout=30)
