"""Periodic jobs: the daily trend snapshot and rollups, pruning of raw reports past their retention, of
old rollups and of expired dashboard sessions (history retention: server/store/retention.py), and SQLite's
planner statistics."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store import counts as fleet_counts
from server.store.db import Database
from server.store.schema import (
    RESULT_STATUSES,
    check_state,
    daily_rule_stats,
    daily_stats,
    daily_status_changes,
    hourly_status_changes,
    transitions,
    web_sessions,
)
from server.store.scope import Scope

# check_state status -> daily_rule_stats column.
STATUS_COLUMNS = {"pass": "passing", "warn": "warning", "fail": "failing", "error": "errors",
                  "not_applicable": "not_applicable"}


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def _day_bounds(day: str) -> tuple[float, float]:
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    return start, start + 86400


def _changes_of_day(conn: Connection, day: str) -> dict[tuple[int, str], dict[str, Any]]:
    """New failures, fixes and the median time to fix per (org unit, rule) during one UTC day."""
    start, end = _day_bounds(day)
    changes: dict[tuple[int, str], dict[str, Any]] = {}

    def entry(org_unit_id: int, rule_id: str) -> dict[str, Any]:
        return changes.setdefault((org_unit_id, rule_id), {"new_failures": 0, "fixed": 0, "fix_seconds": []})

    in_day = (transitions.c.at >= start, transitions.c.at < end)
    for org_unit_id, rule_id, count in conn.execute(
            sa.select(transitions.c.org_unit_id, transitions.c.rule_id, sa.func.count())
            .where(*in_day, transitions.c.new_status == "fail",
                   sa.or_(transitions.c.old_status.is_(None), transitions.c.old_status != "fail"))
            .group_by(transitions.c.org_unit_id, transitions.c.rule_id)):
        entry(int(org_unit_id), str(rule_id))["new_failures"] = int(count)
    # A fix's failing time runs from the newest change to fail of the same device and rule before it.
    earlier = transitions.alias("earlier")
    failed_at = (sa.select(sa.func.max(earlier.c.at))
                 .where(earlier.c.device_id == transitions.c.device_id, earlier.c.rule_id == transitions.c.rule_id,
                        earlier.c.new_status == "fail", earlier.c.at <= transitions.c.at)
                 .scalar_subquery())
    for org_unit_id, rule_id, fixed_at, since in conn.execute(
            sa.select(transitions.c.org_unit_id, transitions.c.rule_id, transitions.c.at, failed_at)
            .where(*in_day, transitions.c.old_status == "fail", transitions.c.new_status != "fail")):
        item = entry(int(org_unit_id), str(rule_id))
        item["fixed"] += 1
        if since is not None:
            item["fix_seconds"].append(max(0.0, float(fixed_at) - float(since)))
    return changes


def _write_rule_rollups(conn: Connection, day: str, counts: dict[tuple[int, str], dict[str, int]],
                        *, now: float) -> None:
    changes = _changes_of_day(conn, day)
    rows = []
    for key in sorted(set(counts) | set(changes)):
        status = counts.get(key, {})
        change = changes.get(key, {"new_failures": 0, "fixed": 0, "fix_seconds": []})
        rows.append({"day": day, "org_unit_id": key[0], "rule_id": key[1],
                     **{column: int(status.get(name, 0)) for name, column in STATUS_COLUMNS.items()},
                     "new_failures": change["new_failures"], "fixed": change["fixed"],
                     "fix_seconds_median": statistics.median(change["fix_seconds"]) if change["fix_seconds"]
                     else None, "computed_at": now})
    conn.execute(daily_rule_stats.delete().where(daily_rule_stats.c.day == day))
    if rows:
        conn.execute(daily_rule_stats.insert(), rows)


def _finish_previous_day(conn: Connection, day: str, *, now: float) -> None:
    """Complete the changes of the day before (those after its last snapshot), keeping its counts."""
    start, end = _day_bounds(day)
    last = conn.execute(sa.select(sa.func.min(daily_rule_stats.c.computed_at))
                        .where(daily_rule_stats.c.day == day)).scalar()
    if last is None or float(last) >= end:
        return
    counts = {(int(r.org_unit_id), str(r.rule_id)): {name: int(r._mapping[column])
                                                     for name, column in STATUS_COLUMNS.items()}
              for r in conn.execute(sa.select(daily_rule_stats).where(daily_rule_stats.c.day == day))}
    _write_rule_rollups(conn, day, counts, now=now)


def snapshot_daily_stats(conn: Connection, *, now: Optional[float] = None, stale_after: float) -> str:
    """(Re)compute today's rows per org unit (daily_stats) and per org unit x rule (daily_rule_stats)
    from current state and today's history; idempotent, so any process may run it."""
    current = time.time() if now is None else now
    day = utc_day(current)
    # One count serves the overview (fleet_counts) and today's trend row per org unit.
    per_unit = {unit_id: entry for unit_id, entry
                in fleet_counts.refresh(conn, now=current, stale_after=stale_after).items() if entry["devices"]}
    rule_counts: dict[tuple[int, str], dict[str, int]] = {}
    for org_unit_id, rule_id, status, count in conn.execute(
            sa.select(check_state.c.org_unit_id, check_state.c.rule_id, check_state.c.status, sa.func.count())
            .where(check_state.c.active.is_(True))
            .group_by(check_state.c.org_unit_id, check_state.c.rule_id, check_state.c.status)):
        rule_counts.setdefault((int(org_unit_id), str(rule_id)), {})[str(status)] = int(count)
    conn.execute(daily_stats.delete().where(daily_stats.c.day == day))
    for org_unit_id, entry in per_unit.items():
        conn.execute(daily_stats.insert().values(
            day=day, org_unit_id=org_unit_id, devices=entry["devices"], compliant=entry["compliant"],
            not_compliant=entry["not_compliant"], error=entry["error"], unknown=entry["unknown"],
            stale=fleet_counts.stale(entry), computed_at=current))
    _finish_previous_day(conn, utc_day(current - 86400), now=current)
    _write_rule_rollups(conn, day, rule_counts, now=current)
    return day


