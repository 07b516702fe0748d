"""Capacity on PostgreSQL: 1,000,000 enrolled devices, 300,000 of them active and reporting every 5 minutes.

300,000 devices every 300 s is 1,000 reports/s, each uploaded alone (batch 1, as the agent does).
The benchmark:

1. seeds --enrolled devices (default 1,000,000, 50 org units) with COPY straight into the store's tables:
   the --active ones (default 300,000) reported within the last 5 minutes and have their 11 current check
   states (3.3 M rows), the others were last seen 3-90 days ago and were flagged stale then (their notices
   and the stale-devices job's mark: a running collector's steady state); the devices the run drives have
   real Ed25519 keys (their reports are signed and verified like an agent's);
2. starts `teleposture-server serve` (--workers, default 2) and sends every driven device one report
   (warm-up: first evaluation) then measures, always one report per request, from --clients connections:
   * the ceiling: the most reports/s the node accepts, closed loop (steady-state reports, 5 % changing);
   * half load (target / 2, paced open loop): p50/p99 latency, while analysts use the dashboard (one page
     view every --dashboard-pace seconds: overview, device lists, trends in turn, each timed);
   * half load again with a dashboard storm: one client requesting each page --dashboard-requests times
     back to back (the dashboard's p95 under load; this closed loop takes whatever CPU the uploads leave,
     so the uploads' p99 there is that of a saturated machine, reported but not the bar);
   * full load (the target, paced): whether ingest keeps up (accepted rate vs offered, errors, p99).
Each driven device sends one report per phase, in order, as an agent whose reports come 5 minutes apart;
the rate is reached with as many different devices as the phase needs (target x --seconds).

    .venv/bin/python benchmarks/capacity.py                                    # the full size
    .venv/bin/python benchmarks/capacity.py --enrolled 20000 --active 6000 --seconds 10   # a quick try

Figures depend on the machine and on what else runs on it: say so when quoting them.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import protocol  # noqa: E402
from agent.policy import baseline  # noqa: E402
from benchmarks import collector_load  # noqa: E402
from benchmarks.collector_load import Fleet, Run, merge, send_all  # noqa: E402
from benchmarks.dashboard_load import Timing, measure, sign_in  # noqa: E402
from benchmarks.loopback import scratch_database, serve  # noqa: E402
from server import device_notices  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store import maintenance  # noqa: E402

PG_ADMIN_URL = os.environ.get("TELEPOSTURE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DAY = 86400.0
ORG_UNITS = 50
PLATFORMS = [("linux", "Debian GNU/Linux", "12"), ("linux", "Ubuntu", "24.04"), ("darwin", "macOS", "14.6"),
             ("windows", "Windows 11 Pro", "10.0.22631")]
DEVICE_COLUMNS = ("id", "org_unit_id", "state", "public_key", "key_id", "machine_id", "hostname", "hostname_lc",
                  "serial", "serial_lc", "username", "username_lc", "platform", "os_name", "os_version",
                  "agent_version", "enrolled_at", "last_seq", "last_seen", "last_report_at", "compliance",
                  "compliance_since", "fail_count", "warn_count", "error_count", "disagreements", "policy_ref",
                  "agent_policy_ref")
LAST_SEEN = DEVICE_COLUMNS.index("last_seen")
STALE_AFTER: float = Settings.model_fields["stale_after"].default  # the collector's default
STATE_COLUMNS = ("device_id", "rule_id", "check_id", "severity", "status", "since", "failing_since", "reason",
                 "message", "evidence", "agent_status", "updated_at", "org_unit_id", "active")


def log(text: str) -> None:
    print(text, flush=True)  # noqa: T201 (benchmark output)


def seed(url: str, enrolled: int, active: int, fleet: Fleet, rng: random.Random) -> None:
    """COPY the fleet into the tables (see the module docstring); the driven devices come first."""
    now = time.time()
    rules = [(r.id, r.check, r.severity) for r in baseline().rules]
    policy_ref = f"{baseline().id}@{baseline().version}"
    engine = sa.create_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        units = [int(conn.execute(sa.text("INSERT INTO org_units (name, created_at) VALUES (:n, :t) RETURNING id"),
                                  {"n": f"Ministry {n + 1:02d}", "t": now - 400 * DAY}).scalar_one())
                 for n in range(ORG_UNITS)]
    driven = len(fleet.devices)
    base_seed = rng.getrandbits(32)

    def synthetic(number: int) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """One seeded device and its check states, the same on every call (COPY makes two passes)."""
        own = random.Random(base_seed ^ number)  # noqa: S311 (synthetic data)
        unit = units[number % ORG_UNITS]
        platform, os_name, os_version = PLATFORMS[number % len(PLATFORMS)]
        hostname, serial, user = f"pc-{number:07d}", f"SN{number:09d}", f"agent.{number:07d}"
        device_id = str(uuid.UUID(int=own.getrandbits(128), version=4))
        reporting = number < active
        last_seen = now - own.uniform(0, 300) if reporting else now - own.uniform(3, 90) * DAY
        failing = own.choice(rules) if own.random() < 0.15 else None
        row = (device_id, unit, "active", "A" * 44, "capacity", f"m-{number}", hostname, hostname, serial,
               serial.lower(), user, user, platform, os_name, os_version, "0.1.0", now - 300 * DAY,
               own.randrange(1000, 90000), last_seen, last_seen, "not_compliant" if failing else "compliant",
               now - own.uniform(1, 60) * DAY, 1 if failing else 0, 0, 0, 0, policy_ref, policy_ref)
        states = []
        if reporting:
            for rule in rules:
                status = "fail" if rule == failing else "pass"
                since = now - own.uniform(1, 60) * DAY
                states.append((device_id, rule[0], rule[1], rule[2], status, since,
                               since if status == "fail" else None, f"{rule[0]}: {status}", "{}", "[]", status,
                               since, unit, True))
        return row, states

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY devices ({', '.join(DEVICE_COLUMNS)}) FROM STDIN") as copy:
            for number, device in enumerate(fleet.devices):
                device.device_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                key = protocol.public_key_b64(device.key)
                copy.write_row((device.device_id, units[number % ORG_UNITS], "active", key, protocol.key_id(key),
                                device.machine_id, device.hostname, device.hostname.lower(), device.serial,
                                device.serial.lower(), device.user, device.user.lower(), "linux",
                                "Debian GNU/Linux", "12", None, now - 300 * DAY, 0, None, None, "unknown", None,
                                0, 0, 0, 0, None, None))
            for number in range(driven, enrolled):
                copy.write_row(synthetic(number)[0])
                if number % 250_000 == 0:
                    log(f"  ... {number:,} devices ({time.monotonic() - started:.0f} s)")
        with cursor.copy(f"COPY check_state ({', '.join(STATE_COLUMNS)}) FROM STDIN") as copy:
            for number in range(driven, active):
                for state in synthetic(number)[1]:
                    copy.write_row(state)
        # A collector that has been running flagged each silent device when it fell silent (the stale-devices
        # job): their notices, and the job's mark at today's cutoff (without them, the run would measure a
        # one-off catch-up of 700,000 notices instead of the steady state).
        with cursor.copy("COPY device_notices (device_id, kind, at, details) FROM STDIN") as copy:
            for number in range(active, enrolled):
                row = synthetic(number)[0]
                copy.write_row((row[0], device_notices.STALE, row[LAST_SEEN] + STALE_AFTER + 600,
                                json.dumps({"last_seen": row[LAST_SEEN], "stale_after": STALE_AFTER})))
        cursor.execute("INSERT INTO server_settings (name, value) VALUES (%s, %s)",
                       (device_notices.SWEEP_MARK, repr(now - STALE_AFTER)))
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        maintenance.snapshot_daily_stats(conn, now=now, stale_after=STALE_AFTER)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        conn.exec_driver_sql("CHECKPOINT")  # the bulk load on disk before the clock starts, as on a running server
        counts = {name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()  # noqa: S608
                  for name in ("devices", "check_state")}
        size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    log(f"  seeded in {time.monotonic() - started:.0f} s: {counts['devices']:,} devices, "
        f"{counts['check_state']:,} check states, database {size / 1e9:.2f} GB")


def phase_bodies(fleet: Fleet, count: int) -> list[tuple[bytes, int]]:
    """The next report of the first ``count`` driven devices, one gzip body each (signed before timing)."""
    devices = fleet.devices
    fleet.devices = devices[:count]
    try:
        envelopes = fleet.round()
    finally:
        fleet.devices = devices
    return [(gzip.compress(json.dumps({"envelopes": [e]}).encode(), 5), 1) for e in envelopes]


def dashboard_pages(unit: int) -> list[tuple[str, str]]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return [("overview (whole fleet)", "/"), ("devices, page 1", "/devices"),
            ("devices: not compliant + org unit", f"/devices?status=not_compliant&org_unit={unit}"),
            ("devices: failing rule", "/devices?rule=disk-encryption"),
            ("trends: all rules", f"/trends?until={today}"),
            ("trends: one rule", "/trends?rule=disk-encryption")]


def dashboard_storm(client: httpx.Client, unit: int, requests: int, out: list[Timing]) -> None:
    """Closed loop: each page ``requests`` times back to back (after 3 untimed), one page after the other."""
    for label, path in dashboard_pages(unit):
        out.append(measure(client, label, path, requests))


def dashboard_paced(client: httpx.Client, unit: int, pace: float, stop: threading.Event, out: list[Timing]) -> None:
    """Analysts at work: one page view every ``pace`` seconds, the pages in turn, until ``stop`` is set."""
    pages = dashboard_pages(unit)
    samples: dict[str, list[float]] = {label: [] for label, _ in pages}
    due = time.perf_counter()
    for number in itertools.count():
        if stop.wait(max(0.0, due - time.perf_counter())):
            break
        label, path = pages[number % len(pages)]
        started = time.perf_counter()
        answer = client.get(path)
        samples[label].append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status_code}")
        due += pace
    out.extend(Timing(label, values) for label, values in samples.items() if values)


def half_load(port: int, bodies: list[tuple[bytes, int]], clients: int, rate: float, name: str,
              dashboard: Callable[[threading.Event], None]) -> Run:
    """``bodies`` paced at ``rate`` while ``dashboard`` runs in a thread (told to stop when they are sent)."""
    stop = threading.Event()
    sampler = threading.Thread(target=dashboard, args=(stop,))
    sampler.start()
    try:
        return send_all(port, "/api/v1/reports", bodies, clients, name, interval=1 / rate)
    finally:
        stop.set()
        sampler.join()


def run(args: argparse.Namespace) -> int:
    rng = random.Random(16)  # noqa: S311 (reproducible synthetic fleet)
    driven = min(args.active, int(args.target * args.seconds))
    log(f"capacity: {args.enrolled:,} enrolled, {args.active:,} active every {args.interval:g} s "
        f"(target {args.target:,.0f} reports/s), {driven:,} of them driven, {args.workers} workers, "
        f"{args.clients} clients, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    fleet = Fleet(driven, args.change_fraction, seed=16)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-capacity-")))
        data_dir = work / "data"
        url = stack.enter_context(scratch_database(PG_ADMIN_URL, "tp_capacity_"))
        output = collector_load.cli(data_dir, url, "init")
        password = re.search(r"^admin password: (\S+)$", output, re.MULTILINE)
        assert password, "init printed no admin password"
        seed(url, args.enrolled, args.active, fleet, rng)
        env = {"TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "0", "TELEPOSTURE_RATE_LIMIT_IP_PER_MINUTE": "0",
               "TELEPOSTURE_LOG_LEVEL": "warning", "TELEPOSTURE_ACCESS_LOG": "0",
               "TELEPOSTURE_MAINTENANCE_INTERVAL": "86400"}
        server = stack.enter_context(serve(data_dir, url, "--workers", str(args.workers), env=env,
                                           start_timeout=120))
        collector_load.SERVER_PID[0] = server.process.pid
        port = server.port

        warm = send_all(port, "/api/v1/reports", phase_bodies(fleet, driven), args.clients, "warm-up (first reports)")
        log("  " + warm.line())
        ceiling = send_all(port, "/api/v1/reports", phase_bodies(fleet, driven), args.clients,
                           "ceiling (closed loop, batch 1)")
        log("  " + ceiling.line())

        half_rate = args.target / 2
        half_count = min(driven, int(half_rate * args.seconds))
        client = sign_in(server.url, password.group(1))  # before the clock: a sign-in costs ~0.1 s of scrypt
        for _, path in dashboard_pages(4):
            client.get(path)
        paced: list[Timing] = []
        half = half_load(port, phase_bodies(fleet, half_count), args.clients, half_rate,
                         f"half load ({half_rate:,.0f}/s offered)",
                         lambda stop: dashboard_paced(client, 4, args.dashboard_pace, stop, paced))
        log("  " + half.line())
        timings: list[Timing] = []
        storm = half_load(port, phase_bodies(fleet, half_count), args.clients, half_rate,
                          "half load + dashboard storm",
                          lambda stop: dashboard_storm(client, 4, args.dashboard_requests, timings))
        log("  " + storm.line())
        client.close()

        full_bodies = phase_bodies(fleet, driven)
        full = send_all(port, "/api/v1/reports", full_bodies, args.clients,
                        f"full load ({args.target:,.0f}/s offered)", interval=1 / args.target)
        log("  " + full.line())
        log(f"  dashboard during half load, one page every {args.dashboard_pace:g} s, {args.enrolled:,} devices:")
        for timing in paced:
            log("  " + timing.line())
        log(f"  dashboard storm during (and after) half load: each page {args.dashboard_requests} times back to back:")
        for timing in timings:
            log("  " + timing.line())
        verdict(args, ceiling, half, storm, full, paced + timings)
    return 0


def verdict(args: argparse.Namespace, ceiling: Run, half: Run, storm: Run, full: Run, timings: list[Timing]) -> None:
    keeps_up = full.errors == 0 and full.rate >= 0.98 * args.target
    log(f"  per-node ceiling: {ceiling.rate:,.0f} reports/s at batch 1 ({args.workers} workers); "
        f"{args.active:,} devices every {args.interval:g} s need {args.target:,.0f}/s: "
        f"{'kept up' if keeps_up else 'NOT kept up'} ({full.rate:,.0f}/s accepted, {full.errors} errors); "
        f"nodes needed at this ceiling: {max(1, -(-int(args.target) // max(1, int(ceiling.rate))))}")
    log(f"  half load p99 {half.percentile(0.99):.1f} ms (target < 100 ms; {storm.percentile(0.99):.1f} ms with the "
        f"dashboard storm, which takes whatever CPU the uploads leave); dashboard worst p95 "
        f"{max((t.p(0.95) for t in timings), default=float('nan')):.1f} ms (target < 300 ms)")
    summary = merge([half, storm, full], "loaded")
    log(f"  server CPU per report under load: {summary.cpu_ms_per_report:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enrolled", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=300_000)
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between an active device's reports")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the half- and full-load phases")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (agents uploading at once)")
    parser.add_argument("--workers", type=int, default=2, help="collector worker processes")
    parser.add_argument("--change-fraction", type=float, default=0.05)
    parser.add_argument("--dashboard-requests", type=int, default=20,
                        help="timed requests per dashboard page in the storm phase (back to back)")
    parser.add_argument("--dashboard-pace", type=float, default=1.0,
                        help="seconds between page views during the half-load phase (analysts at work)")
    args = parser.parse_args(argv)
    if args.active > args.enrolled:
        parser.error("--active cannot exceed --enrolled")
    args.target = args.active / args.interval
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
