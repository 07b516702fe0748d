"""The production deployment's nginx front (server/deploy/nginx/), for real: a real nginx with the shipped
limits and proxy snippets in front of a real collector process, on free loopback ports."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from benchmarks.loopback import serve
from benchmarks.slow_clients import SlowClients, nginx_front, normal_requests
from tests.server.conftest import init_collector


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(nginx port, collector port). The collector may open 256 files (the benchmark uses the default 1,024
    of a service with 1,100 slow clients; fewer of both keep this test short)."""
    work = tmp_path_factory.mktemp("nginx-front")
    data_dir = work / "data"
    url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    init_collector(data_dir, url)
    with serve(data_dir, url, env={"TELEPOSTURE_TRUSTED_PROXIES": "127.0.0.1"}) as collector, \
            nginx_front(collector.port, work / "nginx") as port:
        subprocess.run(["prlimit", f"--pid={collector.process.pid}", "--nofile=256:"], check=True)
        yield port, collector.port


def _get(port: int, headers: dict[str, str], path: str = "/api/v1/health") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_normal_requests_go_through_while_slow_clients_hold_connections(front: tuple[int, int]) -> None:
    port, collector = front
    with SlowClients(port, 300, interval=2.0) as slow:
        time.sleep(0.5)
        normal = normal_requests(port, seconds=5, rate=10)
        assert len(slow.sockets) >= 250, "the slow clients were held open meanwhile"
    assert normal.share >= 0.95, normal.failures
    # The same against the collector alone: its descriptors run out and normal requests fail.
    with SlowClients(collector, 300, interval=2.0):
        time.sleep(0.5)
        direct = normal_requests(collector, seconds=5, rate=10)
    assert direct.share < 0.95, "without the front the slow clients should have hurt: the test proves nothing"
    deadline = time.monotonic() + 15
    while normal_requests(collector, seconds=1, rate=10).share < 1.0:  # connections queued meanwhile drain
        assert time.monotonic() < deadline, "the collector did not recover once the slow clients went"


def test_headers_are_bounded_to_64_kib(front: tuple[int, int]) -> None:
    port, collector = front
    under = {f"X-Fill-{n}": "a" * 14_000 for n in range(4)}  # 56 KiB in four lines of at most 16 KiB
    assert _get(port, under) == 200
    over = {f"X-Fill-{n}": "a" * 14_000 for n in range(5)}  # 70 KiB
    assert _get(port, over) in (400, 494)
    assert _get(port, {"X-Long": "b" * 17_000}) in (400, 494), "one header line over 16 KiB"
    # straight to uvicorn the 70 KiB header is accepted: the front is what bounds it
    assert _get(collector, over) == 200


def test_bodies_are_bounded_before_the_collector(front: tuple[int, int]) -> None:
    port, _collector = front
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/v1/reports", body=b"x" * (4 * 1024 * 1024 + 1),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 413
    conn.close()


def test_a_client_that_stops_sending_its_header_is_cut_off(front: tuple[int, int]) -> None:
    port, _collector = front
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        try:
            answer = sock.recv(1024)
        except ConnectionResetError:
            answer = b""  # reset_timedout_connection: an RST instead of a 408
        waited = time.monotonic() - began
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert 8 <= waited <= 15, f"cut off after {waited:.1f} s (client_header_timeout is 10 s)"
