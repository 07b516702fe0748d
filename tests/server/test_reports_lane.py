"""POST /api/v1/reports through the lane in front of the app (server.api.agent.ReportsFastLane) answers
byte for byte as the declared route does behind FastAPI's stack (BodyLimitMiddleware, exception handlers,
ServerErrorMiddleware): every case is sent both ways and the answers compared."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from agent import protocol
from server.api.agent import ReportsFastLane
from tests.server.conftest import Collector, Template, in_process

LIMITS = {"max_body_bytes": 64 * 1024, "max_decompressed_bytes": 256 * 1024, "max_batch": 2}


@pytest.fixture
def limited(initialised: Template) -> Iterator[Collector]:
    with in_process(initialised, **LIMITS) as collector:
        yield collector


def both_ways(collector: Collector, monkeypatch: pytest.MonkeyPatch, send: Callable[[TestClient], httpx.Response],
              client: TestClient | None = None) -> tuple[httpx.Response, httpx.Response]:
    """``send`` once through the lane, once through FastAPI's stack to the declared route."""
    client = client or collector.client
    lane: ReportsFastLane = client.app.reports_lane  # type: ignore[attr-defined]
    answered = lane.lane
    taken: list[str] = []

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        taken.append(scope["path"])
        await answered(scope, receive, send)

    with monkeypatch.context() as patch:
        patch.setattr(lane, "lane", counted)
        through_lane = send(client)
        assert taken == ["/api/v1/reports"], "the lane did not answer"
        patch.setattr(lane, "takes", lambda _scope: False)
        through_route = send(client)
        assert len(taken) == 1, "the lane answered instead of the route"
    return through_lane, through_route


def same(lane: httpx.Response, route: httpx.Response) -> None:
    assert (lane.status_code, lane.headers.multi_items(), lane.content) == \
           (route.status_code, route.headers.multi_items(), route.content)


def post(**kwargs: Any) -> Callable[[TestClient], httpx.Response]:
    return lambda client: client.post("/api/v1/reports", **kwargs)


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts  # a body without Content-Length (chunked)


