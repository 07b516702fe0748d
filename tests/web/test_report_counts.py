"""The printable report's figures (in-process app, SQLite and PostgreSQL): today's counted live for a
fleet in scope up to overview_live_limit, else the counts the snapshot job keeps, with their age in the
reader's language."""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks.collector_sim import SimDevice
from server import jobs
from server.store import accounts, change_counts, maintenance, retention
from server.store.schema import daily_status_changes, org_units, transitions
from server.store.scope import Scope
from tests.server.conftest import (  # noqa: F401 (fixtures used by name)
    Collector,
    _cheap_password_hashing,
    in_process,
    initialised,
    settle_jobs,
    templates,
)
from tests.web.conftest import csrf_of

PASSWORD = "report-counts-password-1"
DAY = 86400.0


def _sign_in(collector: Collector, username: str) -> TestClient:
    client = TestClient(collector.client.app, follow_redirects=False)
    page = client.get("/login")
    answer = client.post("/login", data={"username": username, "password": PASSWORD,
                                         "csrf_token": csrf_of(page.text), "next": "/"})
    assert answer.status_code == 303, answer.text
    return client


def _figures(html: str) -> dict[str, Any]:
    """Devices, the disk rule's failing count and the counts' age line of the report's 'today' part."""
    devices = re.search(r'<th scope="row">Devices</th><td>(\d+)</td>', html)
    disk = re.search(r'<th scope="row" dir="ltr">disk-encryption</th>.*?'
                     r'(?:<td class="num">(\d+)</td>){3}', html, re.DOTALL)
    as_of = re.search(r'<p class="muted" id="counts-as-of">(.*?)</p>', html, re.DOTALL)
    assert devices and disk, "the report lost its device count or rule table"
    return {"devices": int(devices.group(1)), "disk_fail": int(disk.group(1)),
            "as_of": as_of.group(1) if as_of else None}


def _enrol(collector: Collector, name: str, org_unit: str, encrypted: bool) -> None:
    device = SimDevice(hostname=name, machine_id=f"m-{name}", serial=f"SER-{name}")
    collector.enroll(device, org_unit=org_unit)
    collector.send(device.report(posture=replace(device.posture, disk_encrypted=encrypted)))


def test_report_of_a_large_fleet_shows_the_stored_counts_and_their_age(initialised: Any) -> None:  # noqa: F811
    with in_process(initialised, overview_live_limit=1) as collector:
        settle_jobs(collector)
        for name, unit, encrypted in (("alpha", "Finance", True), ("bravo", "Finance", False),
                                      ("charlie", "HR", False)):
            _enrol(collector, name, unit, encrypted)
        with collector.db.write() as conn:
            hr = int(conn.execute(sa.select(org_units.c.id).where(org_units.c.name == "HR")).scalar_one())
            accounts.create_user(conn, "boss", PASSWORD, "admin")
            accounts.create_user(conn, "hr-viewer", PASSWORD, "viewer", org_unit_ids=[hr])
        boss, hr_viewer = _sign_in(collector, "boss"), _sign_in(collector, "hr-viewer")
        assert _figures(boss.get("/report").text) == {"devices": 3, "disk_fail": 2, "as_of": None}

        with collector.db.write() as conn:
            maintenance.snapshot_daily_stats(conn, now=time.time() - 150, stale_after=collector.settings.stale_after)
        _enrol(collector, "delta", "Finance", False)  # after the count: not in it yet
        stored = _figures(boss.get("/report").text)
        assert (stored["devices"], stored["disk_fail"]) == (3, 2)
        assert stored["as_of"] and "counted 2 minutes ago" in stored["as_of"]
        boss.cookies.set("tp_lang", "fr")
        assert "il y a 2 minutes" in boss.get("/report").text
        boss.cookies.set("tp_lang", "ar")
        assert "قبل دقيقتين" in boss.get("/report").text
        # The viewer of HR: one device, not above the limit of one in their scope, so counted live.
        assert _figures(hr_viewer.get("/report").text) == {"devices": 1, "disk_fail": 1, "as_of": None}

    with in_process(initialised, overview_live_limit=3) as collector:
        settle_jobs(collector)
        with collector.db.write() as conn:
            maintenance.snapshot_daily_stats(conn, now=time.time() - 60, stale_after=collector.settings.stale_after)
            finance = int(conn.execute(sa.select(org_units.c.id).where(org_units.c.name == "Finance")).scalar_one())
        _enrol(collector, "echo", "Finance", True)
        boss = _sign_in(collector, "boss")
        # Five devices now: the whole fleet was above the limit at the count (four), Finance (three) was not.
        whole = _figures(boss.get("/report").text)
        assert whole["devices"] == 4 and whole["as_of"] and "counted 1 minute ago" in whole["as_of"]
        assert _figures(boss.get(f"/report?org_unit={finance}").text) == {"devices": 4, "disk_fail": 2, "as_of": None}


def _live_changes(conn: sa.Connection, scope: Scope, since: float, until: float) -> dict[str, int]:
    """The reference: every history row of the period counted by new status."""
    rows = conn.execute(sa.select(transitions.c.new_status, sa.func.count())
                        .where(transitions.c.at >= since, transitions.c.at < until,
                               scope.clause(transitions.c.org_unit_id))
                        .group_by(transitions.c.new_status))
    return {str(status): int(count) for status, count in rows}


def _changes_line(html: str) -> dict[str, int]:
    line = re.search(r"<h2>Changes during the period</h2>\s*<p>(.*?)</p>", html, re.DOTALL)
    assert line, "the report lost its changes line"
    names = {"fail": "fail", "warning": "warn", "error": "error", "pass": "pass"}
    return {names[name]: int(count) for name, count in re.findall(r"(\w+): (\d+)", line.group(1)) if int(count)}


