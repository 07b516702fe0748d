"""Collector load benchmark: a simulated fleet sending signed reports to a real `teleposture-server serve`.

For each backend (SQLite, PostgreSQL) it initialises a fresh collector, starts it on a free loopback
port, enrols N devices through the API (each with its own Ed25519 key), then sends realistic signed
reports (benchmarks/collector_sim.py: facts of every check, the agent's own results, a fraction of
devices changing one check per round) in gzip batches from several client threads, and prints:

  * sustained accepted reports/s (each envelope in a batch counts as one report), request p50/p99
    latency, error count (non-200 answers and envelopes not accepted);
  * the same at half that rate (paced), the DESIGN.md latency bar;
  * the same bodies sent to POST /api/v1/ping of the same server (mounted by `serve --benchmark-routes`,
    which this benchmark passes): the reference ratio
    (ingest reports/s divided by what the server sustains for requests that do nothing).

    .venv/bin/python benchmarks/collector_load.py [--devices 1000] [--rounds 6] [--batch 50]
        [--clients 4] [--workers 2] [--backend sqlite|postgres|both] [--batch1-reports 600]
        [--batch1-rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from agent import protocol  # noqa: E402
from agent.policy import evaluate  # noqa: E402
from benchmarks.collector_sim import AGENT_VERSION, Posture, SimDevice, linux_facts  # noqa: E402
from benchmarks.loopback import SERVER_BIN, scratch_database, serve  # noqa: E402

PG_ADMIN_URL = os.environ.get("TELEPOSTURE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Run:
    name: str
    reports: int = 0
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds the collector processes used during the run
    failures: dict[str, int] = field(default_factory=dict)  # "HTTP 503: detail" -> count

    @property
    def rate(self) -> float:
        return self.reports / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def cpu_ms_per_report(self) -> float:
        return 1000 * self.server_cpu / self.reports if self.reports else float("nan")

    def line(self) -> str:
        return (f"{self.name:<32} {self.rate:8.0f} reports/s  p50 {self.percentile(0.5):7.1f} ms  "
                f"p99 {self.percentile(0.99):7.1f} ms  requests {self.requests:5d}  errors {self.errors}  "
                f"server CPU {self.cpu_ms_per_report:.2f} ms/report"
                + "".join(f"\n      {count} x {failure}" for failure, count in self.failures.items()))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reports_per_s": round(self.rate, 1), "p50_ms": round(self.percentile(0.5), 2),
                "p99_ms": round(self.percentile(0.99), 2), "requests": self.requests, "reports": self.reports,
                "errors": self.errors, "seconds": round(self.seconds, 2),
                "server_cpu_ms_per_report": round(self.cpu_ms_per_report, 3)}


def merge(runs: list[Run], name: str) -> Run:
    total = Run(name)
    for run in runs:
        total.reports += run.reports
        total.requests += run.requests
        total.errors += run.errors
        total.seconds += run.seconds
        total.server_cpu += run.server_cpu
        total.latencies.extend(run.latencies)
        for key, count in run.failures.items():
            total.failures[key] = total.failures.get(key, 0) + count
    return total


class Connection:
    """One keep-alive HTTP/1.1 connection per client thread (http.client: little client CPU)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes, gzip_body: bool = True) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if gzip_body:
            headers["Content-Encoding"] = "gzip"
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                # A keep-alive connection the server closed meanwhile: reconnect and send again once.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    return 0, str(exc).encode()
        return 0, b""


