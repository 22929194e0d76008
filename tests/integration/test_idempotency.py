"""``Idempotency-Key`` on ``POST /v1/jobs``, end to end: a repeat answers the first job and creates
nothing, in every body form, across an API restart, across two API processes, after the first
client disconnected; a key reused with another body, or repeated while the first is received."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import socket
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bulkjobs.broker import free_port
from tests.support import Client, Response, Stack, wait_for

LEASE = 3.0  # seconds: a dead API's claim blocks its key this long


@pytest.fixture(scope="module")
def keyed(make_stack: Callable[..., Stack]) -> Stack:
    """A stack of its own: the tests restart its API and add a second one."""
    return make_stack(BULKJOBS_IDEMPOTENCY_LEASE=str(LEASE)).start_all()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def with_key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def records(kind: str, count: int = 3) -> list[dict[str, Any]]:
    return [{"type": kind, "external_id": f"{kind}-{n}", "attributes": {"n": n}} for n in range(count)]


def csv_text(kind: str) -> str:
    return "external_id,name\r\n" + "".join(f"{kind}-{n},n{n}\r\n" for n in range(3))


# Each form submits a job described by ``description`` (a kind of its own), under ``key``.
Form = Callable[[Client, str, str], Response]


def envelope(api: Client, key: str, description: str) -> Response:
    return api.post("/v1/jobs", headers=with_key(key), json_body={
        "type": "resources", "action": "external_id_set", "description": description, "data": records(description)})


def gzipped_envelope(api: Client, key: str, description: str) -> Response:
    """gzip's header holds the time it was made: a repeat compressed again is still the same body."""
    body = json.dumps({"type": "resources", "action": "external_id_set", "description": description,
                       "data": records(description)}).encode()
    return api.post("/v1/jobs", data=gzip.compress(body), content_type="application/json",
                    headers={**with_key(key), "Content-Encoding": "gzip"})


def bare_array(api: Client, key: str, description: str) -> Response:
    query = urllib.parse.urlencode({"type": "resources", "action": "external_id_set", "description": description})
    return api.post(f"/v1/jobs?{query}", headers=with_key(key), data=json.dumps(records(description)).encode(),
                    content_type="application/json")


def ndjson(api: Client, key: str, description: str) -> Response:
    query = urllib.parse.urlencode({"type": "resources", "action": "external_id_set", "description": description})
    lines = "".join(json.dumps(record) + "\n" for record in records(description))
    return api.post(f"/v1/jobs?{query}", headers=with_key(key), data=lines.encode(),
                    content_type="application/x-ndjson")


CSV_SETTINGS = {"operation": "upsert"}


def text_csv(api: Client, key: str, description: str) -> Response:
    query = urllib.parse.urlencode({**CSV_SETTINGS, "object_type": description, "description": description})
    return api.post(f"/v1/jobs?{query}", headers=with_key(key), data=csv_text(description).encode(),
                    content_type="text/csv")


def multipart(api: Client, key: str, description: str) -> Response:
    """``Client.post_multipart`` draws a new boundary each time: the boundary is not the body."""
    settings = {**CSV_SETTINGS, "object_type": description, "description": description}
    boundary = "b-" + uuid.uuid4().hex
    body = b""
    for name, filename, content in (("job", None, json.dumps(settings).encode()),
                                    ("file", "f.csv", csv_text(description).encode())):
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return api.post("/v1/jobs", headers=with_key(key), data=body,
                    content_type=f"multipart/form-data; boundary={boundary}")


def file_content(api: Client, key: str, description: str) -> Response:
    return api.post("/v1/jobs", headers=with_key(key), json_body={
        **CSV_SETTINGS, "object_type": description, "description": description,
        "file_content": csv_text(description), "file_name": "f.csv"})


def export(api: Client, key: str, description: str) -> Response:
    return api.post("/v1/jobs", headers=with_key(key), json_body={
        "kind": "export", "title": description, "object_type": description, "description": description})


FORMS: dict[str, Form] = {form.__name__: form for form in (envelope, gzipped_envelope, bare_array, ndjson,
                                                           text_csv, multipart, file_content, export)}


def jobs_described(api: Client, description: str) -> int:
    resp = api.get("/v1/jobs?" + urllib.parse.urlencode({"q": description}))
    assert resp.status == 200, resp.body
    return int(resp.body["total"])


