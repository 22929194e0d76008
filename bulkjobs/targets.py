"""Where a completion webhook may go when ``BULKJOBS_WEBHOOK_DENY_PRIVATE`` is set: only to
globally routable addresses (``domain.webhooks.refused_address``).

The API checks a callback URL's host at submit (``check_target``); the worker checks again at
every delivery with ``CheckingResolver``, the resolver of its HTTP client: the addresses it
hands the client are the ones it checked, and the client connects to exactly those, so a name
that resolves to a public address at submit and to a private one later (a DNS rebind) is
refused. Names are resolved with ``getaddrinfo`` in the event loop's executor, never blocking
the loop.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from bulkjobs.domain.webhooks import literal_address, refused_address


class PrivateTarget(Exception):
    """The callback's host is, or resolves to, an address webhooks may not go to."""


def _refusal(host: str, address: str) -> PrivateTarget:
    return PrivateTarget(f"the callback host {host!r} is {address}, which is not a public address "
                         "(BULKJOBS_WEBHOOK_DENY_PRIVATE)")


class CheckingResolver(AbstractResolver):
    """Resolves like aiohttp's ``ThreadedResolver``; refuses a name any of whose addresses is
    not global (one private address among public ones could be the one connected to)."""

    def __init__(self) -> None:
        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            if refused_address(result["host"].split("%")[0]):
                raise _refusal(host, result["host"])
        return results

    async def close(self) -> None:
        await self._resolver.close()


def check_literal(url: str) -> None:
    """Refuse a URL whose host is a literal address that is not global (aiohttp does not
    resolve those, so ``CheckingResolver`` never sees them)."""
    address = literal_address(url)
    if address is not None and refused_address(address):
        raise _refusal(urlsplit(url).hostname or "", str(address))


async def check_target(url: str) -> None:
    """Refuse a callback URL whose host is, or resolves to, an address that is not global; a
    name that does not resolve now is let through (delivery checks again, and retries)."""
    check_literal(url)
    if literal_address(url) is not None:
        return
    host = urlsplit(url).hostname or ""
    try:
        await CheckingResolver().resolve(host, 0, socket.AF_UNSPEC)
    except OSError:
        return
