"""server.http_protocol: uvicorn's request cycle writing through AnswerWrites puts the same bytes on the
wire, in the same order, with the same closes, as uvicorn's own; an answer with a declared length goes out
in one write; and the collector answers normally over a real connection with the protocol."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from benchmarks.collector_sim import SimDevice
from benchmarks.loopback import free_port
from server.app import create_app
from server.http_protocol import AnswerWrites, JoinedHttpToolsProtocol
from tests.server.conftest import Template, collector_settings, run_cli

App = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Recorded:
    """A transport that records what is written and when it is closed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.events.append(("close", b""))

    def is_closing(self) -> bool:
        return ("close", b"") in self.events

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 1)}.get(name, default)

    def wire(self) -> list[tuple[str, bytes]]:
        """The events with consecutive writes joined: what the peer receives, whatever the write calls."""
        joined: list[tuple[str, bytes]] = []
        for kind, data in self.events:
            if kind == "write" and joined and joined[-1][0] == "write":
                joined[-1] = ("write", joined[-1][1] + data)
            else:
                joined.append((kind, data))
        return joined

    def writes(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "write")


def run_cycle(app: App, *, method: str = "GET", keep_alive: bool = True, expect_100: bool = False,
              joined: bool) -> Recorded:
    """One request through uvicorn's RequestResponseCycle.run_asgi (its error handling included)."""
    transport = Recorded()

    async def main() -> None:
        scope = {"type": "http", "method": method, "path": "/", "headers": [], "http_version": "1.1",
                 "client": ("127.0.0.1", 1), "query_string": b"", "root_path": ""}
        event = asyncio.Event()
        cycle = RequestResponseCycle(
            scope=scope, transport=transport, flow=FlowControl(transport), logger=logging.getLogger("test"),  # type: ignore[arg-type]
            access_logger=logging.getLogger("test.access"), access_log=False, default_headers=[],
            message_event=event, expect_100_continue=expect_100, keep_alive=keep_alive, on_response=lambda: None)
        cycle.more_body = False
        event.set()
        if joined:
            cycle.transport = AnswerWrites(transport, cycle)  # type: ignore[arg-type]
        await cycle.run_asgi(app)  # type: ignore[arg-type]

    asyncio.run(main())
    return transport