def server_cpu_seconds(pid: int) -> float:
    """user+system CPU of the collector: the serve process and its uvicorn workers."""
    try:
        parent = psutil.Process(pid)
        total = 0.0
        for proc in [parent, *parent.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


SERVER_PID = [0]


def send_all(port: int, path: str, bodies: list[tuple[bytes, int]], clients: int, name: str,
             interval: float = 0.0) -> Run:
    """POST every body (gzip) with ``clients`` threads; ``interval`` > 0 paces requests (open loop)."""
    run = Run(name)
    cpu_before = server_cpu_seconds(SERVER_PID[0])
    work: queue.Queue[tuple[int, bytes, int]] = queue.Queue()
    for index, (body, count) in enumerate(bodies):
        work.put((index, body, count))
    lock = threading.Lock()
    start = time.perf_counter()

    def client() -> None:
        conn = Connection(port)
        while True:
            try:
                index, body, count = work.get_nowait()
            except queue.Empty:
                return
            if interval:
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            began = time.perf_counter()
            status, answer = conn.post(path, body)
            elapsed = time.perf_counter() - began
            accepted, errors = 0, 0
            if status != 200:
                errors = count
                with lock:
                    key = f"HTTP {status}: {answer[:120]!r}"
                    run.failures[key] = run.failures.get(key, 0) + 1
            elif path.endswith("/reports"):
                document = json.loads(answer)
                accepted = document["accepted"]
                errors = count - accepted
                with lock:
                    for result in document["results"]:
                        if result["status"] != "accepted":
                            key = f"envelope {result['status'][:100]}"
                            run.failures[key] = run.failures.get(key, 0) + 1
            else:
                accepted = count
            with lock:
                run.latencies.append(elapsed)
                run.requests += 1
                run.reports += accepted
                run.errors += errors

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - start
    run.server_cpu = server_cpu_seconds(SERVER_PID[0]) - cpu_before
    return run


class Fleet:
    """Simulated devices and pre-signed report rounds (signing happens before the clock starts)."""

    def __init__(self, devices: int, change_fraction: float, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.devices = [SimDevice.numbered(n, prefix=f"bench{seed}") for n in range(devices)]
        self.change_fraction = change_fraction
        self._results: dict[Posture, list[dict[str, Any]]] = {}
        self.policy = self.devices[0].policy

    def results(self, posture: Posture, now: float) -> list[dict[str, Any]]:
        # The agent's own results depend only on the posture: evaluate each distinct posture once.
        if posture not in self._results:
            facts = linux_facts("h", "m", "s", posture)
            self._results[posture] = [r.to_report_json() for r in evaluate(self.policy, facts, "linux", now)]
        return self._results[posture]

    def round(self) -> list[dict[str, str]]:
        envelopes = []
        now = time.time()
        for device in self.devices:
            if device.seq and self.rng.random() < self.change_fraction:
                device.posture = device.posture.flipped(self.rng)
            device.seq += 1
            assert device.device_id
            payload = protocol.build_report(
                device_id=device.device_id, seq=device.seq, agent_version=AGENT_VERSION, platform="linux",
                policy=self.policy.ref(), facts=linux_facts(device.hostname, device.machine_id, device.serial,
                                                            device.posture),
                results=self.results(device.posture, now), created_at=now)
            envelopes.append(protocol.seal(device.key, device.device_id, payload).to_json())
        return envelopes


def batches(envelopes: list[dict[str, str]], size: int) -> list[tuple[bytes, int]]:
    out = []
    for start in range(0, len(envelopes), size):
        chunk = envelopes[start:start + size]
        out.append((gzip.compress(json.dumps({"envelopes": chunk}).encode(), 5), len(chunk)))
    return out


def cli(data_dir: Path, url: str, *args: str) -> str:
    done = subprocess.run([str(SERVER_BIN), "--data-dir", str(data_dir), "--database-url", url, *args],
                          capture_output=True, text=True, check=True)
    return done.stdout


def analyze(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def measure(port: int, token: str, url: str, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Enrol the fleet on the running collector, then every measured run against it."""
    fleet = Fleet(args.devices, args.change_fraction)

    def enrol(device: SimDevice) -> None:
        status, body = Connection(port).post("/api/v1/enroll", json.dumps(device.enroll_body(token)).encode(),
                                             gzip_body=False)
        if status != 200:
            raise RuntimeError(f"enrolment failed: {status} {body[:200]!r}")
        device.device_id = json.loads(body)["device_id"]

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(enrol, fleet.devices))
    enrol_seconds = time.perf_counter() - began
    # A database this young has no planner statistics yet: PostgreSQL then may plan the per-report
    # UPDATE through any index leading with `state` (scanning every device) until autovacuum's ANALYZE,
    # which runs within a minute of the first enrolments on a real server. Measure that steady state.
    analyze(url)

    rounds = [fleet.round() for _ in range(args.rounds + 2)]
    first = send_all(port, "/api/v1/reports", batches(rounds[0], args.batch), args.clients, "first reports")
    # One round at a time: like a real agent, a device sends its next report only after the previous one
    # was answered (otherwise a slow batch would turn its envelopes into duplicates).
    steady = merge([send_all(port, "/api/v1/reports", batches(r, args.batch), args.clients, "")
                    for r in rounds[1:args.rounds + 1]], f"{backend} ingest (batch {args.batch})")
    reference = merge([send_all(port, "/api/v1/ping", batches(r, args.batch), args.clients, "")
                       for r in rounds[1:args.rounds + 1]], f"{backend} /ping reference")
    half_rate = steady.rate / 2
    paced_bodies = batches(rounds[args.rounds + 1], args.batch)
    paced = send_all(port, "/api/v1/reports", paced_bodies, args.clients, f"{backend} ingest at half rate",
                     interval=args.batch / half_rate if half_rate else 0.0)
    # Several rounds, one after the other (as agents whose next report follows the answer to the last): a
    # single short round's CPU figure moved by +-15 % from run to run on this 2-core machine.
    one_by_one = merge([send_all(port, "/api/v1/reports",
                                 [(gzip.compress(json.dumps({"envelopes": [e]}).encode(), 5), 1)
                                  for e in fleet.round()[: min(args.devices, args.batch1_reports)]],
                                 args.clients, "") for _ in range(args.batch1_rounds)],
                       f"{backend} ingest (batch 1)")
    runs = [first, steady, reference, paced, one_by_one]
    return {"backend": backend, "devices": args.devices, "batch": args.batch, "clients": args.clients,
            "workers": args.workers, "enrol_per_s": round(args.devices / enrol_seconds, 1),
            "runs": [r.to_json() for r in runs], "lines": [r.line() for r in runs],
            "reference_ratio": round(steady.rate / reference.rate, 3) if reference.rate else None}


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tp-bench-{backend}-")))
        data_dir = work / "data"
        if backend == "sqlite":
            url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        else:
            url = stack.enter_context(scratch_database(PG_ADMIN_URL, "tp_bench_"))
        cli(data_dir, url, "init")
        token = cli(data_dir, url, "token", "create", "--org-unit", "Bench").strip().splitlines()[-1]
        env = {"TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "0", "TELEPOSTURE_RATE_LIMIT_IP_PER_MINUTE": "0",
               "TELEPOSTURE_LOG_LEVEL": "warning"}
        server = stack.enter_context(serve(data_dir, url, "--workers", str(args.workers), "--benchmark-routes",
                                           env=env, start_timeout=60))
        SERVER_PID[0] = server.process.pid
        return measure(server.port, token, url, backend, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6, help="measured reports per device")
    parser.add_argument("--batch", type=int, default=50, help="envelopes per request")
    parser.add_argument("--batch1-reports", type=int, default=600,
                        help="reports sent one per request in each batch-1 round (at most --devices)")
    parser.add_argument("--batch1-rounds", type=int, default=3, help="batch-1 rounds (one report per device each)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client connections")
    parser.add_argument("--workers", type=int, default=2, help="collector worker processes")
    parser.add_argument("--change-fraction", type=float, default=0.05,
                        help="share of devices that change one check per round")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    load = os.getloadavg()[0]
    results = []
    for backend in backends:
        result = bench_backend(backend, args)
        results.append(result)
        if not args.json:
            print(f"== {backend}: {args.devices} devices, batch {args.batch}, {args.clients} clients, "  # noqa: T201
                  f"{args.workers} workers, enrolment {result['enrol_per_s']}/s")
            for line in result["lines"]:
                print("  " + line)  # noqa: T201
            print(f"  reference ratio (ingest / ping): {result['reference_ratio']}")  # noqa: T201
    if args.json:
        print(json.dumps({"load_average_at_start": load, "cpus": os.cpu_count(), "results": [  # noqa: T201
            {k: v for k, v in r.items() if k != "lines"} for r in results]}, indent=2))
    else:
        print(f"(load average at start: {load:.2f} on {os.cpu_count()} CPUs)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
