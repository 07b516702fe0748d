"""Slow-client benchmark: normal requests while 1,100 clients trickle their headers, through the shipped
nginx front (server/deploy/nginx/) and, for comparison, straight to the collector.

Starts a real `teleposture-server serve` (SQLite) and a real nginx of its own (own configuration, pid
file, temp directories and free loopback ports; the shipped limits and proxy snippets are included
verbatim). Opens N slow clients on loopback that send a partial request header and then one more header
line every few seconds (never finishing), and meanwhile sends normal requests (`GET /api/v1/health`,
new connection each, 5 s timeout) at a steady rate. Prints the share of normal requests answered 200
and their p50/p99, with nginx in front and without it. Everything stops after --seconds.

    .venv/bin/python benchmarks/slow_clients.py [--slow 1100] [--seconds 20] [--rate 20] [--no-direct] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loopback import REPO, SERVER_BIN, free_port, serve  # noqa: E402

NGINX_SNIPPETS = REPO / "server" / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(work: Path, listen_port: int, upstream_port: int) -> str:
    """A test nginx.conf around the shipped snippets: everything it writes stays in ``work``."""
    temp = "\n".join(f"  {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must write the temp dirs made here
    return f"""{user}worker_processes 1;
worker_rlimit_nofile 16384;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} warn;
daemon off;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}
  upstream teleposture_collector {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{listen_port};
    include {NGINX_SNIPPETS / 'teleposture-limits.conf'};
    location / {{ include {NGINX_SNIPPETS / 'teleposture-proxy.conf'}; }}
  }}
}}
"""


@contextlib.contextmanager
def nginx_front(upstream_port: int, work: Path, start_timeout: float = 15.0) -> Iterator[int]:
    """nginx in front of 127.0.0.1:``upstream_port`` until the block ends; yields its port."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(nginx_config(work, port, upstream_port))
    checked = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")],
                             capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t refused the configuration:\n{checked.stderr}")
    process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}: {(work / 'error.log').read_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen in time")
            time.sleep(0.05)
        yield port
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown, the workers go with the master
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


class SlowClients:
    """``count`` connections that send a partial header, then one header line every ``interval`` seconds."""

    def __init__(self, port: int, count: int, interval: float = 4.0) -> None:
        self.port, self.count, self.interval = port, count, interval
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.dropped = 0  # connections the server closed
        self.refused = 0  # connections that could not be opened
        self.thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        raise_fd_limit(self.count + 512)
        for _ in range(self.count):
            self._open()
        self.thread.start()
        return self

    def _open(self) -> None:
        """One more slow client; like a real attacker, one the server dropped is replaced at once."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(f"GET /api/v1/health HTTP/1.1\r\nHost: slow-{len(self.sockets)}\r\n".encode())
        except OSError:
            self.refused += 1
            return
        sock.setblocking(False)
        self.sockets.append(sock)

    def _trickle(self) -> None:
        while not self.stop.wait(self.interval):
            for sock in list(self.sockets):
                try:
                    sock.send(b"X-Slow: 1\r\n")
                except OSError:
                    self.dropped += 1
                    self.sockets.remove(sock)
                    sock.close()
            while len(self.sockets) < self.count and not self.stop.is_set():
                before = self.refused
                self._open()
                if self.refused > before:
                    break

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@dataclass
class Normal:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        total = self.ok + self.failed
        return self.ok / total if total else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def normal_requests(port: int, seconds: float, rate: float, path: str = "/api/v1/health") -> Normal:
    """GET ``path`` on a new connection ``rate`` times a second for ``seconds`` (paced, 4 threads)."""
    result = Normal()
    lock = threading.Lock()
    start = time.perf_counter()
    total = int(seconds * rate)
    counter = iter(range(total))

    def worker() -> None:
        for index in counter:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            began = time.perf_counter()
            outcome: Optional[str] = None
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status != 200:
                    outcome = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            with lock:
                if outcome is None:
                    result.ok += 1
                    result.latencies.append(time.perf_counter() - began)
                else:
                    result.failed += 1
                    result.failures[outcome] = result.failures.get(outcome, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def run_phase(port: int, slow: int, seconds: float, rate: float) -> dict[str, Any]:
    with SlowClients(port, slow) as clients:
        time.sleep(1.0)  # let them settle
        normal = normal_requests(port, seconds, rate)
        dropped, held = clients.dropped, len(clients.sockets)
    return {"slow_clients_open_at_end": held, "slow_clients": slow, "normal_ok": normal.ok, "normal_failed": normal.failed,
            "success_share": round(normal.share, 4), "p50_ms": round(normal.percentile(0.5), 1),
            "p99_ms": round(normal.percentile(0.99), 1), "failures": normal.failures,
            "slow_clients_dropped_by_server": dropped}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=1100, help="slow clients held open")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured phase")
    parser.add_argument("--rate", type=float, default=20.0, help="normal requests per second")
    parser.add_argument("--no-direct", action="store_true", help="skip the comparison without nginx")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results: dict[str, Any] = {"load_average_at_start": load, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix=f"tp-slow-{os.getpid()}-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        subprocess.run([str(SERVER_BIN), "--data-dir", str(data_dir), "--database-url", url, "init"],
                       capture_output=True, check=True)
        env = {"TELEPOSTURE_TRUSTED_PROXIES": "127.0.0.1", "TELEPOSTURE_LOG_LEVEL": "warning"}
        with serve(data_dir, url, env=env) as collector, nginx_front(collector.port, work / "nginx") as front:
            # The soft limit a systemd service gets by default (LimitNOFILE=1024:524288): what a collector
            # started without tuning has, and what 1,100 slow clients exhaust.
            subprocess.run(["prlimit", f"--pid={collector.process.pid}", "--nofile=1024:"], check=True)
            results["nginx"] = run_phase(front, args.slow, args.seconds, args.rate)
            if not args.no_direct:
                results["direct"] = run_phase(collector.port, args.slow, args.seconds, args.rate)
    if args.json:
        print(json.dumps(results, indent=2))  # noqa: T201
        return 0
    for name in ("nginx", "direct"):
        if name in results:
            r = results[name]
            print(f"{name:<6} {r['slow_clients']} slow clients: {r['success_share'] * 100:.1f} % of "  # noqa: T201
                  f"{r['normal_ok'] + r['normal_failed']} normal requests answered 200 (target >= 95 %), "
                  f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; failures {r['failures']}; "
                  f"slow clients dropped by the server: {r['slow_clients_dropped_by_server']} (replaced; "
                  f"{r['slow_clients_open_at_end']} open at the end)")
    print(f"(load average at start: {load:.2f} on {os.cpu_count()} CPUs)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