def daily_trend(conn: Connection, scope: Scope, *, since_day: str,
                until_day: Optional[str] = None) -> list[dict[str, Any]]:
    """Per day: totals over the org units in scope (the dashboard's trend chart), ``until_day`` included."""
    where = [daily_stats.c.day >= since_day, scope.clause(daily_stats.c.org_unit_id)]
    if until_day is not None:
        where.append(daily_stats.c.day <= until_day)
    names = ("devices", "compliant", "not_compliant", "error", "unknown", "stale")
    rows = conn.execute(sa.select(daily_stats.c.day, *(sa.func.sum(daily_stats.c[n]).label(n) for n in names))
                        .where(*where).group_by(daily_stats.c.day).order_by(daily_stats.c.day)).mappings()
    return [{"day": row["day"], **{n: int(row[n] or 0) for n in names}} for row in rows]


def snapshot_rule_counts(conn: Connection, scope: Scope, *,
                         day: str) -> tuple[dict[str, dict[str, int]], Optional[float]]:
    """Rule -> check_state status -> active devices, as the day's latest snapshot counted them in the
    org units in scope, and when it did (None: no rollups that day). Rules whose rows hold only the
    day's changes (no device has them now) are left out, as a live count would leave them out."""
    rows = conn.execute(sa.select(daily_rule_stats).where(daily_rule_stats.c.day == day,
                                                         scope.clause(daily_rule_stats.c.org_unit_id))).all()
    rules: dict[str, dict[str, int]] = {}
    for row in rows:
        found = {status: int(row._mapping[column]) for status, column in STATUS_COLUMNS.items()}
        if any(found.values()):
            target = rules.setdefault(str(row.rule_id), dict.fromkeys(RESULT_STATUSES, 0))
            for status, count in found.items():
                target[status] += count
    return rules, min((float(r.computed_at) for r in rows), default=None)


