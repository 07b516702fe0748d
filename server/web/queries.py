"""Read queries the dashboard needs beyond server.store.fleet (which it reuses for everything else).

Each takes the caller's Scope and applies it in SQL, like the store's own queries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent.policy import Policy, evaluate, summarize
from common.ttlcache import TTLCache
from server.store import counts, fleet, maintenance, sessions, summary
from server.store import policies as policy_store
from server.store.accounts import Principal
from server.store.schema import (
    COMPLIANCE_STATES,
    DEVICE_ACTIVE,
    check_state,
    devices,
    org_units,
    reports,
    transitions,
    user_org_units,
)
from server.store.scope import Scope
from server.store.sessions import LiveSession

# Devices a dry-run re-evaluates at most (the most recently seen first); the page says when it sampled.
DRY_RUN_LIMIT = 5000


def load_session_user(conn: Connection, secret: str, user_id: int) -> Optional[tuple[LiveSession, Principal]]:
    """The live session of a cookie and its user's principal, re-read on every request; None when the
    session is unknown, revoked or expired, or its user is gone, disabled or has a new password."""
    live = sessions.find_session(conn, secret)
    if live is None or live.user_id != user_id:
        return None
    units = conn.execute(sa.select(user_org_units.c.org_unit_id)
                         .where(user_org_units.c.user_id == user_id)).scalars().all()
    scope = Scope(frozenset(int(u) for u in units)) if units else Scope.everything()
    return live, Principal(actor=f"user:{live.username}", role=live.role, scope=scope, user_id=user_id)


def narrow(scope: Scope, org_unit_id: Optional[int]) -> Scope:
    """The scope limited to one org unit (empty when the unit is outside the scope)."""
    if org_unit_id is None:
        return scope
    return Scope(frozenset({org_unit_id}) if scope.allows(org_unit_id) else frozenset())


@dataclass
class Overview:
    """The overview's counts. Compliance counts only devices that reported within the stale window;
    stale ones are counted apart, never silently in or out of the percentage."""

    devices: int = 0
    by_compliance: dict[str, int] = field(default_factory=dict)  # every active device
    fresh_by_compliance: dict[str, int] = field(default_factory=dict)  # reported within the window
    fresh_reporting: int = 0
    compliant_percent: Optional[float] = None
    stale: int = 0  # not seen within the window (never-seen devices enrolled before it included)
    never_seen: int = 0
    revoked: int = 0
    units: list[dict[str, Any]] = field(default_factory=list)
    counted_at: Optional[float] = None  # when the snapshot job counted; None: counted live just now


def fleet_overview(conn: Connection, scope: Scope, *, now: float, stale_after: float, max_age: float,
                   live_limit: int) -> Overview:
    """The overview's counts: those the snapshot job keeps when they are at most ``max_age`` old and
    the fleet in scope has more than ``live_limit`` devices (active and revoked), else counted live."""
    return overview_of(conn, *counts.stored_or_live(conn, scope, now=now, stale_after=stale_after, max_age=max_age,
                                                    live_limit=live_limit))


def overview_of(conn: Connection, per_unit: dict[int, counts.UnitCounts], counted_at: Optional[float]) -> Overview:
    """The overview of counts per org unit (counts.count_units or counts.stored_or_live)."""
    out = Overview(by_compliance={c: 0 for c in COMPLIANCE_STATES},
                   fresh_by_compliance={c: 0 for c in COMPLIANCE_STATES}, counted_at=counted_at)
    units: dict[int, dict[str, Any]] = {}
    for unit_id, entry in per_unit.items():
        out.never_seen += entry["never_seen"]
        out.revoked += entry["revoked"]
        if not entry["devices"]:
            continue  # revoked devices only
        item: dict[str, Any] = {"org_unit_id": unit_id, "devices": entry["devices"], "fresh": 0,
                                "stale": counts.stale(entry)}
        for compliance in ("compliant", "not_compliant", "error"):
            # A never-evaluated (unknown) device is in no one's compliance percentage.
            item[compliance] = entry[f"fresh_{compliance}"]
            item["fresh"] += entry[f"fresh_{compliance}"]
            out.fresh_by_compliance[compliance] += entry[f"fresh_{compliance}"]
        for compliance in COMPLIANCE_STATES:
            out.by_compliance[compliance] += entry[compliance]
        out.stale += item["stale"]
        units[unit_id] = item
    out.devices = sum(out.by_compliance.values())
    out.fresh_reporting = sum(v for k, v in out.fresh_by_compliance.items() if k != "unknown")
    if out.fresh_reporting:
        out.compliant_percent = round(100.0 * out.fresh_by_compliance.get("compliant", 0) / out.fresh_reporting, 1)
    names = dict(conn.execute(sa.select(org_units.c.id, org_units.c.name)
                              .where(org_units.c.id.in_(sorted(units)))).all()) if units else {}
    for unit_id, item in units.items():
        item["name"] = str(names.get(unit_id, unit_id))
        item["percent"] = round(100.0 * item["compliant"] / item["fresh"], 1) if item["fresh"] else None
    out.units = sorted(units.values(), key=lambda e: e["name"])
    return out


def stale_devices(conn: Connection, scope: Scope, *, cutoff: float, limit: int = 10) -> list[dict[str, Any]]:
    """The devices silent the longest (never-seen ones enrolled before the cutoff first), read in
    (state, last_seen) index order with no count: the overview shows the total from overview()."""
    base = (sa.select(devices.c.id, devices.c.hostname, devices.c.last_seen, devices.c.enrolled_at,
                      org_units.c.name.label("org_unit"))
            .select_from(devices.outerjoin(org_units, org_units.c.id == devices.c.org_unit_id))
            .where(devices.c.state == DEVICE_ACTIVE, scope.clause(devices.c.org_unit_id)))
    never = conn.execute(base.where(devices.c.last_seen.is_(None), devices.c.enrolled_at < cutoff)
                         .order_by(devices.c.enrolled_at).limit(limit)).mappings().all()
    silent = conn.execute(base.where(devices.c.last_seen < cutoff).order_by(devices.c.last_seen, devices.c.id)
                          .limit(limit)).mappings().all()
    return [dict(r) for r in [*never, *silent][:limit]]


@dataclass
class RuleCounts:
    rules: dict[str, dict[str, int]]
    computed_at: Optional[float]  # None: counted live just now


def rule_counts(conn: Connection, scope: Scope, *, now: float, max_age: float) -> RuleCounts:
    """Per-rule status counts from the newest trend snapshot when it is at most ``max_age`` old.

    Counting live reads every current check state (11 rules x 100k devices); the maintenance job
    already counts them per org unit every few minutes, so the overview shows that count with its
    time. Without a recent snapshot (a new collector) the count is made live.
    """
    rules, computed_at = maintenance.snapshot_rule_counts(conn, scope, day=maintenance.utc_day(now))
    if computed_at is not None and computed_at >= now - max_age:
        return RuleCounts(rules, computed_at)
    return RuleCounts(summary.rule_status_counts(conn, scope), None)


def recent_changes(conn: Connection, scope: Scope, *, limit: int = 12,
                   to_status: Optional[Sequence[str]] = ("fail", "warn", "error")) -> list[dict[str, Any]]:
    """Newest status changes (to a failing status by default), with the device's host name.

    No total count: at 30 days of history the transitions table is large and the page needs the
    newest few only, which the (at) index answers by reading just those rows.
    """
    where: list[Any] = [scope.clause(transitions.c.org_unit_id)]
    if to_status:
        where.append(transitions.c.new_status.in_(list(to_status)))
    newest = (sa.select(transitions.c.id, transitions.c.device_id, transitions.c.rule_id, transitions.c.old_status,
                        transitions.c.new_status, transitions.c.at, transitions.c.reason)
              .where(*where).order_by(transitions.c.at.desc()).limit(limit).subquery())
    rows = conn.execute(sa.select(newest, devices.c.hostname, devices.c.state)
                        .select_from(newest.join(devices, devices.c.id == newest.c.device_id))
                        .order_by(newest.c.at.desc(), newest.c.id.desc())).mappings().all()
    return [dict(r) for r in rows]


def rule_ids(conn: Connection, scope: Scope) -> list[str]:
    """Rule ids of the latest version of every policy the caller may see (the failing-rule filter)."""
    visible = None if scope.unrestricted else policy_store.policy_ids_in_scope(conn, scope)
    found: set[str] = set()
    for row in policy_store.list_policies(conn):
        if not row["latest"] or (visible is not None and row["policy_id"] not in visible):
            continue
        stored = policy_store.get_policy(conn, int(row["id"]))
        if stored is not None:
            found.update(rule.id for rule in stored.policy.rules)
    return sorted(found)


# Per process: OS names change slowly, and the list pages' filter menu should not scan for them each time.
_os_cache: TTLCache[tuple[str, Optional[frozenset[int]]], list[str]] = TTLCache(60.0)


def os_names(conn: Connection, scope: Scope) -> list[str]:
    def scan() -> list[str]:
        return sorted(str(n) for n in conn.execute(
            sa.select(devices.c.os_name).where(devices.c.state == DEVICE_ACTIVE,
                                               scope.clause(devices.c.org_unit_id))
            .group_by(devices.c.os_name).limit(200)).scalars())

    return list(_os_cache.get_or_load((str(conn.engine.url), scope.org_unit_ids), scan))


CHECK_EXPORT_COLUMNS = ("device_id", "hostname", "org_unit", "rule_id", "check", "severity", "status", "since",
                        "failing_since", "reason", "agent_status")


def iter_check_states(conn: Connection, scope: Scope, flt: fleet.DeviceFilter, *, now: float, stale_after: float,
                      chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Current check states of every device matching the device-list filter (the same filter code)."""
    # The store's filter builder keeps the two exports and the list in exact agreement.
    where = fleet._device_conditions(scope, flt, now, stale_after, fleet.prefix_ranges(conn))
    query = (sa.select(check_state.c.device_id, devices.c.hostname, org_units.c.name.label("org_unit"),
                       check_state.c.rule_id, check_state.c.check_id.label("check"), check_state.c.severity,
                       check_state.c.status, check_state.c.since, check_state.c.failing_since,
                       check_state.c.reason, check_state.c.agent_status)
             .select_from(check_state.join(devices, devices.c.id == check_state.c.device_id)
                          .join(org_units, org_units.c.id == devices.c.org_unit_id))
             .where(*where).order_by(devices.c.hostname_lc, devices.c.id, check_state.c.rule_id))
    for row in conn.execution_options(yield_per=chunk).execute(query).mappings():
        yield dict(row)


