"""The overview's device counts per org unit: counted live, or read from `fleet_counts` (migration 0013).

Counting is one streaming pass over the (state, org_unit_id, compliance, last_seen, enrolled_at) index
(migration 0003): cheap at 100,000 devices, 2-4.5 s at 1,000,000 on PostgreSQL. The `daily-snapshot`
job therefore stores the counts (`refresh`) every `maintenance_interval`, and the overview of a large
fleet reads them (`maintained`) with the time they were made; a small fleet is always counted live.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.fleet import DeviceFilter
from server.store.schema import DEVICE_ACTIVE, devices, fleet_counts
from server.store.scope import Scope

# Per org unit: active devices by compliance, the same seen within the stale window, never-seen ones
# (and those of them enrolled within the window: new, not stale) and revoked ones.
COUNT_FIELDS = ("devices", "compliant", "not_compliant", "error", "unknown", "fresh_compliant",
                "fresh_not_compliant", "fresh_error", "fresh_unknown", "never_seen", "never_seen_new", "revoked")

UnitCounts = dict[str, int]


def _unit(found: dict[int, UnitCounts], org_unit_id: int) -> UnitCounts:
    return found.setdefault(int(org_unit_id), dict.fromkeys(COUNT_FIELDS, 0))


def count_units(conn: Connection, scope: Scope, *, cutoff: float) -> dict[int, UnitCounts]:
    """Count live: org unit id -> COUNT_FIELDS (``cutoff``: seen at or after it is fresh)."""
    found: dict[int, UnitCounts] = {}
    recent = sa.func.sum(sa.case((devices.c.last_seen >= cutoff, 1), else_=0))
    active = [devices.c.state == DEVICE_ACTIVE, scope.clause(devices.c.org_unit_id)]
    # Grouped in the order of the (state, org_unit_id, compliance, ...) index: one pass, no sort.
    for unit_id, compliance, total, fresh in conn.execute(
            sa.select(devices.c.org_unit_id, devices.c.compliance, sa.func.count(), recent)
            .where(*active).group_by(devices.c.state, devices.c.org_unit_id, devices.c.compliance)):
        entry = _unit(found, unit_id)
        entry["devices"] += int(total)
        if str(compliance) in ("compliant", "not_compliant", "error", "unknown"):
            entry[str(compliance)] += int(total)
            entry[f"fresh_{compliance}"] += int(fresh or 0)
    # Never-seen devices are few and found through the (state, last_seen) index.
    for unit_id, total, new in conn.execute(
            sa.select(devices.c.org_unit_id, sa.func.count(),
                      sa.func.sum(sa.case((devices.c.enrolled_at >= cutoff, 1), else_=0)))
            .where(*active, devices.c.last_seen.is_(None)).group_by(devices.c.org_unit_id)):
        entry = _unit(found, unit_id)
        entry["never_seen"], entry["never_seen_new"] = int(total), int(new or 0)
    for unit_id, total in conn.execute(
            sa.select(devices.c.org_unit_id, sa.func.count())
            .where(devices.c.state == "revoked", scope.clause(devices.c.org_unit_id))
            .group_by(devices.c.org_unit_id)):
        _unit(found, unit_id)["revoked"] = int(total)
    return found


def stale(entry: UnitCounts) -> int:
    """Active devices not seen within the window (never-seen ones enrolled before it included)."""
    fresh = sum(entry[f"fresh_{c}"] for c in ("compliant", "not_compliant", "error", "unknown"))
    return entry["devices"] - fresh - entry["never_seen_new"]


def refresh(conn: Connection, *, now: float, stale_after: float) -> dict[int, UnitCounts]:
    """Count the whole fleet live and store it as the maintained counts (replacing the previous ones)."""
    found = count_units(conn, Scope.everything(), cutoff=now - stale_after)
    conn.execute(fleet_counts.delete())
    if found:
        conn.execute(fleet_counts.insert(), [{"org_unit_id": unit_id, **entry, "stale_after": stale_after,
                                              "computed_at": now} for unit_id, entry in found.items()])
    return found


def stored_max_age(maintenance_interval: float) -> float:
    """How old stored counts may be and still be used: two job intervals (the job may be late)."""
    return 2 * maintenance_interval + 60


def _fleet_size(units: dict[int, UnitCounts]) -> int:
    """Devices in the counts, active and revoked."""
    return sum(e["devices"] + e["revoked"] for e in units.values())


def maintained(conn: Connection, scope: Scope, *, now: float, stale_after: float,
               max_age: float) -> Optional[tuple[dict[int, UnitCounts], float]]:
    """The stored counts in ``scope`` and when they were made, or None when there are none, they are
    older than ``max_age`` (the job stopped) or were made for another stale window."""
    rows = conn.execute(sa.select(fleet_counts).where(scope.clause(fleet_counts.c.org_unit_id))).all()
    if not rows:
        return None
    counted_at = min(float(r.computed_at) for r in rows)
    if counted_at < now - max_age or any(float(r.stale_after) != stale_after for r in rows):
        return None
    return {int(r.org_unit_id): {name: int(r._mapping[name]) for name in COUNT_FIELDS} for r in rows}, counted_at


def stored_or_live(conn: Connection, scope: Scope, *, now: float, stale_after: float, max_age: float,
                   live_limit: int) -> tuple[dict[int, UnitCounts], Optional[float]]:
    """Counts per org unit in ``scope`` and when they were made: the stored ones when at most ``max_age``
    old and the fleet in scope has more than ``live_limit`` devices (active and revoked), else counted
    live now (time None)."""
    stored = maintained(conn, scope, now=now, stale_after=stale_after, max_age=max_age)
    if stored is not None and _fleet_size(stored[0]) > live_limit:
        return stored
    return count_units(conn, scope, cutoff=now - stale_after), None


def list_total(conn: Connection, scope: Scope, flt: DeviceFilter, *, now: float, stale_after: float, max_age: float,
               live_limit: int) -> Optional[tuple[int, float]]:
    """The device list's total from the stored counts, and when they were made, for a list of active
    devices filtered at most by org unit and compliance, when the fleet in scope has more than
    ``live_limit`` devices; None otherwise (the list counts live). Counting 1,000,000 index entries for
    the pager took ~0.1 s idle and 0.3 s under ingest load."""
    if replace(flt, compliance=None, org_unit_id=None) != DeviceFilter():
        return None
    stored = maintained(conn, scope, now=now, stale_after=stale_after, max_age=max_age)
    if stored is None or _fleet_size(stored[0]) <= live_limit:
        return None
    units, counted_at = stored
    picked = [e for unit_id, e in units.items() if flt.org_unit_id is None or unit_id == flt.org_unit_id]
    return sum(e[flt.compliance] if flt.compliance else e["devices"] for e in picked), counted_at
