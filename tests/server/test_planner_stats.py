"""SQLite's planner statistics: the `planner-stats` job (server.store.maintenance.refresh_planner_stats) and
a query that needed an index whatever the statistics say (ladder.end_exception)."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.collector_sim import Posture
from server import jobs
from server.actions import ladder
from server.store import maintenance
from server.store.db import Database
from server.store.schema import check_state, devices, metadata, org_units, rule_exceptions
from tests.server.conftest import Collector
from tests.waiting import eventually


def recorded_rows(db: Database) -> dict[str, int]:
    """Table -> its row count as the statistics recorded it (the first number of each sqlite_stat1 row)."""
    with db.read() as conn:
        return {str(table): int(str(stat).split()[0])
                for table, stat in conn.exec_driver_sql("SELECT tbl, stat FROM sqlite_stat1")}


def row_count(db: Database, table: sa.Table) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_job_keeps_sqlite_statistics_fresh_and_is_nothing_on_postgres(collector: Collector) -> None:
    ctx = collector.client.app.state.ctx
    if collector.db.is_postgres:
        # Autovacuum analyzes: no job, so no node holds a lock connection for it; called anyway, it does nothing.
        assert "planner-stats" not in ctx.cluster.job_names()
        assert maintenance.refresh_planner_stats(collector.db) is None
        jobs.refresh_planner_stats(ctx)
        with collector.db.read() as conn:
            assert conn.exec_driver_sql("SELECT to_regclass('sqlite_stat1')").scalar() is None
        return
    # SQLite: the job runs at start (the first maintenance interval is an hour away here).
    assert "planner-stats" in ctx.cluster.job_names()
    assert eventually(lambda: ctx.cluster.runs("planner-stats") >= 1)
    assert recorded_rows(collector.db)["policies"] == row_count(collector.db, metadata.tables["policies"]) > 0
    for number in range(3):
        device = collector.enroll()
        collector.send(device.report(posture=Posture(disk_encrypted=number != 0)))
    jobs.refresh_planner_stats(ctx)
    recorded = recorded_rows(collector.db)
    for name in ("devices", "check_state", "transitions", "reports", "enroll_tokens", "org_units", "policies"):
        assert recorded[name] == row_count(collector.db, metadata.tables[name]) > 0, name
    assert recorded["devices"] == 3
    # The next run sees the fleet as it is now, not as it was when statistics were first taken.
    for _ in range(2):
        collector.enroll()
    run = maintenance.refresh_planner_stats(collector.db)
    assert run is not None and run.tables == len(recorded_rows(collector.db)) >= 7
    assert recorded_rows(collector.db)["devices"] == 5


def _end_exception_plan(db: Database, org_unit_id: int) -> list[str]:
    """The query plan of end_exception's read of the failing rules an org unit's exception covered."""
    with db.write() as conn:
        exception_id = conn.execute(rule_exceptions.insert().values(
            rule_id="firewall-enabled", device_id=None, org_unit_id=org_unit_id, reason="pilot",
            expires_at=time.time() + 3600, created_at=time.time(), created_by="t")).inserted_primary_key[0]
    executed: list[str] = []
    with db.write() as conn:
        raw = conn.connection.dbapi_connection
        raw.set_trace_callback(executed.append)  # type: ignore[union-attr]
        try:
            assert ladder.end_exception(conn, int(exception_id), why="revoked by t")
        finally:
            raw.set_trace_callback(None)  # type: ignore[union-attr]
        [sql] = [s for s in executed if "FROM check_state JOIN devices" in s]
        return [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


def test_org_unit_exception_end_reads_only_failing_rows_with_or_without_statistics(tmp_path: Path) -> None:
    """Without `status` in its conditions the query read every row of the rule in the org unit through
    (active, org_unit_id, rule_id) and dropped the passing ones one by one (10.6 ms at 5,000 devices per unit,
    docs/collector.md): SQLite's statistics do not change that plan, the condition does."""
    db = Database(f"sqlite+pysqlite:///{tmp_path / 'plans.db'}")
    metadata.create_all(db.write_engine)
    now = time.time()
    with db.write() as conn:
        conn.execute(org_units.insert(), [{"id": unit, "name": f"unit {unit}", "created_at": now} for unit in (1, 2)])
        device_rows, state_rows = [], []
        for number in range(600):
            device_id, unit = f"dev-{number:04d}", 1 + number % 2
            device_rows.append({"id": device_id, "org_unit_id": unit, "state": "active", "public_key": "k",
                                "key_id": "k", "machine_id": device_id, "hostname": device_id,
                                "hostname_lc": device_id, "serial": "s", "serial_lc": "s", "username": "u",
                                "username_lc": "u", "platform": "linux", "os_name": "Debian", "os_version": "12",
                                "enrolled_at": now})
            for rule_id in ("firewall-enabled", "disk-encryption", "screen-lock"):
                status = "fail" if number % 25 == 0 else "pass"
                state_rows.append({"device_id": device_id, "rule_id": rule_id, "check_id": rule_id,
                                   "severity": "high", "status": status, "since": now,
                                   "failing_since": now if status == "fail" else None, "reason": "r",
                                   "message": "{}", "evidence": "[]", "updated_at": now, "org_unit_id": unit,
                                   "active": True})
        conn.execute(devices.insert(), device_rows)
        conn.execute(check_state.insert(), state_rows)
    try:
        for stage in ("without statistics", "with statistics"):
            if stage == "with statistics":
                assert maintenance.refresh_planner_stats(db) is not None
                assert "check_state" in recorded_rows(db)  # estimated beyond ANALYSIS_LIMIT rows
            plan = _end_exception_plan(db, org_unit_id=2)
            assert plan[0].startswith("SEARCH check_state USING INDEX ix_check_state_active_"), (stage, plan)
            for column in ("active=?", "rule_id=?", "org_unit_id=?", "status=?"):
                assert column in plan[0], (stage, column, plan)
            assert plan[1].startswith("SEARCH devices USING INDEX sqlite_autoindex_devices_1 (id=?)"), (stage, plan)
    finally:
        db.dispose()
