"""Periodic jobs: the daily trend snapshot, pruning of raw reports past their retention and of expired
dashboard sessions."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.schema import DEVICE_ACTIVE, check_state, daily_stats, devices, reports, web_sessions
from server.store.scope import Scope


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def snapshot_daily_stats(conn: Connection, *, now: Optional[float] = None, stale_after: float) -> str:
    """(Re)compute today's row per org unit from current state; idempotent, so any process may run it."""
    current = time.time() if now is None else now
    day = utc_day(current)
    cutoff = current - stale_after
    per_unit: dict[int, dict[str, Any]] = {}

    def unit(org_unit_id: int) -> dict[str, Any]:
        return per_unit.setdefault(org_unit_id, {"devices": 0, "compliant": 0, "not_compliant": 0, "error": 0,
                                                 "unknown": 0, "stale": 0, "rules": {}})

    for org_unit_id, compliance, count in conn.execute(
            sa.select(devices.c.org_unit_id, devices.c.compliance, sa.func.count())
            .where(devices.c.state == DEVICE_ACTIVE).group_by(devices.c.org_unit_id, devices.c.compliance)):
        entry = unit(int(org_unit_id))
        entry["devices"] += int(count)
        entry[str(compliance)] = entry.get(str(compliance), 0) + int(count)
    for org_unit_id, count in conn.execute(
            sa.select(devices.c.org_unit_id, sa.func.count())
            .where(devices.c.state == DEVICE_ACTIVE,
                   sa.func.coalesce(devices.c.last_seen, devices.c.enrolled_at) < cutoff)
            .group_by(devices.c.org_unit_id)):
        unit(int(org_unit_id))["stale"] = int(count)
    for org_unit_id, rule_id, status, count in conn.execute(
            sa.select(check_state.c.org_unit_id, check_state.c.rule_id, check_state.c.status, sa.func.count())
            .where(check_state.c.active.is_(True))
            .group_by(check_state.c.org_unit_id, check_state.c.rule_id, check_state.c.status)):
        unit(int(org_unit_id))["rules"].setdefault(str(rule_id), {})[str(status)] = int(count)
    conn.execute(daily_stats.delete().where(daily_stats.c.day == day))
    for org_unit_id, entry in per_unit.items():
        conn.execute(daily_stats.insert().values(
            day=day, org_unit_id=org_unit_id, devices=entry["devices"], compliant=entry["compliant"],
            not_compliant=entry["not_compliant"], error=entry["error"], unknown=entry["unknown"],
            stale=entry["stale"], rules=json.dumps(entry["rules"], sort_keys=True), computed_at=current))
    return day


def daily_trend(conn: Connection, scope: Scope, *, since_day: str) -> list[dict[str, Any]]:
    """Per day: totals over the org units in scope (the dashboard's trend chart)."""
    rows = conn.execute(sa.select(daily_stats).where(daily_stats.c.day >= since_day,
                                                     scope.clause(daily_stats.c.org_unit_id))
                        .order_by(daily_stats.c.day)).mappings().all()
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = days.setdefault(row["day"], {"day": row["day"], "devices": 0, "compliant": 0, "not_compliant": 0,
                                             "error": 0, "unknown": 0, "stale": 0})
        for name in ("devices", "compliant", "not_compliant", "error", "unknown", "stale"):
            entry[name] += int(row[name])
    return list(days.values())


def prune_reports(conn: Connection, *, retention: float, now: Optional[float] = None,
                  batch: int = 5000) -> int:
    """Delete raw reports received more than ``retention`` seconds ago, at most ``batch`` rows per call."""
    cutoff = (time.time() if now is None else now) - retention
    ids = sa.select(reports.c.id).where(reports.c.received_at < cutoff).order_by(reports.c.received_at).limit(batch)
    return int(conn.execute(reports.delete().where(reports.c.id.in_(ids))).rowcount or 0)


def prune_web_sessions(conn: Connection, *, now: Optional[float] = None, batch: int = 1000) -> int:
    """Delete dashboard sessions past their expiry (revoked ones included), at most ``batch`` per call.

    Every session expires one lifetime after sign-in, so this keeps the table to the sign-ins of the
    last lifetime; a revoked row waits for its expiry like the others (it lets nobody in meanwhile).
    The dashboard runs it at every sign-in, the only place rows are added, so the table stays bounded."""
    cutoff = time.time() if now is None else now
    ids = (sa.select(web_sessions.c.id).where(web_sessions.c.expires_at < cutoff)
           .order_by(web_sessions.c.expires_at).limit(batch))
    return int(conn.execute(web_sessions.delete().where(web_sessions.c.id.in_(ids))).rowcount or 0)
