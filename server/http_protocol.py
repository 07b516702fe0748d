"""The HTTP/1.1 protocol `teleposture-server serve` gives uvicorn: uvicorn's own (httptools), with the head
of an answer that declares its Content-Length written together with the answer's body.

uvicorn writes the status line and headers when the application sends ``http.response.start`` and the
body when it sends ``http.response.body``: two ``transport.write`` calls, two send() system calls and two
TCP segments per answer, about 10 % of the collector's GIL time at one report per request
(py-spy, benchmarks/collector_load.py batch 1). Here that head waits for the body's first write and goes
out with it; the bytes on the wire, their order and every close are uvicorn's. Answers without a declared
length (chunked streams, whose head should not wait for a slow first chunk, 204/304) and answers to HEAD
(uvicorn writes no body for them) are written as uvicorn writes them.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class AnswerWrites:
    """What a RequestResponseCycle writes through (it uses only ``write``, ``close`` and ``is_closing``):
    the connection's transport, holding back the head of an answer with a declared length until its body.

    Keeps its cycle only until the answer's head is written, so that no reference cycle (cycle -> writes
    -> cycle) is left for the cyclic garbage collector once the answer has started."""

    __slots__ = ("transport", "cycle", "head")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self.cycle: Optional[RequestResponseCycle] = cycle
        self.head: Optional[bytes] = None

    def write(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            # The answer's head (an earlier write is "100 Continue", written before the answer starts).
            # chunked_encoding is False once a Content-Length header was sent: the body then always
            # comes as a write of its own (possibly empty), except for HEAD, which gets no body.
            self.cycle = None
            if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                self.head = data
                return
        elif self.head is not None:
            data = self.head + data
            self.head = None
        self.transport.write(data)

    def close(self) -> None:
        # An application that fails between the head and the body: the head goes out, then the close,
        # as uvicorn does it.
        if self.head is not None:
            self.transport.write(self.head)
            self.head = None
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class JoinedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose request cycles write through AnswerWrites."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # Not for a WebSocket upgrade (no new cycle was made, the previous one writes through its own).
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = AnswerWrites(self.transport, cycle)  # type: ignore[assignment]
