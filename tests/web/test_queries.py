"""The dashboard's own queries on SQLite and PostgreSQL: the overview agrees with the store's fleet
summary, the prefix search finds exactly the LIKE matches, and the scope holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from server.store import counts, fleet, summary
from server.store.db import Database
from server.store.schema import COMPLIANCE_STATES, check_state, devices, fleet_counts, org_units
from server.store.scope import Scope
from server.web import queries
from tests.server.conftest import PG_ADMIN_URL, pg_available, postgres_database
from tests.web.live import run_cli

DAY = 86400.0
NOW = time.time()
NAMES = ["lap-001", "lap-002", "LAP-010", "lap_01x", "lap%01", "laptop", "la", "lb-001", "zz-ünïcode", "zz-ü",
         "<script>alert(1)</script>", "x" * 30]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One database per backend for the module, filled once (the tests only read)."""
    tmp_path = tmp_path_factory.mktemp("queries")
    if request.param == "sqlite":
        url = f"sqlite+pysqlite:///{tmp_path / 'data' / 'teleposture.db'}"
        run_cli("--data-dir", str(tmp_path / "data"), "--database-url", url, "init")
        database = Database(url)
        _fill(database, NOW)
        yield database
        database.dispose()
        return
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    with postgres_database() as url:
        run_cli("--data-dir", str(tmp_path / "data"), "--database-url", url, "init")
        database = Database(url)
        _fill(database, NOW)
        yield database
        database.dispose()


def _fill(db: Database, now: float) -> dict[str, int]:
    """Devices over two org units with every kind of freshness: recent, stale, never seen (old and new)."""
    with db.write() as conn:
        units = {name: int(conn.execute(org_units.insert().values(name=name, created_at=now)
                                        .returning(org_units.c.id)).scalar_one()) for name in ("A", "B")}
        rows = []
        for number, hostname in enumerate(NAMES):
            unit = units["A"] if number % 3 else units["B"]
            kind = number % 4  # 0 recent, 1 stale, 2 never seen and enrolled long ago, 3 never seen, new
            last_seen = {0: now - 60, 1: now - 5 * DAY, 2: None, 3: None}[kind]
            compliance = "unknown" if last_seen is None else ("compliant", "not_compliant", "error")[number % 3]
            rows.append({"id": f"00000000-0000-4000-8000-{number:012d}", "org_unit_id": unit, "state": "active",
                         "public_key": "k", "key_id": "k", "machine_id": f"m{number}", "hostname": hostname,
                         "hostname_lc": hostname.lower(), "serial": f"S{number}", "serial_lc": f"s{number}",
                         "username": f"user{number}", "username_lc": f"user{number}", "platform": "linux",
                         "os_name": "Debian GNU/Linux", "os_version": "12", "enrolled_at":
                         now - (DAY if kind == 3 else 30 * DAY), "last_seen": last_seen, "compliance": compliance})
        rows.append({**rows[0], "id": "00000000-0000-4000-8000-999999999999", "machine_id": "revoked",
                     "state": "revoked"})
        conn.execute(devices.insert(), rows)
        # One rule per reporting device: failing on every other one (the revoked device's state is inactive).
        conn.execute(check_state.insert(), [
            {"device_id": row["id"], "rule_id": "disk", "check_id": "disk_encryption", "severity": "critical",
             "status": "fail" if number % 2 else "pass", "since": now, "reason": "r", "message": "{}",
             "evidence": "[]", "updated_at": now, "org_unit_id": row["org_unit_id"],
             "active": row["state"] == "active"}
            for number, row in enumerate(rows) if row["last_seen"] is not None])
    return units


def _live_overview(conn: sa.Connection, scope: Scope, *, cutoff: float) -> queries.Overview:
    return queries.overview_of(conn, counts.count_units(conn, scope, cutoff=cutoff), None)