def answer(*messages: dict[str, Any], receive_first: bool = False, fail: bool = False) -> App:
    async def app(_scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        if receive_first:
            await receive()
        for message in messages:
            await send(message)
        if fail:
            raise RuntimeError("the application failed after starting its answer")
    return app


def start(status: int = 200, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


LENGTH = (b"content-length", b"5")
CASES: dict[str, tuple[App, dict[str, Any], int]] = {
    # name: (application, request, writes with AnswerWrites)
    "length": (answer(start(200, LENGTH), body(b"hello")), {}, 1),
    "length, connection closes": (answer(start(200, LENGTH), body(b"hello")), {"keep_alive": False}, 1),
    "length, asked to close": (answer(start(200, LENGTH, (b"connection", b"close")), body(b"hello")), {}, 1),
    "length, body in parts": (answer(start(200, LENGTH), body(b"hel", True), body(b"lo")), {}, 2),
    "length zero": (answer(start(200, (b"content-length", b"0")), body(b"")), {}, 1),
    "HEAD": (answer(start(200, LENGTH), body(b"hello")), {"method": "HEAD"}, 1),
    "chunked": (answer(start(200), body(b"hel", True), body(b"lo")), {}, 3),
    "304": (answer(start(304), body(b"")), {}, 2),
    "100-continue": (answer(start(200, LENGTH), body(b"hello"), receive_first=True), {"expect_100": True}, 2),
    "fails after the head": (answer(start(200, LENGTH), fail=True), {}, 1),
    "fails in the body": (answer(start(200, LENGTH), body(b"hel", True), fail=True), {}, 1),
    "body longer than declared": (answer(start(200, LENGTH), body(b"hello!")), {}, 1),
    "returns without a body": (answer(start(200, LENGTH)), {}, 1),
    "never answers": (answer(), {}, 1),  # uvicorn's own 500 declares its length
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_wire_is_uvicorns(name: str) -> None:
    app, request, writes = CASES[name]
    uvicorns = run_cycle(app, joined=False, **request)
    ours = run_cycle(app, joined=True, **request)
    assert ours.wire() == uvicorns.wire()
    assert ours.writes() == writes


def test_an_answer_with_a_declared_length_is_one_write() -> None:
    ours = run_cycle(answer(start(200, LENGTH), body(b"hello")), joined=True)
    assert ours.events == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")]
    assert run_cycle(answer(start(200, LENGTH), body(b"hello")), joined=False).writes() == 2


def test_the_protocol_writes_each_answer_once_on_a_connection() -> None:
    async def app(_scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[Any], Awaitable[None]]) -> None:
        await receive()
        await send(start(200, LENGTH))
        await send(body(b"hello"))

    transport = Recorded()

    async def main() -> None:
        config = uvicorn.Config(app, http=JoinedHttpToolsProtocol, lifespan="off", log_level="warning")
        config.load()
        connection = JoinedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        connection.connection_made(transport)  # type: ignore[arg-type]
        for _ in range(2):  # keep-alive: two requests, one after the other
            connection.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            for _ in range(10):
                await asyncio.sleep(0)
        connection.connection_lost(None)

    asyncio.run(main())
    writes = [data for kind, data in transport.events if kind == "write"]
    assert len(writes) == 2 and all(w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"\r\n\r\nhello")
                                    for w in writes)


def test_serve_gives_uvicorn_the_protocol(initialised: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda _app, **given: options.update(given))
    code, _, err = run_cli("--data-dir", str(initialised.data_dir), "--database-url", initialised.database_url,
                           "serve", "--host", "127.0.0.1", "--port", "1")
    assert code == 0, err
    assert import_from_string(options["http"]) is JoinedHttpToolsProtocol


@pytest.fixture
def served(initialised: Template) -> Iterator[int]:
    """The collector in this process behind uvicorn with JoinedHttpToolsProtocol, on a loopback port."""
    app = create_app(collector_settings(initialised.data_dir, initialised.database_url,
                                        rate_limit_device_per_minute=0, rate_limit_ip_per_minute=0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=JoinedHttpToolsProtocol,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_collector_answers_over_one_keep_alive_connection(served: int, initialised: Template) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=20)

    def ask(method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    status, _, _ = ask("GET", "/api/v1/health")
    assert status == 200
    code, out, err = run_cli("--data-dir", str(initialised.data_dir), "--database-url", initialised.database_url,
                             "token", "create", "--org-unit", "Finance")
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    device = SimDevice.numbered(1)
    status, _, enrolled = ask("POST", "/api/v1/enroll", json.dumps(device.enroll_body(token)).encode(),
                              **{"Content-Type": "application/json"})
    assert status == 200, enrolled
    device.device_id = json.loads(enrolled)["device_id"]
    upload = gzip.compress(json.dumps({"envelopes": [device.report()]}).encode())
    status, headers, sent = ask("POST", "/api/v1/reports", upload, **{"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(sent)["accepted"] == 1
    assert int(headers["content-length"]) == len(sent)
    status, headers, sent = ask("POST", "/api/v1/reports", b"{", **{"Content-Type": "application/json"})
    assert status == 400 and "not JSON" in json.loads(sent)["detail"]
    status, headers, page = ask("GET", "/login")
    assert status == 200 and b"<form" in page
    # no route answers HEAD: its 405 declares the length of a body that HEAD does not get
    status, headers, empty = ask("HEAD", "/login")
    assert status == 405 and empty == b"" and int(headers["content-length"]) > 0
    status, _, _ = ask("GET", "/api/v1/nowhere")
    assert status == 404
    status, _, _ = ask("GET", "/api/v1/reports")
    assert status == 405
    # a chunked answer (an export streams), still on the same connection
    status, headers, exported = ask("GET", "/api/v1/admin/devices/export?format=csv",
                                    Authorization=f"Bearer {initialised.admin_token}")
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and exported.startswith(b"id,hostname,")
    status, _, _ = ask("GET", "/api/v1/health")
    assert status == 200
    connection.close()


def test_a_request_that_breaks_http_is_refused(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
