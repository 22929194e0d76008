"""The API's probes for orchestrators on a running stack: no API key needed."""

from __future__ import annotations

from tests.support import Client, Stack


def test_livez_and_readyz_answer_200_without_a_key(stack: Stack) -> None:
    anonymous = Client(stack.base)
    for path in ("/livez", "/readyz"):
        resp = anonymous.get(path)
        assert (resp.status, resp.body) == (200, {"status": "ok"}), path
