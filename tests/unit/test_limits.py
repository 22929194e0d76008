"""Field limits checked at the door, and the same limit on every path that takes the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bulkjobs.domain.csv_import import parse_settings
from bulkjobs.domain.exports import parse_export
from bulkjobs.domain.limits import MAX_DESCRIPTION_CHARS, check_description
from bulkjobs.errors import BadRequest


@pytest.mark.parametrize("value", [None, "", "nightly load", "é" * MAX_DESCRIPTION_CHARS])
def test_a_description_within_the_limit_is_kept(value: str | None) -> None:
    assert check_description(value) == value


@pytest.mark.parametrize("length", [MAX_DESCRIPTION_CHARS + 1, 1_010_000])
def test_a_description_over_the_limit_is_refused_naming_the_limit(length: int) -> None:
    with pytest.raises(BadRequest) as caught:
        check_description("d" * length)
    body = caught.value.to_body()["error"]
    assert (body["code"], body["field"], body["limit"]) == ("field_too_long", "description", MAX_DESCRIPTION_CHARS)


@pytest.mark.parametrize("value", [3, ["x"], {"a": 1}, True])
def test_a_description_that_is_not_a_string_is_refused(value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        check_description(value)
    assert caught.value.details["field"] == "description"


EXPORT = {"kind": "export", "title": "t", "object_type": "server"}
PATHS: list[Callable[[dict[str, Any]], Any]] = [
    parse_settings,
    lambda fields: parse_export({**EXPORT, **fields}),
]


@pytest.mark.parametrize("parse", PATHS, ids=["csv settings", "export"])
def test_every_path_that_takes_a_description_applies_the_limit(parse: Callable[[dict[str, Any]], Any]) -> None:
    assert parse({"description": "d" * MAX_DESCRIPTION_CHARS}).description == "d" * MAX_DESCRIPTION_CHARS
    with pytest.raises(BadRequest) as caught:
        parse({"description": "d" * (MAX_DESCRIPTION_CHARS + 1)})
    assert caught.value.code == "field_too_long"


def test_an_update_applies_the_limit_too() -> None:
    from bulkjobs.api.lifecycle import _changes

    assert _changes({"type": "resources"}, {"description": "d" * MAX_DESCRIPTION_CHARS}) == \
        {"description": "d" * MAX_DESCRIPTION_CHARS}
    with pytest.raises(BadRequest) as caught:
        _changes({"type": "resources"}, {"description": "d" * (MAX_DESCRIPTION_CHARS + 1)})
    assert caught.value.code == "field_too_long"