def test_overview_agrees_with_the_store_summary(db: Database) -> None:
    now = NOW
    with db.read() as conn:
        units = dict(conn.execute(sa.select(org_units.c.name, org_units.c.id)).all())
    stale_after = 2 * DAY
    with db.read() as conn:
        for scope in (Scope.everything(), Scope(frozenset({units["A"]})), Scope(frozenset({units["B"]})),
                      Scope(frozenset())):
            ours = _live_overview(conn, scope, cutoff=now - stale_after)

            def listed(**conditions: Any) -> list[dict[str, Any]]:
                return fleet.list_devices(conn, scope, fleet.DeviceFilter(**conditions), now=now,
                                          stale_after=stale_after, per_page=500).items

            active = listed()
            assert (ours.devices, ours.stale, ours.never_seen, ours.revoked) == \
                (len(active), len(listed(stale=True)), sum(d["last_seen"] is None for d in active),
                 len(listed(state="revoked")))
            assert ours.by_compliance == {c: sum(d["compliance"] == c for d in active) for c in COMPLIANCE_STATES}
            # The store's summary is made of the same counts, with the per-rule counts beside them.
            store = summary.fleet_summary(conn, scope, now=now, stale_after=stale_after, max_age=600,
                                          live_limit=10_000)
            assert (store.devices, store.stale, store.never_seen, store.revoked, store.by_compliance) == \
                (ours.devices, ours.stale, ours.never_seen, ours.revoked, ours.by_compliance)
            assert store.rules.get("disk", {}).get("fail", 0) == len(listed(failing_rule="disk"))
            assert sum(u["devices"] for u in ours.units) == ours.devices
            assert sum(u["stale"] for u in ours.units) == ours.stale
            # Compliance counts only devices seen within the window.
            fresh = fleet.list_devices(conn, scope, fleet.DeviceFilter(stale=False), now=now,
                                       stale_after=stale_after, per_page=500).items
            reporting = [d for d in fresh if d["compliance"] != "unknown"]
            assert ours.fresh_reporting == len(reporting)
            assert ours.fresh_by_compliance["compliant"] == sum(d["compliance"] == "compliant" for d in reporting)
        stale = queries.stale_devices(conn, Scope.everything(), cutoff=now - stale_after, limit=50)
        store_stale = fleet.list_devices(conn, Scope.everything(), fleet.DeviceFilter(stale=True), now=now,
                                         stale_after=stale_after, per_page=500)
        assert sorted(d["id"] for d in stale) == sorted(d["id"] for d in store_stale.items)
        assert [d["last_seen"] for d in stale if d["last_seen"] is None] == [None] * sum(
            d["last_seen"] is None for d in store_stale.items)


def test_overview_of_a_large_fleet_reads_the_counts_the_snapshot_job_keeps(db: Database) -> None:
    stale_after = 2 * DAY
    with db.read() as conn:
        units = dict(conn.execute(sa.select(org_units.c.name, org_units.c.id)).all())
    scopes = (Scope.everything(), Scope(frozenset({units["A"]})), Scope(frozenset({units["B"]})), Scope(frozenset()))
    with db.write() as conn:
        counts.refresh(conn, now=NOW - 300, stale_after=stale_after)
    try:
        with db.read() as conn:
            for scope in scopes:
                live = _live_overview(conn, scope, cutoff=NOW - stale_after)
                kept = queries.fleet_overview(conn, scope, now=NOW, stale_after=stale_after, max_age=600,
                                              live_limit=0)
                # Nobody reported in the 5 minutes since the count: the same figures, with their time.
                assert kept.counted_at == (None if scope.org_unit_ids == frozenset() else NOW - 300)
                assert replace(kept, counted_at=None) == live
                # A fleet up to the limit, a count older than max_age or made for another stale window:
                # counted live.
                for when, window, limit in ((NOW, stale_after, 10_000), (NOW + 3600, stale_after, 0),
                                            (NOW, 3 * DAY, 0)):
                    assert queries.fleet_overview(conn, scope, now=when, stale_after=window, max_age=600,
                                                  live_limit=limit).counted_at is None
        # It really is the stored count that is shown (the devices are not counted again).
        with db.write() as conn:
            conn.execute(fleet_counts.update().where(fleet_counts.c.org_unit_id == units["A"])
                         .values(devices=fleet_counts.c.devices + 7, compliant=fleet_counts.c.compliant + 7,
                                 fresh_compliant=fleet_counts.c.fresh_compliant + 7))
        with db.read() as conn:
            live = _live_overview(conn, Scope.everything(), cutoff=NOW - stale_after)
            kept = queries.fleet_overview(conn, Scope.everything(), now=NOW, stale_after=stale_after, max_age=600,
                                          live_limit=0)
        assert (kept.devices, kept.fresh_reporting, kept.by_compliance["compliant"]) == \
            (live.devices + 7, live.fresh_reporting + 7, live.by_compliance["compliant"] + 7)
        assert kept.stale == live.stale
    finally:
        with db.write() as conn:
            conn.execute(fleet_counts.delete())


