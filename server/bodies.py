"""Request bodies with limits: a cap on the bytes read (413) and on gzip expansion (413)."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import HTTPException, Request


class BodyTooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes: "
                           "send fewer envelopes per batch")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes: send fewer envelopes per batch")
        chunks.append(chunk)
    return b"".join(chunks)


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


async def read_json(request: Request, limit: int, decompressed_limit: int) -> Any:
    """The request's JSON document (gzip accepted), or a 400/413/415 naming the problem."""
    body = await read_limited(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip_limited(body, decompressed_limit)
    elif encoding not in ("identity", ""):
        raise HTTPException(status_code=415, detail=f"Content-Encoding {encoding!r} is not supported: "
                                                    "send gzip or no encoding")
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(status_code=400, detail=f"request body is not JSON: {exc}") from exc
