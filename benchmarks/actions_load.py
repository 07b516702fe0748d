"""Noncompliance actions benchmark: ingest throughput with and without three sinks, and delivery rates.

A real `teleposture-server serve` (SQLite or PostgreSQL) with the baseline policy plus a ladder, a simulated
fleet (benchmarks/collector_sim.py) where a fraction of devices changes one check per round (5 % by default).
It measures sustained ingest reports/s without sinks, then adds three sinks (a webhook receiver, an SMTP
server (aiosmtpd), a TCP syslog receiver, all on loopback in this process) and measures again while the
collector delivers in the background. Then it stops sending and measures how fast each sink's queue drains
(events/s per sink).

    .venv/bin/python benchmarks/actions_load.py [--devices 1000] [--rounds 4] [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socketserver
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from agent.policy import baseline  # noqa: E402
from benchmarks import collector_load as load  # noqa: E402
from benchmarks.collector_sim import SimDevice  # noqa: E402
from benchmarks.loopback import free_port, scratch_database, serve  # noqa: E402

LADDER = {"critical": [{"after": "0s", "do": "notify_employee"}, {"after": "24h", "do": "notify_team"},
                       {"after": "72h", "do": "block"}],
          "high": [{"after": "0s", "do": "notify_employee"}, {"after": "7d", "do": "notify_team"}]}


@contextlib.contextmanager
def receivers() -> Iterator[dict[str, Any]]:
    """A webhook endpoint (204), an SMTP server and a TCP syslog sink, all counting what they receive."""
    from aiosmtpd.controller import Controller

    counts = {"webhook": 0, "email": 0, "syslog_bytes": 0}
    lock = threading.Lock()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:
                counts["webhook"] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    class Mail:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            with lock:
                counts["email"] += 1
            return "250 OK"

    class Syslog(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while chunk := self.request.recv(65536):
                with lock:
                    counts["syslog_bytes"] += len(chunk)

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    smtp_port = free_port()
    smtp = Controller(Mail(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    syslog = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Syslog)
    syslog.daemon_threads = True
    threading.Thread(target=syslog.serve_forever, daemon=True).start()
    try:
        yield {"counts": counts, "sinks": [
            {"name": "bench-webhook", "kind": "webhook",
             "config": {"url": f"http://127.0.0.1:{hook.server_address[1]}/hook"}},
            {"name": "bench-email", "kind": "email",
             "config": {"host": "127.0.0.1", "port": smtp_port, "starttls": False, "from": "tp@example.org",
                        "to": ["soc@example.org"]}},
            {"name": "bench-syslog", "kind": "syslog",
             "config": {"host": "127.0.0.1", "port": syslog.server_address[1], "transport": "tcp"}}]}
    finally:
        hook.shutdown()
        smtp.stop()
        syslog.shutdown()


def pending(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT s.name, count(d.event_id) FROM sinks s LEFT JOIN deliveries d "
                                    "ON d.sink_id = s.id AND d.state = 'pending' GROUP BY s.name")).all()
        total = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    engine.dispose()
    return {**{str(r[0]): int(r[1]) for r in rows}, "_events": int(total)}


def _wait_drained(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(v for k, v in pending(url).items() if not k.startswith("_")):
        time.sleep(0.2)


def burst(url: str, device_ids: list[str], count: int) -> None:
    from server.actions.events import Event, emit_events
    from server.store.db import Database

    db = Database(url)
    with db.write() as conn:
        emit_events(conn, [Event("rule.failing", device_ids[i % len(device_ids)], None, "critical",
                                 {"rule_id": "disk-encryption", "status": "fail", "hostname": f"bench-{i}"})
                           for i in range(count)])
    db.dispose()


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tp-actions-{backend}-")))
        data_dir = work / "data"
        url = (f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}" if backend == "sqlite"
               else stack.enter_context(scratch_database(load.PG_ADMIN_URL, "tp_bench_")))
        load.cli(data_dir, url, "init")
        token = load.cli(data_dir, url, "token", "create", "--org-unit", "Bench").strip().splitlines()[-1]
        admin = load.cli(data_dir, url, "api-token", "create", "--name", "bench", "--role", "admin"
                         ).strip().splitlines()[-1]
        document = baseline().to_json()
        document.update(version=document["version"] + 1, actions=LADDER)
        policy_file = work / "ladder.json"
        policy_file.write_text(json.dumps(document))
        load.cli(data_dir, url, "policy", "push", str(policy_file))
        env = {"TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "0", "TELEPOSTURE_RATE_LIMIT_IP_PER_MINUTE": "0",
               "TELEPOSTURE_LOG_LEVEL": "warning", "TELEPOSTURE_ACTIONS_INTERVAL": "0.5"}
        server = stack.enter_context(serve(data_dir, url, "--workers", str(args.workers), env=env,
                                           start_timeout=60))
        load.SERVER_PID[0] = server.process.pid
        fleet = load.Fleet(args.devices, args.change_fraction)

        def enrol(device: SimDevice) -> None:
            answer = httpx.post(server.url + "/api/v1/enroll", json=device.enroll_body(token), timeout=30)
            answer.raise_for_status()
            device.device_id = answer.json()["device_id"]

        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(enrol, fleet.devices))
        load.analyze(url)
        rounds = [fleet.round() for _ in range(2 * args.rounds + 1)]
        load.send_all(server.port, "/api/v1/reports", load.batches(rounds[0], args.batch), args.clients, "first")
        without = load.merge([load.send_all(server.port, "/api/v1/reports", load.batches(r, args.batch),
                                            args.clients, "") for r in rounds[1:args.rounds + 1]],
                             f"{backend} ingest, no sinks")
        out: dict[str, Any] = {"backend": backend, "devices": args.devices, "change_fraction": args.change_fraction}
        with receivers() as sinks:
            client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
            for sink in sinks["sinks"]:
                client.post("/api/v1/admin/sinks", json=sink).raise_for_status()
            before = pending(url)["_events"]
            with_sinks = load.merge([load.send_all(server.port, "/api/v1/reports", load.batches(r, args.batch),
                                                   args.clients, "") for r in rounds[args.rounds + 1:]],
                                    f"{backend} ingest, three sinks")
            emitted = pending(url)["_events"] - before
            _wait_drained(url, args.drain_timeout)
            # Delivery rate: a burst of events for many devices written at once, then each sink's drain time.
            burst(url, [d.device_id for d in fleet.devices if d.device_id], args.burst)
            started = time.perf_counter()
            first = pending(url)
            drained: dict[str, float] = {}
            while len(drained) < 3 and time.perf_counter() - started < args.drain_timeout:
                now = pending(url)
                for name in ("bench-webhook", "bench-email", "bench-syslog"):
                    if name not in drained and now.get(name, 0) == 0:
                        drained[name] = time.perf_counter() - started
                time.sleep(0.2)
            rates = {name: round(first.get(name, 0) / seconds, 1) if seconds > 0 and first.get(name) else None
                     for name, seconds in drained.items()}
            out.update(lines=[without.line(), with_sinks.line()],
                       ratio=round(with_sinks.rate / without.rate, 3) if without.rate else None,
                       events_during_ingest=emitted, burst={k: v for k, v in first.items() if not k.startswith("_")},
                       drain_seconds={k: round(v, 2) for k, v in drained.items()}, drain_events_per_s=rates,
                       received=dict(sinks["counts"]))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4, help="measured reports per device, per phase")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--change-fraction", type=float, default=0.05)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--burst", type=int, default=2000, help="events written at once to time delivery")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    result = run(args.backend, args)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")  # noqa: T201
    for line in result.pop("lines"):
        print("  " + line)  # noqa: T201
    print(json.dumps(result, indent=1, sort_keys=True))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
