"""The printable report's figures for today (in-process app, SQLite and PostgreSQL): counted live for a
fleet in scope up to overview_live_limit, else the counts the snapshot job keeps, with their age in the
reader's language."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks.collector_sim import SimDevice
from server.store import accounts, maintenance
from server.store.schema import org_units
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