def non_compliant_devices(conn: Connection, scope: Scope, *, limit: int = 200) -> list[dict[str, Any]]:
    """Failing devices with the rules they fail and since when (the printable report)."""
    page = fleet.list_devices(conn, scope, fleet.DeviceFilter(compliance="not_compliant"), now=time.time(),
                              stale_after=1e12, sort="-fail_count", per_page=min(limit, fleet.MAX_PER_PAGE))
    ids = [d["id"] for d in page.items]
    failing: dict[str, list[dict[str, Any]]] = {}
    if ids:
        for row in conn.execute(sa.select(check_state.c.device_id, check_state.c.rule_id,
                                          check_state.c.failing_since, check_state.c.since)
                                .where(check_state.c.device_id.in_(ids), check_state.c.status == "fail")
                                .order_by(check_state.c.rule_id)).mappings():
            failing.setdefault(row["device_id"], []).append(dict(row))
    return [{**d, "failing": failing.get(d["id"], [])} for d in page.items]


@dataclass
class DryRun:
    """What a policy version would conclude on the latest stored facts of devices in scope."""

    evaluated: int = 0
    devices_in_scope: int = 0
    without_facts: int = 0
    by_compliance: dict[str, int] = field(default_factory=dict)
    current_by_compliance: dict[str, int] = field(default_factory=dict)
    newly_failing: int = 0
    newly_passing: int = 0
    rules: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: int = 0

    @property
    def sampled(self) -> bool:
        return self.evaluated + self.without_facts + self.unreadable < self.devices_in_scope


