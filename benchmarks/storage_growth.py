"""Database bytes per device per day at steady state, and retention keeping the size flat.

A simulated fleet reports every hour through the collector's own ingest code (server.ingest.Ingestor,
signed envelopes, the real SQLite file or PostgreSQL database) with a SIMULATED CLOCK: reports carry
simulated `created_at` times and the ingestor and the retention job are given the simulated "now", so a
year runs in minutes instead of waiting. Every device runs the 11+ rules of the bundled baseline; each
simulated day 5 % of the devices change one rule (a switch flipped at a random hour, so the next day's
flips turn some back). Once a simulated day: the maintenance job's rollup snapshot and the retention
job (server.jobs.run_retention: raw reports, history, rollups, events) with the configured limits.

Printed: the database size (tables + indexes, free pages excluded) every --sample-days, the bytes each
table adds per device per day at steady state (after the first day's enrolment and first reports, before
any retention removes anything), and whether the size is flat once the retention horizons are reached.

    .venv/bin/python benchmarks/storage_growth.py --backend sqlite --devices 200 --days 14
    .venv/bin/python benchmarks/storage_growth.py --backend postgres --devices 100 --days 365 --history-days 90
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import protocol  # noqa: E402
from benchmarks.collector_sim import SimDevice  # noqa: E402
from benchmarks.loopback import scratch_database  # noqa: E402
from server import cli, jobs  # noqa: E402
from server.ingest import Ingestor  # noqa: E402
from server.settings import load_settings  # noqa: E402
from server.store import accounts, enrolment, maintenance  # noqa: E402
from server.store.db import Database  # noqa: E402
from server.store.schema import metadata  # noqa: E402

PG_ADMIN_URL = os.environ.get("TELEPOSTURE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DAY = 86400.0
GOAL_BYTES = 2048
ROLLUP_TABLES = ("daily_stats", "daily_rule_stats")
ROLLUP_UNITS = 5


def log(text: str) -> None:
    print(text, flush=True)  # noqa: T201 (benchmark output)


class SimulatedClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def table_bytes(db: Database) -> dict[str, int]:
    """Bytes per collector table, indexes included (PostgreSQL: partitions included; SQLite: dbstat)."""
    sizes: dict[str, int] = {}
    with db.read() as conn:
        if db.is_postgres:
            for table in metadata.sorted_tables:
                # pg_partition_tree lists nothing for a plain table.
                sizes[table.name] = int(conn.execute(sa.text(
                    "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(:t)), "
                    "pg_total_relation_size(:t))"), {"t": table.name}).scalar_one())
        else:
            owners: dict[str, str] = dict(conn.execute(sa.text(
                "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")).all())
            for name, used in conn.execute(sa.text("SELECT name, sum(pgsize - unused) FROM dbstat GROUP BY name")):
                owner = owners.get(name, name)
                sizes[owner] = sizes.get(owner, 0) + int(used)
    return {name: size for name, size in sizes.items() if name in metadata.tables}


@contextlib.contextmanager
def database(backend: str, base: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+pysqlite:///{base / 'data' / 'teleposture.db'}"
    else:
        with scratch_database(PG_ADMIN_URL) as url:
            yield url


def run(backend: str, count: int, days: int, *, history_days: float, report_days: float, event_days: float,
        sample_days: int, report_interval: float, raw_interval: float, batch: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 (reproducible simulation)
    with tempfile.TemporaryDirectory(prefix="tp-storage-") as tmp, database(backend, Path(tmp)) as url:
        data_dir = Path(tmp) / "data"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if cli.main(["--data-dir", str(data_dir), "--database-url", url, "init"]) != 0:
                raise RuntimeError(f"init failed: {err.getvalue()}")
        settings = load_settings({"data_dir": data_dir, "database_url": url, "history_retention": history_days * DAY,
                                  "report_retention": report_days * DAY, "event_retention": event_days * DAY},
                                 environ={})
        db = Database(url)
        start = (time.time() // DAY - days - 1) * DAY  # midnight UTC, far enough back to end before now
        clock = SimulatedClock(start)
        ingestor = Ingestor(db, raw_report_interval=raw_interval, clock=clock)
        fleet = []
        with db.write() as conn:
            units = [accounts.ensure_org_unit(conn, f"Administration {n + 1:02d}", start) for n in range(ROLLUP_UNITS)]
            grants = [enrolment.TokenGrant(enrolment.create_enroll_token(
                conn, unit, uses_allowed=None, lifetime=DAY, created_by="benchmark", now=start)[0], unit)
                for unit in units]
            for number in range(count):
                device = SimDevice.numbered(number + 1)
                grant = grants[number % len(grants)]
                key = protocol.public_key_b64(device.key)
                device.device_id = enrolment.register_device(
                    conn, grant, key, key[:16], device.enroll_body("")["device"], start).device_id
                fleet.append(device)
        per_day = int(DAY // report_interval)
        samples: list[tuple[int, int, dict[str, int]]] = []
        started = time.monotonic()
        reports = 0
        for day in range(days):
            flips = {id(d): rng.randrange(per_day) for d in rng.sample(fleet, max(1, round(0.05 * count)))} \
                if day else {}
            for slot in range(per_day):
                at = start + day * DAY + slot * report_interval + 60
                envelopes = []
                for device in fleet:
                    if flips.get(id(device)) == slot:
                        device.posture = device.posture.flipped(rng)
                    envelopes.append(device.report(created_at=at + rng.uniform(0, 30)))
                clock.now = at + 45
                for offset in range(0, len(envelopes), batch):
                    ingestor.ingest(envelopes[offset:offset + batch])
                reports += len(envelopes)
            clock.now = start + (day + 1) * DAY - 60
            with db.write() as conn:
                maintenance.snapshot_daily_stats(conn, now=clock.now, stale_after=settings.stale_after)
            jobs.run_retention(db, settings, now=clock.now)  # what the retention cluster job does
            if db.is_postgres:
                # What autovacuum does within a minute of a real day's updates (a simulated day takes seconds):
                # the devices row updated every hour leaves dead versions whose space is then reused.
                with db.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            if day <= 1 or (day + 1) % sample_days == 0 or day == days - 1:
                sizes = table_bytes(db)
                samples.append((day + 1, sum(sizes.values()), sizes))
                rollup_bytes = sum(sizes.get(name, 0) for name in ROLLUP_TABLES)
                log(f"  day {day + 1:4d}: {sum(sizes.values()) / count / 1024:8.1f} KiB/device "
                    f"({sum(sizes.values()) / 1e6:7.1f} MB, rollups {rollup_bytes / 1e6:5.2f} MB)  [{reports:,} reports, "
                    f"{reports / (time.monotonic() - started):,.0f}/s]")
        db.dispose()
    return {"samples": samples}


def growth(samples: list[tuple[int, int, dict[str, int]]], count: int, until_day: float) -> tuple[float, dict[str, float]]:
    """Bytes per device per day between day 2 and the last sample before ``until_day``."""
    # From the end of day 2: day 1 holds the enrolments and first reports, and on PostgreSQL day 2 the
    # devices table grows to the room its hourly updates need between two vacuums; both happen once.
    first = samples[1] if len(samples) > 2 and samples[1][0] == 2 else samples[0]
    usable = [s for s in samples if s[0] <= until_day and s[0] > first[0]]
    if not usable:
        return float("nan"), {}
    last = usable[-1]
    span = (last[0] - first[0]) * count
    per_table = {name: (last[2].get(name, 0) - first[2].get(name, 0)) / span for name in last[2]}
    return (last[1] - first[1]) / span, per_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=int, default=60, help="simulated days (365 for the year)")
    parser.add_argument("--history-days", type=float, default=30.0, help="history_retention in days "
                        "(the collector's default is 365; shorter shows the plateau within the run)")
    parser.add_argument("--report-days", type=float, default=30.0, help="report_retention in days")
    parser.add_argument("--event-days", type=float, default=30.0, help="event_retention in days (the events "
                        "outbox: compliance changes; the collector's default is 90)")
    parser.add_argument("--raw-interval", type=float, default=7 * DAY, help="raw_report_interval in seconds "
                        "(the collector default: 7 days)")
    parser.add_argument("--report-interval", type=float, default=3600.0, help="seconds between a device's reports")
    parser.add_argument("--sample-days", type=int, default=7)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    worst = 0.0
    for backend in backends:
        log(f"{backend}: {args.devices} devices, {args.days} simulated days, a report every "
            f"{args.report_interval:g} s, raw copy at most every {args.raw_interval:g} s, history kept "
            f"{args.history_days:g} d, raw reports {args.report_days:g} d, events {args.event_days:g} d")
        result = run(backend, args.devices, args.days, history_days=args.history_days,
                     report_days=args.report_days, event_days=args.event_days, sample_days=args.sample_days,
                     report_interval=args.report_interval, raw_interval=args.raw_interval, batch=args.batch, seed=16)
        samples = result["samples"]
        horizon = min(args.history_days, args.report_days, args.event_days)
        total, per_table = growth(samples, args.devices, horizon)
        worst = max(worst, total)
        log(f"  steady state, before retention (days 2-{min(horizon, args.days):g}): {total:,.0f} bytes/device/day "
            f"(goal <= {GOAL_BYTES})")
        for name, value in sorted(per_table.items(), key=lambda item: -item[1]):
            if abs(value) >= 1:
                log(f"    {name:<18} {value:9,.0f} bytes/device/day")
        longest = max(args.history_days, args.report_days, args.event_days)
        flat = [s for s in samples if s[0] >= longest + 1]
        if len(flat) >= 2:
            # Rollups grow with org units x rules x days (kept 400 days), not with devices: shown apart.
            per_device = [sum(v for k, v in s[2].items() if k not in ROLLUP_TABLES) for s in flat]
            rollups = [sum(s[2].get(k, 0) for k in ROLLUP_TABLES) for s in flat]
            low, high = min(per_device), max(per_device)
            log(f"  after day {longest:g} (history, raw-report and event horizons reached), rollups apart: between "
                f"{low / args.devices / 1024:,.1f} and {high / args.devices / 1024:,.1f} KiB/device "
                f"({(high - low) / high * 100:.1f} % spread over {flat[-1][0] - flat[0][0]} days); rollups "
                f"{rollups[0] / 1e6:.2f} -> {rollups[-1] / 1e6:.2f} MB ({ROLLUP_UNITS} org units x 11+ rules)")
    return 0 if worst <= GOAL_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