_ROLLUP_SUMS = (*STATUS_COLUMNS.values(), "new_failures", "fixed")


def _fix_time_column() -> Any:
    """The time to fix over the rows summed: the median itself for one org unit and day, else the mean
    of the medians weighted by their fixes (medians of different units cannot be merged exactly without
    every fix, which the history keeps only for its retention)."""
    weighted = sa.func.sum(daily_rule_stats.c.fix_seconds_median * daily_rule_stats.c.fixed)
    fixes_timed = sa.func.sum(sa.case((daily_rule_stats.c.fix_seconds_median.is_not(None), daily_rule_stats.c.fixed),
                                      else_=0))
    return (weighted / sa.func.nullif(fixes_timed, 0)).label("fix_seconds_median")


def _rollup_columns() -> list[Any]:
    """Sums of the rollup counts and the time to fix (_fix_time_column)."""
    return [*(sa.func.sum(daily_rule_stats.c[n]).label(n) for n in _ROLLUP_SUMS), _fix_time_column()]


def _rollup_entry(row: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {n: int(row[n] or 0) for n in _ROLLUP_SUMS}
    judged = entry["passing"] + entry["warning"] + entry["failing"] + entry["errors"]
    entry["compliant_share"] = entry["passing"] / judged if judged else None
    median = row["fix_seconds_median"]
    entry["fix_seconds_median"] = None if median is None else float(median)
    return entry


def _rollup_days(since_day: str, until_day: str) -> Any:
    return daily_rule_stats.c.day.between(since_day, until_day)


def rule_trend(conn: Connection, scope: Scope, *, since_day: str, until_day: str,
               rule_id: Optional[str] = None) -> list[dict[str, Any]]:
    """Per day and rule: the rollups summed over the org units in scope (see _rollup_columns).

    ``compliant_share`` is passing / the devices judged on the rule (not_applicable left out), None
    when none was."""
    where = [_rollup_days(since_day, until_day), scope.clause(daily_rule_stats.c.org_unit_id)]
    if rule_id is not None:
        where.append(daily_rule_stats.c.rule_id == rule_id)
    query = (sa.select(daily_rule_stats.c.day, daily_rule_stats.c.rule_id, *_rollup_columns()).where(*where)
             .group_by(daily_rule_stats.c.day, daily_rule_stats.c.rule_id)
             .order_by(daily_rule_stats.c.day, daily_rule_stats.c.rule_id))
    return [{"day": row["day"], "rule_id": row["rule_id"], **_rollup_entry(row)}
            for row in conn.execute(query).mappings()]


def rule_period(conn: Connection, scope: Scope, *, since_day: str, until_day: str) -> list[dict[str, Any]]:
    """Per rule over a period: changes summed over its days, counts and share of its last day with rollups.

    One pass over the period's rows (the counts of the last day are summed conditionally alongside)."""
    last_day = conn.execute(sa.select(sa.func.max(daily_rule_stats.c.day))
                            .where(_rollup_days(since_day, until_day), daily_rule_stats.c.day >= until_day,
                                   scope.clause(daily_rule_stats.c.org_unit_id))).scalar()
    if last_day is None:  # nothing on the last day itself (no snapshot yet): the newest day before it
        last_day = conn.execute(sa.select(sa.func.max(daily_rule_stats.c.day))
                                .where(_rollup_days(since_day, until_day),
                                       scope.clause(daily_rule_stats.c.org_unit_id))).scalar()
    if last_day is None:
        return []
    on_last = daily_rule_stats.c.day == last_day
    query = (sa.select(daily_rule_stats.c.rule_id,
                       *(sa.func.sum(sa.case((on_last, daily_rule_stats.c[column]), else_=0)).label(column)
                         for column in STATUS_COLUMNS.values()),
                       sa.func.sum(daily_rule_stats.c.new_failures).label("new_failures"),
                       sa.func.sum(daily_rule_stats.c.fixed).label("fixed"), _fix_time_column(),
                       sa.func.max(sa.case((on_last, 1), else_=0)).label("on_last_day"))
             .where(_rollup_days(since_day, until_day), scope.clause(daily_rule_stats.c.org_unit_id))
             .group_by(daily_rule_stats.c.rule_id).order_by(daily_rule_stats.c.rule_id))
    return [{"day": last_day, "rule_id": row["rule_id"], **_rollup_entry(row)}
            for row in conn.execute(query).mappings() if row["on_last_day"]]


def prune_rollups(conn: Connection, *, retention: float, now: Optional[float] = None) -> int:
    """Delete rollups of days older than ``retention``; a few thousand rows a day."""
    oldest_kept = utc_day((time.time() if now is None else now) - retention)
    by_day = [(daily_rule_stats, daily_rule_stats.c.day), (daily_stats, daily_stats.c.day),
              (daily_status_changes, daily_status_changes.c.day),
              (hourly_status_changes, hourly_status_changes.c.hour)]  # "YYYY-MM-DD HH" sorts after its day
    return sum(int(conn.execute(table.delete().where(column < oldest_kept)).rowcount or 0) for table, column in by_day)


def prune_web_sessions(conn: Connection, *, now: Optional[float] = None, batch: int = 1000) -> int:
    """Delete dashboard sessions past their expiry (revoked ones included), at most ``batch`` per call.

    Every session expires one lifetime after sign-in, so this keeps the table to the sign-ins of the
    last lifetime; a revoked row waits for its expiry like the others (it lets nobody in meanwhile).
    The dashboard runs it at every sign-in, the only place rows are added, so the table stays bounded."""
    cutoff = time.time() if now is None else now
    ids = (sa.select(web_sessions.c.id).where(web_sessions.c.expires_at < cutoff)
           .order_by(web_sessions.c.expires_at).limit(batch))
    return int(conn.execute(web_sessions.delete().where(web_sessions.c.id.in_(ids))).rowcount or 0)


# Rows ANALYZE reads per index (SQLite's PRAGMA analysis_limit). SQLite's own advice for long-lived databases
# (https://sqlite.org/lang_analyze.html) is "PRAGMA analysis_limit=400; PRAGMA optimize;", values between 100 and
# 1000 working well. Its cost then no longer grows with the fleet: 4-17 ms for the whole database at 100,000
# devices (1.7 M check_state rows), against 1.07 s unbounded, all of it holding SQLite's one write lock.
ANALYSIS_LIMIT = 1000


@dataclass(frozen=True)
class PlannerStats:
    tables: int  # tables that have statistics (sqlite_stat1) after the run
    seconds: float  # the run: waiting for the write lock, then holding it


def refresh_planner_stats(db: Database) -> Optional[PlannerStats]:
    """Gather SQLite's planner statistics (sqlite_stat1) for every table, bounded by ANALYSIS_LIMIT; None on
    PostgreSQL, whose autovacuum runs ANALYZE itself (docs/collector.md).

    A bounded ANALYZE of the whole database rather than ``PRAGMA optimize``: the Python here links SQLite
    3.40, whose ``PRAGMA optimize`` considers only the tables that queries on the same connection used
    (measured: a no-op on a fresh connection to a database without any statistics) and re-analyzes a table
    only after it grew some 25-fold (measured: not at 20, at 30); checking every table (mask 0x10000) and a
    built-in analysis limit came with 3.46 (https://sqlite.org/pragma.html#pragma_optimize). A pooled collector has no "connection close" to
    hang it on, and statistics taken while the fleet was small mislead the planner once it is large, so
    every run re-reads every table: cheap at this limit, and stale by one maintenance interval at most.
    ANALYZE changes the schema: every connection reloads it (statistics included) at its next statement."""
    if db.is_postgres:
        return None
    started = time.perf_counter()
    with db.write() as conn:
        # Per connection; set on each run since the pool lends any of its connections.
        conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        conn.exec_driver_sql("ANALYZE")
        tables = conn.exec_driver_sql("SELECT count(DISTINCT tbl) FROM sqlite_stat1").scalar_one()
    return PlannerStats(int(tables), time.perf_counter() - started)
