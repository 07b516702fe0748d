"""Request bodies with limits: a cap on the bytes read (413) and on gzip expansion (413)."""

from __future__ import annotations

import json
import zlib
from typing import Any, Optional

import orjson
from fastapi import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


class OverLimit(Exception):
    """The request body grew over the limit while it was read (answered with ``refuse_too_large``)."""


def declared_over_limit(declared: int, limit: int) -> str:
    return f"request body of {declared} bytes is over the limit of {limit} bytes: send smaller batches"


def streamed_over_limit(limit: int) -> str:
    return f"request body is over the limit of {limit} bytes: send smaller batches"


async def refuse_too_large(send: Send, detail: str) -> None:
    """The 413 of an over-limit body; the connection closes (the rest of the body is not read)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 for any request body over the limit, before a route (or FastAPI's body parsing) sees it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await refuse_too_large(send, declared_over_limit(int(declared), self.limit))
            return
        if declared is not None:
            # The server enforces Content-Length itself; the size is already known to be in bounds.
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await refuse_too_large(send, streamed_over_limit(self.limit))
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


async def receive_body(receive: Receive, limit: int) -> bytes:
    """The whole request body from the ASGI ``receive``: OverLimit past ``limit`` bytes, ClientDisconnect
    (as Starlette's Request raises it) when the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise OverLimit(streamed_over_limit(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HTTPException(status_code=400, detail=f"Content-Encoding is gzip but the body is not valid gzip: {exc}"
                            ) from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise BodyTooLarge(f"decompressed request body is over the limit of {limit} bytes: "
                           "send fewer envelopes per batch")
    if not decompressor.eof:
        raise HTTPException(status_code=400, detail="gzip body is truncated")
    return out


def parse_json(body: bytes, content_encoding: Optional[str], decompressed_limit: int) -> Any:
    """The body's JSON document (gzip accepted; ``content_encoding`` is the header, None when absent), or a
    400/413/415 naming the problem."""
    encoding = "identity" if content_encoding is None else content_encoding.strip().lower()
    if encoding == "gzip":
        body = gunzip_limited(body, decompressed_limit)
    elif encoding not in ("identity", ""):
        raise HTTPException(status_code=415, detail=f"Content-Encoding {encoding!r} is not supported: "
                                                    "send gzip or no encoding")
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(status_code=400, detail=f"request body is not JSON: {exc}") from exc
