"""Dashboard latency at fleet scale: p95 of the overview and of filtered device pages over HTTP.

Seeds 100,000 devices (20 org units, mixed platforms and compliance, 5 % stale, 5 % never reported),
their current check states (11 rules each, 1.1 M rows), 30 days of status changes and --days (400)
days of daily trend snapshots and rollups per org unit x rule (88,000 rows at 400 days). The seeding is
BULK INSERTS STRAIGHT INTO THE STORE'S TABLES (SQLAlchemy Core
executemany through server.store.schema), not through the signed-report API: 100k enrolments and
reports through the API would take far longer than the measurement and measure ingest, which
benchmarks/collector_sim.py covers. The measurement itself is real: a `teleposture-server serve`
process, a signed-in dashboard session, HTTP requests timed end to end.

    .venv/bin/python benchmarks/dashboard_load.py                 # SQLite and PostgreSQL
    .venv/bin/python benchmarks/dashboard_load.py --backend sqlite --devices 20000 --requests 30

PostgreSQL: a database tp_bench_<random> is created on TELEPOSTURE_BENCH_PG (default
postgresql+psycopg://postgres@127.0.0.1:5432/test) and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.policy import baseline  # noqa: E402
from benchmarks.collector_sim import Posture, linux_facts  # noqa: E402
from benchmarks.loopback import serve  # noqa: E402
from server import cli  # noqa: E402
from server.store import change_counts, maintenance  # noqa: E402
from server.store.schema import (  # noqa: E402
    check_state,
    daily_rule_stats,
    daily_stats,
    devices,
    org_units,
    reports,
    transitions,
)

PG_ADMIN_URL = os.environ.get("TELEPOSTURE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DAY = 86400.0
ORG_UNITS = 20
TARGET_P95_MS = 300.0
PLATFORMS = [("linux", "Debian GNU/Linux", "12"), ("linux", "Ubuntu", "24.04"), ("darwin", "macOS", "14.6"),
             ("windows", "Windows 11 Pro", "10.0.22631")]
USERS = ["amina", "youssef", "karim", "salma", "nadia", "omar", "fatima", "hassan", "leila", "rachid"]


def log(text: str) -> None:
    print(text, flush=True)  # noqa: T201 (benchmark output)


def run_cli(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    if code != 0:
        raise RuntimeError(f"teleposture-server {' '.join(args)} failed: {err.getvalue()}")
    return out.getvalue()


def seed(url: str, count: int, rng: random.Random, days: int = 30) -> dict[str, Any]:
    """Bulk-insert the fleet (see the module docstring). Returns a few ids the queries use."""
    engine = sa.create_engine(url)
    now = time.time()
    rules = [(r.id, r.check, r.severity) for r in baseline().rules]
    policy_ref = f"{baseline().id}@{baseline().version}"
    started = time.monotonic()
    with engine.begin() as conn:
        unit_ids = []
        for number in range(ORG_UNITS):
            unit_ids.append(int(conn.execute(org_units.insert().values(
                name=f"Administration {number + 1:02d}", created_at=now - 90 * DAY).returning(org_units.c.id)
            ).scalar_one()))
    device_rows: list[dict[str, Any]] = []
    state_rows: list[dict[str, Any]] = []
    transition_rows: list[dict[str, Any]] = []
    ids: list[str] = []
    facts_cache: dict[str, str] = {}

    def flush(force: bool = False) -> None:
        with engine.begin() as conn:
            for table, rows in ((devices, device_rows), (check_state, state_rows), (transitions, transition_rows)):
                if rows and (force or len(rows) >= 20000):
                    conn.execute(table.insert(), rows)
                    rows.clear()

    for number in range(count):
        device_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids.append(device_id)
        unit = unit_ids[number % ORG_UNITS]
        platform, os_name, os_version = PLATFORMS[rng.randrange(len(PLATFORMS))]
        roll = rng.random()
        never = roll < 0.05
        stale = 0.05 <= roll < 0.10
        last_seen = None if never else (now - rng.uniform(3, 20) * DAY if stale else now - rng.uniform(60, 86400))
        enrolled = now - rng.uniform(31, 120) * DAY
        failing: list[str] = []
        erroring: list[str] = []
        if not never:
            kind = rng.random()
            if kind < 0.20:
                failing = rng.sample([r[0] for r in rules], rng.choice((1, 1, 2)))
            elif kind < 0.25:
                erroring = [rng.choice([r[0] for r in rules])]
        compliance = "unknown" if never else ("not_compliant" if failing else ("error" if erroring else "compliant"))
        hostname = f"lap-{number:06d}"
        user = f"{USERS[number % len(USERS)]}.{number:06d}"
        serial = f"SN{rng.getrandbits(40):010X}"
        device_rows.append({
            "id": device_id, "org_unit_id": unit, "state": "active", "public_key": "A" * 44, "key_id": "bench",
            "machine_id": f"bench-{number}", "hostname": hostname, "hostname_lc": hostname, "serial": serial,
            "serial_lc": serial.lower(), "username": user, "username_lc": user.lower(), "platform": platform,
            "os_name": os_name, "os_version": os_version, "agent_version": "0.1.0", "enrolled_at": enrolled,
            "last_seq": 0 if never else rng.randrange(100, 800), "last_seen": last_seen,
            "last_report_at": last_seen, "compliance": compliance,
            "compliance_since": None if never else now - rng.uniform(1, 30) * DAY,
            "fail_count": len(failing), "warn_count": 0, "error_count": len(erroring), "disagreements": 0,
            "policy_ref": None if never else policy_ref, "agent_policy_ref": None if never else policy_ref})
        if not never:
            for rule_id, check, severity in rules:
                status = "fail" if rule_id in failing else ("error" if rule_id in erroring else "pass")
                since = now - rng.uniform(1, 29) * DAY
                state_rows.append({
                    "device_id": device_id, "rule_id": rule_id, "check_id": check, "severity": severity,
                    "status": status, "since": since, "failing_since": since if status == "fail" else None,
                    "reason": f"{rule_id}: {status}", "message": "{}", "evidence": "[]", "agent_status": status,
                    "updated_at": since, "org_unit_id": unit, "active": True})
                # 30 days of history: each rule of each device changed about once a month.
                if rng.random() < 0.3 or status != "pass":
                    transition_rows.append({
                        "device_id": device_id, "rule_id": rule_id, "check_id": check, "old_status": "pass"
                        if status != "pass" else "fail", "new_status": status, "at": since, "recorded_at": since,
                        "seq": rng.randrange(1, 100), "reason": f"{rule_id}: {status}", "org_unit_id": unit})
        if len(device_rows) >= 5000:
            flush(force=True)
    flush(force=True)
    with engine.begin() as conn:
        # Latest raw report for the first 5,000 devices that report (what a policy dry-run reads).
        report_rows = []
        for number, device_id in enumerate(ids[:5000]):
            posture = Posture(disk_encrypted=number % 7 != 0)
            key = "enc" if posture.disk_encrypted else "plain"
            if key not in facts_cache:
                facts_cache[key] = json.dumps(linux_facts("lap", "m", "s", posture))
            report_rows.append({"device_id": device_id, "seq": 1, "report_id": str(uuid.uuid4()),
                                "created_at": now - 600, "received_at": now - 600, "compliance": "compliant",
                                "policy_ref": policy_ref, "payload": '{"facts":' + facts_cache[key] + "}",
                                "signature": "bench"})
        conn.execute(reports.insert(), report_rows)
        per_unit = count // ORG_UNITS
        for day_offset in range(1, days):  # today's rows come from the maintenance job's snapshot below
            day = time.strftime("%Y-%m-%d", time.gmtime(now - day_offset * DAY))
            computed_at = now - day_offset * DAY
            rollups = []
            for unit in unit_ids:
                compliant = int(per_unit * rng.uniform(0.6, 0.75))
                conn.execute(daily_stats.insert().values(
                    day=day, org_unit_id=unit, devices=per_unit, compliant=compliant,
                    not_compliant=int(per_unit * 0.2), error=int(per_unit * 0.05), unknown=int(per_unit * 0.05),
                    stale=int(per_unit * 0.05), computed_at=computed_at))
                for rule_id, _check, _severity in rules:
                    failing = int(per_unit * rng.uniform(0.01, 0.08))
                    fixed = rng.randrange(0, max(1, per_unit // 50))
                    rollups.append({"day": day, "org_unit_id": unit, "rule_id": rule_id,
                                    "passing": per_unit - failing, "warning": 0, "failing": failing, "errors": 0,
                                    "not_applicable": 0, "new_failures": rng.randrange(0, max(1, per_unit // 50)),
                                    "fixed": fixed, "fix_seconds_median": rng.uniform(3600, 5 * DAY) if fixed else None,
                                    "computed_at": computed_at})
            conn.execute(daily_rule_stats.insert(), rollups)
    with engine.begin() as conn:
        # Today's snapshot by the maintenance job's own code (per-rule counts the overview shows), and its
        # rollup of the history's changes (the report's period counts).
        maintenance.snapshot_daily_stats(conn, now=now, stale_after=2 * DAY)
        change_counts.roll_up(conn, now=now)
    with engine.connect() as conn:
        totals = {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                  for name, table in (("devices", devices), ("check_state", check_state),
                                      ("transitions", transitions), ("reports", reports),
                                      ("daily_stats", daily_stats), ("daily_rule_stats", daily_rule_stats))}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Planner statistics (and on PostgreSQL the visibility map for index-only scans), as autovacuum
        # keeps them on a running PostgreSQL; on SQLite see docs/dashboard.md.
        conn.exec_driver_sql("VACUUM ANALYZE" if conn.dialect.name == "postgresql" else "ANALYZE")
    engine.dispose()
    log(f"  seeded in {time.monotonic() - started:.0f} s: " + ", ".join(f"{v:,} {k}" for k, v in totals.items()))
    return {"unit": unit_ids[3], "search": "lap-0123", "user": "nadia.0001"}  # unit 4, as --keep assumes


def sign_in(base: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    answer = client.post("/login", data={"username": "admin", "password": password, "csrf_token": token.group(1)})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code}")
    return client


@dataclass
class Timing:
    name: str
    samples: list[float]

    def p(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    def line(self) -> str:
        p95 = self.p(0.95)
        verdict = "ok" if p95 < TARGET_P95_MS else "OVER TARGET"
        return (f"  {self.name:<46} p50 {statistics.median(self.samples):7.1f} ms  p95 {p95:7.1f} ms  "
                f"max {max(self.samples):7.1f} ms  [{verdict}]")


def measure(client: httpx.Client, name: str, path: str, requests: int) -> Timing:
    for _ in range(3):  # warm caches and connections
        answer = client.get(path)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status_code}: {answer.text[:300]}")
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200
    return Timing(name, samples)


def run_backend(backend: str, count: int, requests: int, keep: Path | None = None, days: int = 30) -> list[Timing]:
    rng = random.Random(20261129)  # noqa: S311 (reproducible synthetic data)
    with contextlib.ExitStack() as stack:
        base_dir = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-bench-")))
        data_dir = base_dir / "data"
        if backend == "sqlite":
            url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        else:
            kept_name = base_dir / "pg-database"
            database = kept_name.read_text().strip() if keep is not None and kept_name.exists() else \
                "tp_bench_" + secrets.token_hex(4)
            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            if not kept_name.exists() or keep is None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{database}"')

            def drop(database: str = database) -> None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                admin.dispose()

            if keep is None:
                stack.callback(drop)
            else:
                kept_name.write_text(database)  # kept for another run; drop it by hand when done
                stack.callback(admin.dispose)
            url = sa.engine.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)
        saved = base_dir / f"admin-password-{backend}"
        if keep is not None and saved.exists():
            log(f"{backend}: reusing the fleet seeded earlier in {base_dir}")
            password_text = saved.read_text().strip()
            ids = {"unit": 4, "search": "lap-0123", "user": "nadia.0001"}
        else:
            log(f"{backend}: init and seed {count:,} devices")
            output = run_cli("--data-dir", str(data_dir), "--database-url", url, "init")
            password = re.search(r"^admin password: (\S+)$", output, re.MULTILINE)
            assert password
            password_text = password.group(1)
            ids = seed(url, count, rng, days)
            if keep is not None:
                saved.write_text(password_text)
        # The trend snapshot would rescan the fleet during the measurement; the seeded history is enough.
        with serve(data_dir, url, env={"TELEPOSTURE_LOG_LEVEL": "warning", "TELEPOSTURE_MAINTENANCE_INTERVAL": "86400"},
                   start_timeout=60) as server:
            base = server.url
            client = sign_in(base, password_text)
            unit = ids["unit"]
            pages = [
                ("overview (whole fleet)", "/"),
                ("overview (one org unit)", f"/?org_unit={unit}"),
                ("devices, no filter, page 1", "/devices"),
                ("devices: not compliant + org unit, by last seen", f"/devices?status=not_compliant&org_unit={unit}&sort=-last_seen"),
                ("devices: failing rule disk-encryption", "/devices?rule=disk-encryption"),
                ("devices: stale, sorted by last seen", "/devices?stale=yes&sort=last_seen"),
                ("devices: search host name prefix", f"/devices?q={ids['search']}"),
                ("devices: search user prefix", f"/devices?q={ids['user']}"),
                ("devices: OS filter, page 50 (htmx partial)", "/devices?os=macOS&page=50"),
            ]
            today = time.time()
            first = time.strftime("%Y-%m-%d", time.gmtime(today - (min(days, 400) - 1) * DAY))
            middle = time.strftime("%Y-%m-%d", time.gmtime(today - days // 2 * DAY))
            pages += [
                (f"trends: all rules, {min(days, 400)} days", f"/trends?since={first}"),
                (f"trends: one rule, {min(days, 400)} days", f"/trends?rule=disk-encryption&since={first}"),
                (f"trends: one rule + org unit, {min(days, 400)} d", f"/trends?rule=disk-encryption&org_unit={unit}"
                                                                     f"&since={first}"),
                ("compliance on a past day (print view)", f"/report/on?day={middle}"),
                ("compliance report, today (print view)", "/report"),
            ]
            timings = []
            for label, path in pages:
                if "htmx" in label:
                    client.headers["HX-Request"] = "true"
                timings.append(measure(client, label, path, requests))
                client.headers.pop("HX-Request", None)
            token = run_cli("--data-dir", str(data_dir), "--database-url", url, "api-token", "create",
                            "--name", f"bench-{secrets.token_hex(4)}").strip().splitlines()[-1]
            with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api:
                timings.append(measure(api, "API fleet summary", "/api/v1/admin/summary", requests))
            started = time.perf_counter()
            client.get("/policies/1/dry-run")
            log(f"  (policy dry-run on 5,000 stored reports: {time.perf_counter() - started:.1f} s)")
            client.close()
        log(f"{backend}: {count:,} devices, {requests} requests per page, one client, one server process")
        for timing in timings:
            log(timing.line())
        return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--days", type=int, default=400, help="days of daily rollups seeded (trend pages)")
    parser.add_argument("--keep", type=Path, help="seed into (or reuse the fleet in) this directory; on PostgreSQL "
                                                  "the database is kept too (its name is in DIR/pg-database)")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = {backend: run_backend(backend, args.devices, args.requests, args.keep, args.days)
               for backend in backends}
    worst = max(t.p(0.95) for timings in results.values() for t in timings)
    log(f"worst p95: {worst:.1f} ms (target {TARGET_P95_MS:.0f} ms)")
    return 0 if worst < TARGET_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
