"""Byte-level JSON scanning that the streaming readers (``api.array_splitter``, ``api.envelope``)
share: whitespace, the body of a string, and the 400 for text that is not JSON."""

from __future__ import annotations

import re

import orjson

from bulkjobs.errors import InvalidJson

STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)  # stops at the closing quote or a lone \ at the end
WHITESPACE = re.compile(rb"[ \t\r\n]*")


def skip(pattern: re.Pattern[bytes], data: bytes | bytearray, pos: int = 0) -> int:
    """Where ``pattern``, which matches nothing too, stops matching from ``pos``."""
    match = pattern.match(data, pos)
    return match.end() if match else pos


def invalid_json(exc: orjson.JSONDecodeError) -> InvalidJson:
    return InvalidJson(f"the body is not valid JSON: {exc.msg}")