def test_device_list_total_of_a_large_fleet_comes_from_the_maintained_counts(db: Database) -> None:
    stale_after = 2 * DAY
    with db.read() as conn:
        units = dict(conn.execute(sa.select(org_units.c.name, org_units.c.id)).all())
    with db.write() as conn:
        counts.refresh(conn, now=NOW - 300, stale_after=stale_after)
    try:
        with db.read() as conn:
            for flt in (fleet.DeviceFilter(), fleet.DeviceFilter(compliance="compliant"),
                        fleet.DeviceFilter(org_unit_id=units["A"]),
                        fleet.DeviceFilter(org_unit_id=units["B"], compliance="unknown")):
                live = fleet.list_devices(conn, Scope.everything(), flt, now=NOW, stale_after=stale_after).total
                assert counts.list_total(conn, Scope.everything(), flt, now=NOW, stale_after=stale_after,
                                         max_age=600, live_limit=0) == (live, NOW - 300)
                # Small fleets and old counts: counted live.
                assert counts.list_total(conn, Scope.everything(), flt, now=NOW, stale_after=stale_after,
                                         max_age=600, live_limit=10_000) is None
                assert counts.list_total(conn, Scope.everything(), flt, now=NOW + 3600, stale_after=stale_after,
                                         max_age=600, live_limit=0) is None
            # Filters the counts do not hold are counted live.
            for flt in (fleet.DeviceFilter(stale=True), fleet.DeviceFilter(search="lap"),
                        fleet.DeviceFilter(failing_rule="disk"), fleet.DeviceFilter(state="revoked")):
                assert counts.list_total(conn, Scope.everything(), flt, now=NOW, stale_after=stale_after,
                                         max_age=600, live_limit=0) is None
            page = fleet.list_devices(conn, Scope.everything(), fleet.DeviceFilter(), now=NOW,
                                      stale_after=stale_after, known_total=12345, per_page=5)
            assert page.total == 12345 and len(page.items) == 5
    finally:
        with db.write() as conn:
            conn.execute(fleet_counts.delete())


@pytest.mark.parametrize("prefix", ["lap", "LAP-0", "lap_", "lap%", "la", "zz-ü", "<script", "x" * 30, "s1", "user1",
                                    "nothing", "ü", "\U0010ffff"])
def test_prefix_search_finds_exactly_the_like_matches(db: Database, prefix: str) -> None:
    now = NOW
    expected = sorted(n for i, n in enumerate(NAMES) if n.lower().startswith(prefix.lower())
                      or f"s{i}".startswith(prefix.lower()) or f"user{i}".startswith(prefix.lower()))
    with db.read() as conn:
        found = fleet.list_devices(conn, Scope.everything(), fleet.DeviceFilter(search=prefix), now=now,
                                   stale_after=2 * DAY, per_page=500)
    assert sorted(d["hostname"] for d in found.items) == expected
    assert found.total == len(expected)


@pytest.mark.parametrize("limit", [fleet.FAILING_IDS_LIMIT, 1])  # id list, and the subquery when there are many
def test_failing_rule_filter_alone_and_combined(db: Database, limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "FAILING_IDS_LIMIT", limit)
    with db.read() as conn:
        units = dict(conn.execute(sa.select(org_units.c.name, org_units.c.id)).all())
        rows = conn.execute(sa.select(devices.c.hostname, devices.c.org_unit_id, devices.c.compliance)
                            .join(check_state, check_state.c.device_id == devices.c.id)
                            .where(check_state.c.status == "fail", devices.c.state == "active")).all()
        for flt in (fleet.DeviceFilter(failing_rule="disk"),
                    fleet.DeviceFilter(failing_rule="disk", org_unit_id=units["A"]),
                    fleet.DeviceFilter(failing_rule="disk", compliance="error"),
                    fleet.DeviceFilter(failing_rule="disk", rule_status="pass", org_unit_id=units["B"])):
            for scope in (Scope.everything(), Scope(frozenset({units["B"]}))):
                page = fleet.list_devices(conn, scope, flt, now=NOW, stale_after=2 * DAY, per_page=3)
                everything = fleet.list_devices(conn, scope, flt, now=NOW, stale_after=2 * DAY, per_page=500)
                if flt.rule_status == "fail":
                    expected = sorted(r.hostname.lower() for r in rows if scope.allows(r.org_unit_id)
                                      and flt.org_unit_id in (None, r.org_unit_id)
                                      and flt.compliance in (None, r.compliance))
                    assert sorted(d["hostname"].lower() for d in everything.items) == expected
                assert page.total == everything.total == len(everything.items)
                assert [d["id"] for d in page.items] == [d["id"] for d in everything.items][:3]
