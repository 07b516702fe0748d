"""Trends over the daily rollups (per rule, per org unit, over a date range) and the dated compliance
report an auditor asks for ("compliance on 1 March"), printable.

Both read only the rollup tables (daily_stats, daily_rule_stats), never the history or the current
state, so a 400-day range costs the same at 1,000 or 100,000 devices.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from server.api.deps import ContextDep
from server.store import accounts, maintenance
from server.store.schema import daily_rule_stats, daily_stats
from server.web import queries, render
from server.web.common import UserDep, WebRoute, bad_request, context, parse_int
from server.web.pages import _day as parse_day

router = APIRouter(route_class=WebRoute, include_in_schema=False)

DAY = 86400.0
DEFAULT_DAYS = 90
MAX_DAYS = 400  # what the rollups keep by default (rollup_retention)
RULE_ID = r"^[A-Za-z0-9._:-]{0,200}$"


def _percent(share: Optional[float]) -> Optional[float]:
    return None if share is None else round(100.0 * share, 1)


def _range(since: Optional[str], until: Optional[str], now: float) -> tuple[str, str]:
    end = parse_day(until, "until", now)
    start = parse_day(since, "since", end - (DEFAULT_DAYS - 1) * DAY)
    if end < start:
        raise bad_request("the period must end after it starts: choose an 'until' date after 'since'")
    if end - start >= MAX_DAYS * DAY:
        raise bad_request(f"the period is limited to {MAX_DAYS} days: choose a shorter period")
    return maintenance.utc_day(start), maintenance.utc_day(end)


def _rule_ids(conn: sa.Connection, scope: Any, day: str) -> list[str]:
    """Rules with rollups on one day (the period's last): the rule selector, by the primary key's prefix."""
    return sorted(str(r) for r in conn.execute(
        sa.select(daily_rule_stats.c.rule_id).where(daily_rule_stats.c.day == day,
                                                    scope.clause(daily_rule_stats.c.org_unit_id))
        .group_by(daily_rule_stats.c.rule_id)).scalars())


def _rule_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule over the period (maintenance.rule_period), the least compliant first."""
    out = [{**row, "percent": _percent(row["compliant_share"])} for row in rows]
    return sorted(out, key=lambda e: (e["percent"] is None, e["percent"] or 0.0, e["rule_id"]))


@router.get("/trends")
def trends(request: Request, ctx: ContextDep, user: UserDep,
           rule: Annotated[Optional[str], Query(max_length=200, pattern=RULE_ID)] = None,
           org_unit: Annotated[Optional[str], Query(max_length=12)] = None,
           since: Annotated[Optional[str], Query(max_length=10)] = None,
           until: Annotated[Optional[str], Query(max_length=10)] = None) -> Response:
    now = time.time()
    unit_id = parse_int(org_unit, "org_unit")
    since_day, until_day = _range(since, until, now)
    scope = queries.narrow(user.principal.scope, unit_id)
    rule_id = rule or None
    with ctx.db.read() as conn:
        devices = maintenance.daily_trend(conn, scope, since_day=since_day, until_day=until_day)
        if rule_id is not None:
            per_rule = maintenance.rule_trend(conn, scope, since_day=since_day, until_day=until_day,
                                              rule_id=rule_id)
            rules = _rule_ids(conn, scope, per_rule[-1]["day"] if per_rule else until_day)
        else:
            per_rule = maintenance.rule_period(conn, scope, since_day=since_day, until_day=until_day)
            rules = sorted(row["rule_id"] for row in per_rule)
        per_unit = _unit_shares(conn, user.principal.scope, rule_id, until_day) if unit_id is None else []
        all_units = accounts.list_org_units(conn, user.principal.scope)
    if rule_id is not None:
        chart = {"labels": [d["day"] for d in per_rule], "percent": [_percent(d["compliant_share"]) for d in per_rule],
                 "second": [d["failing"] for d in per_rule]}
    else:
        chart = {"labels": [d["day"] for d in devices],
                 "percent": [round(100.0 * d["compliant"] / judged, 1) if (judged := d["compliant"]
                             + d["not_compliant"] + d["error"]) else None for d in devices],
                 "second": [d["not_compliant"] for d in devices]}
    names = {u["id"]: u["name"] for u in all_units}
    return render.page("trends.html", context(
        request, ctx, user, "trends", rule_id=rule_id, rules=rules, org_units=all_units, org_unit_id=unit_id,
        unit_name=names.get(unit_id) if unit_id is not None else None, since=since_day, until=until_day,
        chart=chart, days=per_rule if rule_id is not None else [],
        summary=_rule_summary(per_rule) if rule_id is None else [],
        per_unit=_named(per_unit, names), max_days=MAX_DAYS))


def _unit_shares(conn: sa.Connection, scope: Any, rule_id: Optional[str], day: str) -> list[dict[str, Any]]:
    """Compliance per org unit on one day: of one rule (rollups) or of whole devices (daily_stats)."""
    if rule_id is not None:
        rows = conn.execute(sa.select(daily_rule_stats).where(
            daily_rule_stats.c.day == day, daily_rule_stats.c.rule_id == rule_id,
            scope.clause(daily_rule_stats.c.org_unit_id))).mappings().all()
        out = []
        for row in rows:
            judged = row["passing"] + row["warning"] + row["failing"] + row["errors"]
            out.append({"org_unit_id": row["org_unit_id"], "percent": _percent(row["passing"] / judged if judged
                                                                                 else None),
                        "failing": row["failing"], "new_failures": row["new_failures"], "fixed": row["fixed"]})
        return out
    rows = conn.execute(sa.select(daily_stats).where(daily_stats.c.day == day,
                                                     scope.clause(daily_stats.c.org_unit_id))).mappings().all()
    out = []
    for row in rows:
        judged = row["compliant"] + row["not_compliant"] + row["error"]
        out.append({"org_unit_id": row["org_unit_id"],
                    "percent": _percent(row["compliant"] / judged if judged else None),
                    "failing": row["not_compliant"], "new_failures": None, "fixed": None})
    return out


def _named(units: list[dict[str, Any]], names: dict[int, str]) -> list[dict[str, Any]]:
    """Org units with their names, the least compliant first."""
    named = [{**u, "name": names.get(u["org_unit_id"], str(u["org_unit_id"]))} for u in units]
    return sorted(named, key=lambda e: (e["percent"] is None, e["percent"] or 0.0, e["name"]))


@router.get("/report/on")
def dated_report(request: Request, ctx: ContextDep, user: UserDep,
                 day: Annotated[Optional[str], Query(max_length=10)] = None,
                 org_unit: Annotated[Optional[str], Query(max_length=12)] = None) -> Response:
    """Compliance as it was on one day (its last daily snapshot), printable."""
    now = time.time()
    unit_id = parse_int(org_unit, "org_unit")
    when = parse_day(day, "day", now - DAY)
    if when > now:
        raise bad_request("the day must not be in the future: choose today or an earlier day")
    the_day = maintenance.utc_day(when)
    scope = queries.narrow(user.principal.scope, unit_id)
    with ctx.db.read() as conn:
        totals = maintenance.daily_trend(conn, scope, since_day=the_day, until_day=the_day)
        per_rule = maintenance.rule_trend(conn, scope, since_day=the_day, until_day=the_day)
        per_unit = _unit_shares(conn, scope, None, the_day)
        snapshot_at = conn.execute(sa.select(sa.func.max(daily_stats.c.computed_at))
                                   .where(daily_stats.c.day == the_day,
                                          scope.clause(daily_stats.c.org_unit_id))).scalar()
        oldest = conn.execute(sa.select(sa.func.min(daily_stats.c.day))).scalar()
        all_units = accounts.list_org_units(conn, user.principal.scope)
    names = {u["id"]: u["name"] for u in all_units}
    total = totals[0] if totals else None
    judged = (total["compliant"] + total["not_compliant"] + total["error"]) if total else 0
    return render.page("report_on.html", context(
        request, ctx, user, "report", day=the_day, total=total,
        percent=round(100.0 * total["compliant"] / judged, 1) if total and judged else None,
        rules=sorted(per_rule, key=lambda r: r["rule_id"]), snapshot_at=snapshot_at, oldest=oldest,
        per_unit=_named(per_unit, names), org_units=all_units, org_unit_id=unit_id, unit_name=names.get(unit_id) if unit_id is not None else None))
