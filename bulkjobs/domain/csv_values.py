"""A CSV cell's text as a value of its column's type (string, integer, number, boolean, list).

A cell that is not a value of its type raises ValueError with a reason that quotes it (the
start of a long one): its row is skipped with that reason (a default value: a 400).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})

# Integers JSON can carry here (orjson writes 64-bit integers, signed or not).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_QUOTED_CHARS = 100  # of a cell quoted in a skipped row's reason


def _quoted(text: str) -> str:
    """A cell as a reason quotes it: the start of a long one, so reasons stay small."""
    return repr(text) if len(text) <= _QUOTED_CHARS else repr(text[:_QUOTED_CHARS]) + "..."


def _integer(text: str, value: str) -> int:
    try:
        integer = int(value)
    except ValueError:
        raise ValueError(f"{_quoted(text)} is not an integer") from None
    if not _INT_MIN <= integer <= _INT_MAX:
        raise ValueError(f"{_quoted(text)} is out of range for an integer (64 bits)")
    return integer


def _number(text: str, value: str) -> int | float:
    """A number; an integral one written without a point or an exponent stays an integer."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{_quoted(text)} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{_quoted(text)} is not a finite number")
    if number.is_integer() and "." not in value and "e" not in value.lower() and _INT_MIN <= number <= _INT_MAX:
        return int(number)
    return number


def _boolean(text: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{_quoted(text)} is not a boolean (true/false, yes/no, 1/0)")


def _list(text: str, value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


# Each column type but string: its cell's text and that text stripped -> the value.
_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "list": _list,
}


def convert(text: str, column_type: str) -> Any:
    """A cell's text as a value of ``column_type``; ValueError saying why it is not one."""
    if column_type == "string":
        return text
    converter = _CONVERTERS.get(column_type)
    if converter is None:
        raise ValueError(f"unknown column type {column_type!r}")
    return converter(text, text.strip())