def assert_replayed(first: Response, again: Response) -> None:
    assert first.status == 202, first.body
    assert "Idempotent-Replayed" not in first.headers
    assert again.status == 202, again.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.body == first.body


@pytest.mark.parametrize("form", FORMS)
def test_a_repeat_in_every_form_answers_the_first_job_and_creates_nothing(keyed: Stack, form: str) -> None:
    api, key, description = keyed.client(), unique("key"), unique(form)
    first = FORMS[form](api, key, description)
    again = FORMS[form](api, key, description)
    assert_replayed(first, again)
    api.wait_done(first.body["id"])
    assert jobs_described(api, description) == 1


def test_a_key_reused_with_another_body_is_refused(keyed: Stack) -> None:
    api, key, description = keyed.client(), unique("key"), unique("reused")
    first = envelope(api, key, description)
    assert first.status == 202, first.body
    other = envelope(api, key, description + "-other")
    assert other.status == 422, other.body
    assert other.body["error"]["code"] == "idempotency_key_reused"
    moved = bare_array(api, key, description)  # the same records, sent another way
    assert moved.status == 422 and moved.body["error"]["code"] == "idempotency_key_reused"
    api.wait_done(first.body["id"])
    assert jobs_described(api, description + "-other") == 0


def test_keys_of_two_tenants_never_collide(keyed: Stack) -> None:
    key, description = unique("shared"), unique("tenants")
    of_a = envelope(keyed.client("key-a"), key, description)
    of_b = envelope(keyed.client("key-b"), key, description)
    assert of_a.status == of_b.status == 202
    assert "Idempotent-Replayed" not in of_b.headers
    assert of_a.body["id"] != of_b.body["id"]
    assert_replayed(of_b, envelope(keyed.client("key-b"), key, description))


@pytest.mark.parametrize("key", ["~", ("x " + uuid.uuid4().hex * 8)[:254] + "!"],
                         ids=["1 character", "255 characters"])
def test_keys_of_1_to_255_printable_characters_are_taken(keyed: Stack, key: str) -> None:
    """The stack is this module's own: no other test uses these keys."""
    api, description = keyed.client(), unique("length")
    assert_replayed(envelope(api, key, description), envelope(api, key, description))


@pytest.mark.parametrize("key", ["k" * 256, "tab\there", "caf\u00e9"])
def test_a_key_too_long_or_not_printable_ascii_is_a_400(keyed: Stack, key: str) -> None:
    api, description = keyed.client(), unique("bad-key")
    resp = api.post("/v1/jobs", headers={"Idempotency-Key": key}, data=json.dumps({
        "type": "resources", "action": "external_id_set", "description": description,
        "data": records(description)}).encode("utf-8"), content_type="application/json")
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "invalid_idempotency_key"
    assert jobs_described(api, description) == 0


def test_a_replay_holds_across_an_api_restart(keyed: Stack) -> None:
    api, key, description = keyed.client(), unique("key"), unique("restart")
    first = envelope(api, key, description)
    keyed.kill("api")
    keyed.start("api")
    keyed.wait_healthy()
    assert_replayed(first, envelope(api, key, description))


@pytest.fixture
def second_api(keyed: Stack) -> Iterator[Stack]:
    """Another API process on the same data dir and broker, on its own port."""
    other = dataclasses.replace(keyed, port=free_port(), processes={})
    other.start("api", name="api2")
    other.wait_healthy()
    yield other
    other.stop()


def test_a_replay_holds_across_api_processes(keyed: Stack, second_api: Stack) -> None:
    key, description = unique("key"), unique("two-apis")
    first = envelope(keyed.client(), key, description)
    assert_replayed(first, envelope(second_api.client(), key, description))


