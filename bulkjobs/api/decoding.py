"""Request bodies sent with a ``Content-Encoding``: checked at the door, inflated as they are read.

aiohttp's own decompression is off (``build_app``): it answers br, zstd and a corrupt or
truncated deflate in its protocol layer, in text/plain, before the application sees the
request. Here every encoding but identity, gzip and deflate is a 415, a body that does not
inflate is a 400, both in the JSON error shape, and a body is inflated a bounded piece at a
time, so that the body limits count inflated bytes and a small body that inflates to a huge
one costs no more memory than any other.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from bulkjobs.api.common import SETTINGS
from bulkjobs.api.idempotency import body_digest
from bulkjobs.errors import BadRequest, TooLarge, UnsupportedMediaType

ENCODINGS = ("identity", "gzip", "deflate")
_READ = 64 * 1024  # compressed bytes read at a time


def content_encoding(request: web.Request) -> str:
    """The body's encoding, one of ``ENCODINGS``; 415 for any other (or several)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(f"content encoding {encoding!r} is not supported: send identity, gzip or deflate",
                                   code="unsupported_content_encoding")
    return encoding


def body_reader(request: web.Request, size: int) -> Callable[[], Awaitable[bytes]]:
    """A function that reads the next piece of the body, inflated, of at most ``size`` bytes
    (b"" at its end); 400 when the body does not inflate or cannot be read. What it reads
    is fed to the request's ``api.idempotency`` digest, if it has one."""
    read = _inflated(request, size)
    digest = body_digest(request)
    if digest is None:
        return read

    async def read_digested() -> bytes:
        data = await read()
        digest.feed(data)
        return data

    return read_digested


def _inflated(request: web.Request, size: int) -> Callable[[], Awaitable[bytes]]:
    encoding = content_encoding(request)
    content = request.content

    async def read_raw(n: int) -> bytes:
        try:
            return await content.read(n)
        except web.RequestPayloadError as exc:
            raise BadRequest(f"the body could not be read: {exc.args[0] if exc.args else exc}") from None

    if encoding == "identity":
        return lambda: read_raw(size)
    inflater: zlib._Decompress | None = None
    pending = b""  # compressed bytes not inflated yet (zlib's unconsumed tail)

    async def read() -> bytes:
        nonlocal inflater, pending
        while True:
            if not pending:
                pending = await read_raw(_READ)
                if not pending:
                    if inflater is not None and not inflater.eof:
                        raise _corrupt(encoding, "it ends before its compressed data does")
                    return b""
            if inflater is None:
                inflater = zlib.decompressobj(_window_bits(encoding, pending))
            elif inflater.eof:
                raise _corrupt(encoding, "data follows the end of its compressed data")
            try:
                data = inflater.decompress(pending, size)
            except zlib.error as exc:
                raise _corrupt(encoding, str(exc)) from None
            pending = inflater.unconsumed_tail or inflater.unused_data
            if data:
                return data

    return read


async def read_all(request: web.Request) -> bytes:
    """A whole (small) body, inflated, within the body limit."""
    limit = request.app[SETTINGS].max_body_bytes
    read = body_reader(request, _READ)
    body = bytearray()
    while data := await read():
        body += data
        if len(body) > limit:
            raise TooLarge(f"the body is larger than the limit of {limit} bytes", limit=limit)
    return bytes(body)


def _window_bits(encoding: str, first: bytes) -> int:
    if encoding == "gzip":
        return 16 + zlib.MAX_WBITS
    # deflate is zlib's format, but some clients send raw deflate: tell by the first byte
    return zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS


def _corrupt(encoding: str, reason: str) -> BadRequest:
    return BadRequest(f"the body is not valid {encoding} data: {reason}", code="invalid_content_encoding")
