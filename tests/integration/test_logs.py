"""BULKJOBS_LOG_FORMAT=json: every line each part writes is one JSON object (its own lines,
aiokafka's, aiohttp's and Faust's alike)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from tests.support import Stack

KEYS = {"timestamp", "level", "process", "logger", "message"}


def test_every_log_line_of_every_part_is_a_json_object(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(BULKJOBS_LOG_FORMAT="json").start_all()
    job = stack.client().run({"type": "resources", "action": "post", "data": [{"type": "note", "attributes": {}}]})
    assert job["status"] == "succeeded"
    stack.stop()  # the shutdown's lines too

    for part in ("api", "store", "worker"):
        lines = stack.log_path(part).read_text().splitlines()
        assert lines, f"{part} logged nothing"
        for line in lines:
            entry = orjson.loads(line)
            assert isinstance(entry, dict) and KEYS <= entry.keys(), f"{part}: {line}"
            assert entry["process"] == part, f"{part}: {line}"