def test_refusals_are_the_routes(limited: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    device = limited.enroll()
    cases = {
        "not JSON": post(content=b"not json"),
        "not an object of envelopes": post(json={"reports": []}),
        "not gzip": post(content=b"\x1f\x8bnope", headers={"Content-Encoding": "gzip"}),
        "unknown encoding": post(content=b"{}", headers={"Content-Encoding": "br"}),
        "declared body over the limit": post(content=b"x" * (65 * 1024)),
        "gzip bomb": post(content=gzip.compress(b'{"envelopes": [' + b" " * (1024 * 1024) + b"]}"),
                          headers={"Content-Encoding": "gzip"}),
        "too many envelopes": post(json={"envelopes": [device.report() for _ in range(3)]}),
    }
    for name, send in cases.items():
        lane, route = both_ways(limited, monkeypatch, send)
        assert lane.status_code in (400, 413, 415), name
        same(lane, route)
    # Without Content-Length the body is counted as it arrives: BodyLimitMiddleware's 413, connection closed.
    lane, route = both_ways(limited, monkeypatch, lambda client: client.post(
        "/api/v1/reports", content=chunks(b"x" * (40 * 1024), b"x" * (40 * 1024))))
    assert lane.status_code == 413 and lane.headers["connection"] == "close"
    assert lane.json() == {"detail": "request body is over the limit of 65536 bytes: send smaller batches"}
    same(lane, route)
    declared = limited.client.post("/api/v1/reports", content=b"x" * (65 * 1024))
    assert declared.json()["detail"] == ("request body of 66560 bytes is over the limit of 65536 bytes: "
                                         "send smaller batches") and declared.headers["connection"] == "close"


def test_answers_are_the_routes(limited: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    device = limited.enroll()
    accepted = limited.client.post("/api/v1/reports", json={"envelopes": [device.report()]})
    assert accepted.status_code == 200
    assert list(accepted.json()) == ["results", "accepted", "duplicate", "rejected", "server_time", "access"]
    assert list(accepted.json()["results"][0])[:2] == ["reason", "compliance"]
    forged = {**device.report(), "signature": protocol.sign(protocol.generate_private_key(), "x")}
    for body in ({"envelopes": [forged]}, {"envelopes": []}):
        for encoding in ("gzip", None):
            raw = json.dumps(body).encode()
            send = post(content=gzip.compress(raw) if encoding else raw,
                        headers={"Content-Encoding": encoding} if encoding else {})
            lane, route = both_ways(limited, monkeypatch, send)
            assert lane.status_code == route.status_code == 200
            assert lane.headers.multi_items()[1:] == route.headers.multi_items()[1:]  # content-length varies
            assert lane.headers["content-type"] == "application/json"
            # the same answer but for the clock
            assert {**lane.json(), "server_time": 0} == {**route.json(), "server_time": 0}
    # a chunked body in bounds is read whole
    lane, route = both_ways(limited, monkeypatch, lambda client: client.post(
        "/api/v1/reports", content=chunks(b'{"envelopes"', b": []}")))
    assert lane.status_code == route.status_code == 200 and lane.json()["results"] == []


def test_the_address_limit_is_the_routes(initialised: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    with in_process(initialised, rate_limit_ip_per_minute=2) as collector:
        statuses = [collector.client.post("/api/v1/reports", json={"envelopes": []}).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        lane, route = both_ways(collector, monkeypatch, post(json={"envelopes": []}))
        assert lane.status_code == route.status_code == 429
        assert lane.headers.keys() == route.headers.keys() and "retry-after" in lane.headers
        assert lane.json()["detail"].startswith("too many requests from this address: retry in ")


def test_the_apps_exception_handlers_answer(limited: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error outside the ingest's own handling: the app's OperationalError handler (503)."""
    ctx = limited.client.app.state.ctx  # type: ignore[attr-defined]

    def database_down(_address: str) -> float:
        raise OperationalError("SELECT", {}, RuntimeError("connection refused"))

    for limiter in (ctx.ip_limiter, ctx.ip_flood_limiter):
        monkeypatch.setattr(limiter, "take", database_down)
    lane, route = both_ways(limited, monkeypatch, post(json={"envelopes": []}))
    assert lane.status_code == 503 and lane.headers["retry-after"] == "5"
    assert lane.json() == {"detail": "the collector's database is unavailable; retry later"}
    same(lane, route)


def test_an_unexpected_error_is_starlettes_500_and_reaches_the_server(limited: Collector,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = limited.client.app.state.ctx  # type: ignore[attr-defined]

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ctx.ingestor, "ingest", broken)
    answering = TestClient(limited.client.app, raise_server_exceptions=False)
    lane, route = both_ways(limited, monkeypatch, post(json={"envelopes": []}), client=answering)
    assert lane.status_code == 500 and lane.text == "Internal Server Error"
    assert lane.headers["content-type"] == "text/plain; charset=utf-8"
    same(lane, route)
    # re-raised after the answer, so the server logs it (as ServerErrorMiddleware does)
    with pytest.raises(RuntimeError, match="a bug"):
        limited.client.post("/api/v1/reports", json={"envelopes": []})


def test_other_requests_and_methods_go_through_the_app(limited: Collector) -> None:
    client = limited.client
    assert client.get("/api/v1/reports").status_code == 405
    slash = client.post("/api/v1/reports/", json={"envelopes": []}, follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"].endswith("/api/v1/reports")  # the router's
    assert "post" in client.get("/openapi.json").json()["paths"]["/api/v1/reports"]
    # the body limit still guards every other route
    big = client.post("/api/v1/enroll", content=b"x" * (65 * 1024))
    assert big.status_code == 413 and big.headers["connection"] == "close"
