"""Waiting for the view to show a command's outcome (``api.common.until_shown``)."""

from __future__ import annotations

import time

import orjson
import pytest

from bulkjobs.api import common
from bulkjobs.api.common import until_shown


async def test_until_shown_returns_what_the_view_shows_once_it_shows_it() -> None:
    looks: list[float] = []

    async def look() -> str | None:
        looks.append(time.monotonic())
        return "shown" if len(looks) == 4 else None

    assert await until_shown(look, timeout=5) == "shown"
    assert looks[-1] - looks[0] < 0.5  # looks again soon, not after a fixed pause


async def test_until_shown_gives_up_after_the_timeout() -> None:
    async def never() -> None:
        return None

    started = time.monotonic()
    assert await until_shown(never, timeout=0.3) is None
    assert 0.3 <= time.monotonic() - started < 0.5


async def test_a_delete_the_view_does_not_show_in_time_answers_202_with_what_is_pending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "VIEW_WAIT", 0.2)
    still = {"b"}

    async def shown(tenant: str, names: list[str]) -> set[str]:
        return still & set(names)

    resp = await common.answer_deleted(shown, "t", ["a", "b"])
    assert resp.status == 202 and orjson.loads(resp.body)["pending"] == ["b"]

    still.clear()
    assert (await common.answer_deleted(shown, "t", ["a", "b"])).status == 204
