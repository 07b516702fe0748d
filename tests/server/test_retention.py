"""Bounded storage and trend rollups: history retention (monthly partitions dropped on PostgreSQL,
batched deletes on SQLite), the 0012 migration that partitions an existing history, and the daily
rollups per org unit x rule with their new failures, fixes and median time to fix."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from server import jobs
from server.actions import delivery
from server.actions.events import emit_event
from server.store import accounts, maintenance, migrate, retention
from server.store.db import Database
from server.store.schema import (
    daily_rule_stats,
    daily_status_changes,
    deliveries,
    events,
    hourly_status_changes,
    reports,
    sinks,
    transitions,
)
from server.store.scope import Scope
from tests.server.conftest import Collector, collector_settings, run_cli, settle_jobs

DAY = 86400.0


def _history(collector: Collector, device_id: str | None) -> list[dict[str, object]]:
    assert device_id is not None
    response = collector.admin("GET", f"/devices/{device_id}/history", params={"per_page": 200})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _count(db: Database, table: sa.Table) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_history_retention_drops_old_months_and_keeps_the_rest(collector: Collector) -> None:
    settle_jobs(collector)
    now = time.time()
    device = collector.enroll()
    # A first report 400 days ago (one transition per rule), a failure 200 days ago, its fix 10 days ago.
    good = device.posture
    collector.send(device.report(created_at=now - 400 * DAY))
    collector.send(device.report(created_at=now - 200 * DAY, posture=replace(good, disk_encrypted=False)))
    collector.send(device.report(created_at=now - 10 * DAY, posture=good))
    first_report_rules = len(device.policy.rules)
    assert len(_history(collector, device.device_id)) == first_report_rules + 2
    postgres = collector.db.is_postgres

    # Keeping 500 days removes nothing; on PostgreSQL it files the old rows into their month.
    kept = collector.settings.model_copy(update={"history_retention": 500 * DAY, "report_retention": 500 * DAY})
    run = retention.enforce(collector.db, kept, now=now)
    assert run.deleted["transitions"] == 0 and run.dropped_partitions == []
    assert len(_history(collector, device.device_id)) == first_report_rules + 2
    old_month = retention.partition_name("transitions", *retention.month_start(now - 400 * DAY))
    if postgres:
        assert old_month in run.created_partitions
        with collector.db.read() as conn:
            in_default = conn.execute(sa.text("SELECT count(*) FROM transitions_default")).scalar_one()
        assert in_default == 0

    # Keeping a year: the rows of 400 days ago go (their whole month on PostgreSQL), the rest stays.
    year = collector.settings.model_copy(update={"history_retention": 365 * DAY, "retention_batch": 3})
    run = retention.enforce(collector.db, year, now=now)
    history = _history(collector, device.device_id)
    assert [(h["rule_id"], h["new_status"]) for h in history] == [("disk-encryption", "pass"),
                                                                   ("disk-encryption", "fail")]
    if postgres:
        assert old_month in run.dropped_partitions and run.deleted["transitions"] == 0
        with collector.db.read() as conn:
            assert old_month not in retention.month_partitions(conn, "transitions").values()
    else:
        assert run.deleted["transitions"] == first_report_rules and run.dropped_partitions == []
    # Raw reports go by reception time (all just now): kept today, gone 31 days later (default 30 days),
    # the device's state untouched.
    stored = _count(collector.db, reports)
    assert stored >= 1 and run.deleted["reports"] == 0
    later = retention.enforce(collector.db, year, now=now + 31 * DAY)
    assert later.deleted["reports"] == stored and _count(collector.db, reports) == 0
    assert collector.admin("GET", f"/devices/{device.device_id}").json()["device"]["compliance"] == "compliant"
    # Ingest goes on into the partitions that are left (and the DEFAULT one for far times).
    collector.send(device.report(posture=replace(good, disk_encrypted=False)))
    assert len(_history(collector, device.device_id)) == 3
    assert retention.enforce(collector.db, year, now=now).deleted["transitions"] == 0


def _delivery_states(db: Database) -> dict[tuple[str, str], str]:
    """(event type, sink name) -> delivery state."""
    with db.read() as conn:
        return {(str(r.type), str(r.name)): str(r.state) for r in conn.execute(
            sa.select(events.c.type, sinks.c.name, deliveries.c.state)
            .join(deliveries, deliveries.c.event_id == events.c.id).join(sinks, sinks.c.id == deliveries.c.sink_id))}


def _event_types(db: Database) -> set[str]:
    with db.read() as conn:
        return {str(t) for t in conn.execute(sa.select(events.c.type)).scalars()}


def test_event_retention_never_drops_undelivered_events_and_keeps_dead_letters(collector: Collector) -> None:
    settle_jobs(collector)
    now = time.time()
    db = collector.db
    settings = collector.client.app.state.ctx.settings
    assert (settings.event_retention, settings.dead_letter_retention) == (90 * DAY, 30 * DAY)
    with db.write() as conn:
        for name in ("a", "b", "off"):
            conn.execute(sinks.insert().values(name=name, kind="webhook", config="{}", filters="{}", enabled=True,
                                               created_at=now - 200 * DAY))
        ids = {name: int(i) for name, i in conn.execute(sa.select(sinks.c.name, sinks.c.id))}
        # Each event type stands for one case; every event fans out to the three sinks, all delivered first.
        old, recent = now - 100 * DAY, now - 10 * DAY
        cases = {"rule.failing": old, "rule.passing": old, "step.reached": old, "device.noncompliant": old,
                 "device.compliant": old, "device.stale": recent}
        for kind, at in cases.items():
            emit_event(conn, kind, device_id="d-1", now=at)
        conn.execute(deliveries.update().values(state=delivery.DELIVERED, delivered_at=now - 99 * DAY))

        def set_state(kind: str, sink: str, state: str, last_attempt: float = now) -> None:
            event_id = sa.select(events.c.id).where(events.c.type == kind).scalar_subquery()
            conn.execute(deliveries.update().where(deliveries.c.event_id == event_id,
                                                   deliveries.c.sink_id == ids[sink])
                         .values(state=state, next_attempt_at=last_attempt))

        set_state("rule.passing", "b", delivery.PENDING)  # still owed to an enabled sink: kept
        set_state("step.reached", "off", delivery.PENDING)  # owed only to a sink switched off: goes
        set_state("device.noncompliant", "a", delivery.DEAD, now - 10 * DAY)  # a dead letter 10 days old: kept
        set_state("device.compliant", "a", delivery.DEAD, now - 40 * DAY)  # a dead letter past 30 days: goes
        conn.execute(sinks.update().where(sinks.c.name == "off").values(enabled=False))
    assert len(_delivery_states(db)) == 18

    # Batches of 2 with kept events among the oldest: every deletable one still goes.
    pruned = delivery.prune_outbox(db, event_retention=settings.event_retention,
                                   dead_letter_retention=settings.dead_letter_retention, batch=2, now=now)
    assert (pruned.events, pruned.deliveries, pruned.dead_letters) == (3, 8, 1)
    assert _event_types(db) == {"rule.passing", "device.noncompliant", "device.stale"}
    states = _delivery_states(db)
    assert states[("rule.passing", "b")] == delivery.PENDING and states[("rule.passing", "a")] == delivery.DELIVERED
    assert states[("device.noncompliant", "a")] == delivery.DEAD
    with db.read() as conn:
        assert [d["type"] for d in delivery.dead_letters(conn)] == ["device.noncompliant"]
    # Idempotent.
    again = delivery.prune_outbox(db, event_retention=90 * DAY, dead_letter_retention=30 * DAY, batch=2, now=now)
    assert (again.events, again.dead_letters) == (0, 0)

    # Once delivered, the owed event goes; the dead letter goes 30 days after its last attempt, and its
    # event with it. The retention cluster job does both with the settings' defaults.
    with db.write() as conn:
        conn.execute(deliveries.update().where(deliveries.c.state == delivery.PENDING)
                     .values(state=delivery.DELIVERED, delivered_at=now))
    jobs.enforce_retention(collector.client.app.state.ctx)
    assert _event_types(db) == {"device.noncompliant", "device.stale"}
    later = delivery.prune_outbox(db, event_retention=90 * DAY, dead_letter_retention=30 * DAY, batch=2,
                                  now=now + 21 * DAY)
    assert (later.events, later.dead_letters) == (1, 1)
    assert _event_types(db) == {"device.stale"}
    # Ingest and the outbox go on: new events and their deliveries are written as before.
    with db.write() as conn:
        emit_event(conn, "rule.failing", device_id="d-2", now=now)
    assert _delivery_states(db)[("rule.failing", "a")] == delivery.PENDING


def test_migration_partitions_an_existing_history(database_url: str) -> None:
    db = Database(database_url)
    now = time.time()
    try:
        config = migrate._config()
        with db.write_engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0006")
        with db.write() as conn:
            conn.execute(sa.text("INSERT INTO org_units (id, name, created_at) VALUES (1, 'Finance', 0)"))
            conn.execute(sa.text(
                "INSERT INTO devices (id, org_unit_id, state, public_key, key_id, machine_id, hostname, hostname_lc, "
                "serial, serial_lc, username, username_lc, platform, os_name, os_version, enrolled_at) VALUES "
                "('d1', 1, 'active', 'k', 'k', 'm', 'h', 'h', 's', 's', 'u', 'u', 'linux', 'Debian', '12', 0)"))
            conn.execute(sa.text(
                "INSERT INTO transitions (device_id, rule_id, check_id, old_status, new_status, at, recorded_at, "
                "seq, reason, org_unit_id) VALUES ('d1', 'r', 'c', NULL, 'pass', :a, :a, 1, 'x', 1), "
                "('d1', 'r', 'c', 'pass', 'fail', :b, :b, 2, 'y', 1)"), {"a": now - 90 * DAY, "b": now})
            conn.execute(sa.text(
                "INSERT INTO daily_stats (day, org_unit_id, devices, compliant, not_compliant, error, unknown, "
                "stale, rules, computed_at) VALUES ('2026-11-01', 1, 1, 1, 0, 0, 0, 0, "
                "'{\"r\": {\"pass\": 1}}', 5)"))
            before = conn.execute(sa.text("SELECT max(id) FROM transitions")).scalar_one()
        migrate.upgrade(db)
        with db.write() as conn:
            # PostgreSQL partitions the table by month; SQLite keeps a plain table (batched deletes).
            assert retention.is_partitioned(conn, "transitions") == db.is_postgres
            rows = conn.execute(sa.select(transitions.c.id, transitions.c.new_status, transitions.c.at)
                                .order_by(transitions.c.id)).all()
            assert [(r.new_status, r.at) for r in rows] == [("pass", now - 90 * DAY), ("fail", now)]
            if db.is_postgres:
                months = retention.month_partitions(conn, "transitions")
                assert retention.month_start(now - 90 * DAY) in months and retention.month_start(now) in months
            new_id = conn.execute(transitions.insert().values(
                device_id="d1", rule_id="r", check_id="c", old_status="fail", new_status="pass", at=now,
                recorded_at=now, seq=3, reason="z", org_unit_id=1)).inserted_primary_key
            assert new_id is not None and new_id[0] > before
            rollup = conn.execute(sa.select(daily_rule_stats)).mappings().one()
            assert (rollup["day"], rollup["rule_id"], rollup["passing"]) == ("2026-11-01", "r", 1)
            # The unique key still refuses a second row for the same change.
            with pytest.raises(sa.exc.IntegrityError):
                with conn.begin_nested():
                    conn.execute(transitions.insert().values(
                        device_id="d1", rule_id="r", check_id="c", old_status="fail", new_status="pass", at=now,
                        recorded_at=now, seq=3, reason="z", org_unit_id=1))
    finally:
        db.dispose()


def test_daily_rollups_count_failures_fixes_and_time_to_fix(collector: Collector) -> None:
    settle_jobs(collector)
    # "Today" is noon UTC ten days ago, so "+/- hours" stay within each day whatever the clock says.
    today = time.time() // DAY * DAY - 10 * DAY + 12 * 3600
    finance = [collector.enroll(org_unit="Finance") for _ in range(2)]
    hr = collector.enroll(org_unit="HR")
    good = finance[0].posture
    broken = replace(good, disk_encrypted=False)
    for device in (*finance, hr):
        collector.send(device.report(created_at=today - 2 * DAY))
    with collector.db.write() as conn:
        maintenance.snapshot_daily_stats(conn, now=today - 2 * DAY + 3600, stale_after=30 * DAY)
    collector.send(finance[0].report(created_at=today - DAY - 3600, posture=broken))
    collector.send(hr.report(created_at=today - DAY - 3600, posture=broken))
    with collector.db.write() as conn:
        maintenance.snapshot_daily_stats(conn, now=today - DAY - 1800, stale_after=30 * DAY)
    # After yesterday's last snapshot: HR fixes it within the day; Finance fixes it today, 25 h later.
    collector.send(hr.report(created_at=today - DAY + 3600, posture=good))
    collector.send(finance[0].report(created_at=today, posture=good))
    with collector.db.write() as conn:
        maintenance.snapshot_daily_stats(conn, now=today + 60, stale_after=30 * DAY)
        trend = maintenance.rule_trend(conn, Scope(None), since_day=maintenance.utc_day(today - 2 * DAY),
                                       until_day=maintenance.utc_day(today), rule_id="disk-encryption")
        finance_id = accounts.org_unit_id(conn, "Finance")
        assert finance_id is not None
        finance_only = maintenance.rule_trend(conn, Scope(frozenset({finance_id})),
                                              since_day=maintenance.utc_day(today - DAY),
                                              until_day=maintenance.utc_day(today))
    by_day = {row["day"]: row for row in trend}
    first, middle, last = (by_day[maintenance.utc_day(today + k * DAY)] for k in (-2, -1, 0))
    assert (first["passing"], first["failing"], first["new_failures"], first["fixed"]) == (3, 0, 0, 0)
    assert first["compliant_share"] == 1.0
    # Yesterday's counts stay those of its last snapshot; its changes include the late HR fix (2 h).
    assert (middle["passing"], middle["failing"], middle["new_failures"], middle["fixed"]) == (1, 2, 2, 1)
    assert middle["fix_seconds_median"] == 2 * 3600
    assert middle["compliant_share"] == pytest.approx(1 / 3)
    assert (last["passing"], last["failing"], last["new_failures"], last["fixed"]) == (3, 0, 0, 1)
    assert last["fix_seconds_median"] == DAY + 3600
    # Scoped to Finance: every rule, HR's failure and fix left out.
    finance_disk = {row["day"]: row for row in finance_only if row["rule_id"] == "disk-encryption"}
    assert (finance_disk[middle["day"]]["failing"], finance_disk[middle["day"]]["fixed"]) == (1, 0)
    assert finance_disk[last["day"]]["fix_seconds_median"] == DAY + 3600
    assert {row["rule_id"] for row in finance_only} == {rule.id for rule in hr.policy.rules}


def test_rule_trend_api(collector: Collector) -> None:
    day = time.time() // DAY * DAY - 5 * DAY + 12 * 3600
    device = collector.enroll(org_unit="Finance")
    collector.send(device.report(created_at=day, posture=replace(device.posture, disk_encrypted=False)))
    with collector.db.write() as conn:
        maintenance.snapshot_daily_stats(conn, now=day + 60, stale_after=30 * DAY)
    the_day = maintenance.utc_day(day)
    params = {"since": the_day, "until": the_day, "rule": "disk-encryption"}
    answer = collector.admin("GET", "/trend/rules", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"day": the_day, "rule_id": "disk-encryption", "passing": 0, "warning": 0, "failing": 1,
                              "errors": 0, "not_applicable": 0, "new_failures": 1, "fixed": 0,
                              "fix_seconds_median": None, "compliant_share": 0.0}]
    # Another org unit (or one outside the caller's scope) has nothing; every rule without `rule`.
    collector.enroll(org_unit="HR")
    assert collector.admin("GET", "/trend/rules", params={**params, "org_unit": "HR"}).json() == []
    assert len(collector.admin("GET", "/trend/rules", params={"since": the_day, "until": the_day}).json()) \
        == len(device.policy.rules)
    hr_viewer = collector.api_token(org_units=("HR",), name="hr")
    assert collector.admin("GET", "/trend/rules", token=hr_viewer, params=params).json() == []
    for bad in ({"since": the_day, "until": "2020-01-01"}, {"since": "2024-02-30", "until": the_day},
                {"since": "2020-01-01", "until": the_day}, {"since": "yesterday", "until": the_day}):
        assert collector.admin("GET", "/trend/rules", params=bad).status_code in (400, 422), bad


def test_partition_changes_are_serialised_across_processes(database_url: str, tmp_path: Path) -> None:
    """Two retention runs at once (two collector processes): one waits for the other's partition
    changes instead of failing on a month the other just created (PostgreSQL; SQLite has no partitions
    and its batched deletes simply race to delete the same rows)."""
    code, _out, err = run_cli("--data-dir", str(tmp_path / "data"), "--database-url", database_url, "init")
    assert code == 0, err
    settings = collector_settings(tmp_path / "data", database_url, history_retention="800d")
    first, second = Database(database_url), Database(database_url)
    now = time.time()
    try:
        results: list[retention.RetentionRun] = []
        errors: list[BaseException] = []

        def enforce(db: Database) -> None:
            try:
                results.append(retention.enforce(db, settings, now=now))
            except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
                errors.append(exc)

        threads = [threading.Thread(target=enforce, args=(db,)) for db in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        created = [name for run in results for name in run.created_partitions]
        with first.read() as conn:
            months = retention.month_partitions(conn, "transitions") if first.is_postgres else {}
        if first.is_postgres:
            # 800 days back to two months ahead, each created once by one of the two runs.
            assert sorted(created) == sorted(set(created)) and set(months.values()) >= set(created)
            assert retention.month_start(now - 790 * DAY) in months
        else:
            assert created == []
    finally:
        first.dispose()
        second.dispose()


def test_rollup_retention_keeps_the_report_change_counts_of_the_kept_days(collector: Collector) -> None:
    settle_jobs(collector)
    now = time.time()
    oldest_kept = maintenance.utc_day(now - 400 * DAY)
    day_before = maintenance.utc_day(now - 401 * DAY)
    with collector.db.write() as conn:
        for day in (day_before, oldest_kept):
            conn.execute(daily_status_changes.insert().values(day=day, org_unit_id=1, new_status="fail", changes=3))
            for hour in ("00", "23"):
                conn.execute(hourly_status_changes.insert().values(hour=f"{day} {hour}", org_unit_id=1,
                                                                   new_status="fail", changes=1))
        assert maintenance.prune_rollups(conn, retention=400 * DAY, now=now) == 3
        assert conn.execute(sa.select(daily_status_changes.c.day)).scalars().all() == [oldest_kept]
        assert sorted(conn.execute(sa.select(hourly_status_changes.c.hour)).scalars().all()) == [
            f"{oldest_kept} 00", f"{oldest_kept} 23"]