def dry_run(conn: Connection, scope: Scope, policy: Policy, *, now: float,
            limit: int = DRY_RUN_LIMIT) -> DryRun:
    """Re-evaluate the latest kept report of each active device (most recently seen first, up to
    ``limit``) with ``policy``, keeping each rule's failing-since so grace periods count as at ingest."""
    result = DryRun()
    active = [devices.c.state == DEVICE_ACTIVE, scope.clause(devices.c.org_unit_id)]
    result.devices_in_scope = int(conn.execute(sa.select(sa.func.count()).select_from(devices)
                                               .where(*active)).scalar_one())
    chosen = conn.execute(sa.select(devices.c.id, devices.c.platform, devices.c.compliance).where(*active)
                          .order_by(devices.c.last_seen.desc().nulls_last()).limit(limit)).all()
    device_info = {str(r.id): (str(r.platform), str(r.compliance)) for r in chosen}
    ids = list(device_info)
    for status in ("pass", "warn", "fail", "not_applicable", "error"):
        for rule in policy.rules:
            result.rules.setdefault(rule.id, {})[status] = 0
    for start in range(0, len(ids), 500):
        batch = ids[start:start + 500]
        latest = (sa.select(reports.c.device_id, sa.func.max(reports.c.seq).label("seq"))
                  .where(reports.c.device_id.in_(batch)).group_by(reports.c.device_id).subquery())
        payloads = {str(r.device_id): r.payload for r in conn.execute(
            sa.select(reports.c.device_id, reports.c.payload).select_from(
                reports.join(latest, sa.and_(reports.c.device_id == latest.c.device_id,
                                             reports.c.seq == latest.c.seq))))}
        since: dict[str, dict[str, float]] = {}
        for row in conn.execute(sa.select(check_state.c.device_id, check_state.c.rule_id, check_state.c.failing_since)
                                .where(check_state.c.device_id.in_(batch), check_state.c.failing_since.is_not(None))):
            since.setdefault(str(row.device_id), {})[str(row.rule_id)] = float(row.failing_since)
        for device_id in batch:
            platform, current = device_info[device_id]
            text = payloads.get(device_id)
            if text is None:
                result.without_facts += 1
                continue
            try:
                facts = json.loads(text)["facts"]
            except (ValueError, KeyError, TypeError):
                result.unreadable += 1
                continue
            results = evaluate(policy, facts, platform, now, since.get(device_id, {}))
            verdict = summarize(results)
            result.evaluated += 1
            result.by_compliance[verdict] = result.by_compliance.get(verdict, 0) + 1
            result.current_by_compliance[current] = result.current_by_compliance.get(current, 0) + 1
            if verdict == "not_compliant" and current != "not_compliant":
                result.newly_failing += 1
            elif verdict != "not_compliant" and current == "not_compliant":
                result.newly_passing += 1
            for item in results:
                counts = result.rules.setdefault(item.rule_id, {})
                counts[item.status] = counts.get(item.status, 0) + 1
    return result