class SlowUpload:
    """A chunked ``POST /v1/jobs`` sent a piece at a time, answered once finished."""

    def __init__(self, stack: Stack, key: str, body: bytes) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
        self.connection.putrequest("POST", "/v1/jobs")
        for name, value in (("x-api-key", "key-a"), ("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked"), ("Idempotency-Key", key)):
            self.connection.putheader(name, value)
        self.connection.endheaders()
        self.body = body

    def send(self, data: bytes) -> None:
        self.connection.send(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> Response:
        self.connection.send(b"0\r\n\r\n")
        resp = self.connection.getresponse()
        raw = resp.read()
        self.connection.close()
        return Response(resp.status, json.loads(raw), dict(resp.headers))


def envelope_bytes(description: str) -> bytes:
    return json.dumps({"type": "resources", "action": "external_id_set", "description": description,
                       "data": records(description)}).encode()


def test_a_repeat_while_the_first_is_received_is_a_409(keyed: Stack) -> None:
    api, key, description = keyed.client(), unique("key"), unique("in-use")
    body = envelope_bytes(description)
    upload = SlowUpload(keyed, key, body)
    upload.send(body[:10])

    def repeat() -> Response | None:
        resp = envelope(api, key, description)
        return resp if resp.status == 409 else None

    in_use = wait_for(repeat, timeout=30, what="the first request to claim the key")
    assert in_use.body["error"]["code"] == "idempotency_key_in_use"
    upload.send(body[10:])
    first = upload.finish()
    assert_replayed(first, envelope(api, key, description))
    api.wait_done(first.body["id"])
    assert jobs_described(api, description) == 1


def raw_post(stack: Stack, key: str, body: bytes, content_length: int) -> socket.socket:
    """A POST whose bytes are all sent, none of its answer read."""
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: key-a\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {key}\r\nContent-Length: {content_length}\r\n\r\n").encode()
    sock.sendall(head + body)
    return sock


def test_a_client_gone_before_reading_its_202_gets_its_job_on_a_repeat(keyed: Stack) -> None:
    """The answer is kept before it is sent: a client whose connection dropped before the 202
    reached it learns its job by repeating the request."""
    api, key, description = keyed.client(), unique("key"), unique("gone")
    body = envelope_bytes(description)
    sock = raw_post(keyed, key, body, len(body))
    wait_for(lambda: jobs_described(api, description) == 1, timeout=30, what="the job to be accepted")
    sock.close()  # its answer never read
    again = envelope(api, key, description)
    assert again.status == 202, again.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    api.wait_done(again.body["id"])
    assert jobs_described(api, description) == 1


def test_an_upload_cut_short_releases_its_key(keyed: Stack) -> None:
    api, key, description = keyed.client(), unique("key"), unique("cut")
    body = envelope_bytes(description)
    sock = raw_post(keyed, key, body[:20], len(body))  # promises more than it sends
    sock.shutdown(socket.SHUT_WR)
    sock.recv(65536)  # the server gives up on it (400) or closes
    sock.close()

    def taken() -> Response | None:
        resp = envelope(api, key, description)
        return resp if resp.status != 409 else None

    retry = wait_for(taken, timeout=30, what="the key to be released")
    assert retry.status == 202, retry.body
    assert "Idempotent-Replayed" not in retry.headers
    api.wait_done(retry.body["id"])
    assert jobs_described(api, description) == 1


def test_requests_racing_on_one_key_through_two_api_processes_make_one_job(keyed: Stack,
                                                                           second_api: Stack) -> None:
    key, description = unique("key"), unique("race")
    clients = [keyed.client(), second_api.client()] * 4
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(lambda api: envelope(api, key, description), clients))
    assert {answer.status for answer in answers} <= {202, 409}
    created = [(api, answer) for api, answer in zip(clients, answers, strict=True)
               if answer.status == 202 and "Idempotent-Replayed" not in answer.headers]
    assert len(created) == 1, [(answer.status, answer.headers) for answer in answers]
    (creator, job), = created
    assert {answer.body["id"] for answer in answers if answer.status == 202} == {job.body["id"]}
    creator.wait_done(job.body["id"])  # (the other process finds it once the view has it)
    assert jobs_described(keyed.client(), description) == 1


def test_the_claim_of_an_api_that_died_frees_its_key_after_its_lease(keyed: Stack) -> None:
    api, key, description = keyed.client(), unique("key"), unique("died")
    body = envelope_bytes(description)
    upload = SlowUpload(keyed, key, body)
    upload.send(body[:10])
    wait_for(lambda: envelope(api, key, description).status == 409, timeout=30, what="the key to be claimed")
    keyed.kill("api")  # mid-upload: nothing of it was published
    upload.connection.close()
    keyed.start("api")
    keyed.wait_healthy()

    def taken() -> Response | None:
        resp = envelope(api, key, description)
        return resp if resp.status != 409 else None

    retry = wait_for(taken, timeout=LEASE * 10, interval=1.0, what="the dead claim's lease to run out")
    assert retry.status == 202 and "Idempotent-Replayed" not in retry.headers
    api.wait_done(retry.body["id"])
    assert jobs_described(api, description) == 1