def test_report_changes_are_the_rollup_plus_the_rest_counted_live(initialised: Any,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole days and hours come from the snapshot job's rollups, the rest (rows past its mark: a day it
    has not counted, a report sent late for a counted day; parts of hours) live: the sum is the live count."""
    with in_process(initialised) as collector:
        settle_jobs(collector)
        now = time.time()
        midnight = math.floor(now / DAY) * DAY
        finance, hr = SimDevice.numbered(1), SimDevice.numbered(2)
        collector.enroll(finance, org_unit="Finance")
        collector.enroll(hr, org_unit="HR")
        good = finance.posture
        postures = (replace(good, disk_encrypted=False), replace(good, reboot_required=True, vpn_up=False), good)
        # Changes 6, 5 and 4 days ago (06:00), then the job counts them.
        for offset, posture in zip((6, 5, 4), postures):
            for device in (finance, hr):
                collector.send(device.report(created_at=midnight - offset * DAY + DAY / 4, posture=posture))
        monkeypatch.setattr(change_counts, "SETTLE_SECONDS", 0.0)  # the rows just sent count at once
        jobs.daily_snapshot(collector.client.app.state.ctx)
        monkeypatch.undo()
        with collector.db.read() as conn:
            mark = change_counts.last_counted_id(conn)
            assert mark is not None and mark == conn.execute(sa.select(sa.func.max(transitions.c.id))).scalar_one()
        # Not counted yet: changes 2 days ago, a report buffered by an offline agent about 5 days ago
        # (a day already counted), changes today.
        collector.send(finance.report(created_at=midnight - 2 * DAY + 3600, posture=postures[0]))
        collector.send(hr.report(created_at=midnight - 5 * DAY + DAY * 0.75, posture=postures[1]))
        collector.send(finance.report(created_at=min(now, midnight + 60), posture=postures[1]))
        with collector.db.read() as conn:
            hr_id = int(conn.execute(sa.select(org_units.c.id).where(org_units.c.name == "HR")).scalar_one())
            past_mark = conn.execute(sa.select(sa.func.count()).where(transitions.c.id > mark)).scalar_one()
            assert past_mark > 0 and conn.execute(sa.select(sa.func.sum(daily_status_changes.c.changes))
                                                  ).scalar_one() == _rows_up_to(conn, mark)
            periods = [(now - 30 * DAY, now), (midnight - 6 * DAY, midnight - 4 * DAY),
                       (midnight - 5 * DAY + 7200, midnight - DAY), (midnight - 2 * DAY, now + 1),
                       (midnight + 1, now + 1), (midnight - 5 * DAY, midnight - 5 * DAY + DAY / 2),
                       (midnight - 6 * DAY + 0.3 * DAY, midnight - 5 * DAY + 0.8 * DAY),
                       (midnight - 5 * DAY + 0.3 * DAY, midnight - 5 * DAY + 0.8 * DAY),
                       # ends 10 minutes into an hour: its rollup less the rows before, then live
                       (midnight - 6 * DAY + DAY / 4 + 600, midnight - 5 * DAY + 0.75 * DAY + 600)]
            for scope in (Scope.everything(), Scope(frozenset([hr_id]))):
                for since, until in periods:
                    expected = _live_changes(conn, scope, since, until)
                    assert change_counts.changes_in_period(conn, scope, since=since, until=until) == expected, \
                        (scope, since - midnight, until - midnight)
        with collector.db.read() as conn:
            whole = _live_changes(conn, Scope.everything(), now - 30 * DAY, now + 1)
        assert whole.get("fail") and whole.get("pass")
        boss = _report_client(collector)
        assert _changes_line(boss.get("/report").text) == {s: n for s, n in whole.items() if s != "not_applicable"}

        # The job counts the rest; the history pruned (whole months on PostgreSQL), the counted days keep
        # their counts where a live count now finds fewer.
        with collector.db.write() as conn:
            # At most `batch` ids a run (the first run after the upgrade counts the whole history).
            assert change_counts.roll_up(conn, now=time.time() + change_counts.SETTLE_SECONDS, batch=2) == 2
            assert change_counts.last_counted_id(conn) == mark + 2
            change_counts.roll_up(conn, now=time.time() + change_counts.SETTLE_SECONDS)
            assert change_counts.last_counted_id(conn) == conn.execute(sa.select(sa.func.max(transitions.c.id))
                                                                       ).scalar_one()
            before = change_counts.changes_in_period(conn, Scope.everything(), since=midnight - 7 * DAY, until=midnight)
            assert before == _live_changes(conn, Scope.everything(), midnight - 7 * DAY, midnight)
        pruned = collector.settings.model_copy(update={"history_retention": 3 * DAY})
        retention.enforce(collector.db, pruned, now=now)
        with collector.db.read() as conn:
            left = _live_changes(conn, Scope.everything(), midnight - 7 * DAY, midnight)
            assert sum(left.values()) < sum(before.values())
            assert change_counts.changes_in_period(conn, Scope.everything(), since=midnight - 7 * DAY,
                                                   until=midnight) == before


def _rows_up_to(conn: sa.Connection, mark: int | None) -> int:
    assert mark is not None
    return int(conn.execute(sa.select(sa.func.count()).where(transitions.c.id <= mark)).scalar_one())


def _report_client(collector: Collector) -> TestClient:
    with collector.db.write() as conn:
        accounts.create_user(conn, "reader", PASSWORD, "admin")
    return _sign_in(collector, "reader")
