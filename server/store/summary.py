"""The fleet summary (admin API, printable report): device counts by compliance and freshness and
per-rule status counts in a scope.

A fleet in scope of up to ``overview_live_limit`` devices is counted live, exactly. Above it, counting
live reads every device row and every current check state (~11 M rows at 1,000,000 devices) on each
request, so the summary is read from what the daily-snapshot job keeps, with the time it counted: the
device counts of `fleet_counts` (server.store.counts) and the per-rule counts of the same run's
`daily_rule_stats` rows (server.store.maintenance), both written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store import counts, maintenance
from server.store.schema import COMPLIANCE_STATES, RESULT_STATUSES, check_state
from server.store.scope import Scope


@dataclass
class FleetSummary:
    devices: int = 0  # active devices
    reporting: int = 0  # active devices with at least one report
    by_compliance: dict[str, int] = field(default_factory=dict)
    compliant_percent: Optional[float] = None  # of reporting devices; None when none reported yet
    stale: int = 0  # active devices not seen for stale_after seconds (including never seen)
    never_seen: int = 0
    revoked: int = 0
    stale_after: float = 0.0
    rules: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> status -> count
    counted_at: Optional[float] = None  # when the snapshot job counted; None: counted live just now


def rule_status_counts(conn: Connection, scope: Scope) -> dict[str, dict[str, int]]:
    """Rule -> status -> active devices, counted live over every current check state in scope."""
    rules: dict[str, dict[str, int]] = {}
    for rule_id, status, count in conn.execute(
            sa.select(check_state.c.rule_id, check_state.c.status, sa.func.count())
            .where(check_state.c.active.is_(True), scope.clause(check_state.c.org_unit_id))
            .group_by(check_state.c.rule_id, check_state.c.status)):
        rules.setdefault(str(rule_id), dict.fromkeys(RESULT_STATUSES, 0))[str(status)] = int(count)
    return rules


def summary_of(conn: Connection, scope: Scope, per_unit: dict[int, counts.UnitCounts], counted_at: Optional[float],
               *, stale_after: float) -> FleetSummary:
    """The summary of counts per org unit (counts.stored_or_live); the per-rule counts are counted live
    with live device counts (``counted_at`` None), else read from the snapshot that made them."""
    summary = FleetSummary(stale_after=stale_after, by_compliance=dict.fromkeys(COMPLIANCE_STATES, 0),
                           counted_at=counted_at)
    for entry in per_unit.values():
        for compliance in COMPLIANCE_STATES:
            summary.by_compliance[compliance] += entry[compliance]
        summary.stale += counts.stale(entry)
        summary.never_seen += entry["never_seen"]
        summary.revoked += entry["revoked"]
    summary.devices = sum(summary.by_compliance.values())
    summary.reporting = summary.devices - summary.by_compliance["unknown"]
    if summary.reporting:
        summary.compliant_percent = round(100.0 * summary.by_compliance["compliant"] / summary.reporting, 2)
    summary.rules = rule_status_counts(conn, scope) if counted_at is None else \
        maintenance.snapshot_rule_counts(conn, scope, day=maintenance.utc_day(counted_at))[0]
    return summary


def fleet_summary(conn: Connection, scope: Scope, *, now: float, stale_after: float, max_age: float,
                  live_limit: int) -> FleetSummary:
    """The summary in ``scope``: counted live when the fleet in scope has up to ``live_limit`` devices
    (active and revoked) or the stored counts are older than ``max_age`` or made for another stale
    window, else the stored counts with their time (counts.stored_or_live)."""
    per_unit, counted_at = counts.stored_or_live(conn, scope, now=now, stale_after=stale_after, max_age=max_age,
                                                 live_limit=live_limit)
    return summary_of(conn, scope, per_unit, counted_at, stale_after=stale_after)
