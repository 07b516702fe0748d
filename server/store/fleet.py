"""Read queries behind the admin API and the dashboard: device lists, device detail, history (the fleet
summary: server.store.summary).

Every function takes a `Scope` and applies it in SQL. Lists are paginated and their filters and sort
keys are allow-listed; each combination is answered from an index on devices or check_state (see
server/store/schema.py), so they stay fast at 100k devices.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.policies import find_version
from server.store.schema import (
    COMPLIANCE_STATES,
    DEVICE_ACTIVE,
    DEVICE_STATES,
    RESULT_STATUSES,
    check_state,
    devices,
    org_units,
    reports,
    transitions,
)
from server.store.scope import Scope

MAX_PER_PAGE = 500
SEARCH_MAX_LENGTH = 100

# sort key (as the API and dashboard spell it) -> column; "-key" sorts descending.
SORT_COLUMNS: dict[str, Any] = {
    "hostname": devices.c.hostname_lc,
    "serial": devices.c.serial_lc,
    "user": devices.c.username_lc,
    "last_seen": devices.c.last_seen,
    "compliance": devices.c.compliance,
    "fail_count": devices.c.fail_count,
    "enrolled_at": devices.c.enrolled_at,
    "platform": devices.c.platform,
    "os_version": devices.c.os_version,
}
DEFAULT_SORT = "hostname"


class QueryError(ValueError):
    """A filter or sort value outside the allow-list; the message lists what is accepted."""


@dataclass(frozen=True)
class DeviceFilter:
    compliance: Optional[str] = None  # compliant | not_compliant | error | unknown
    failing_rule: Optional[str] = None  # devices whose rule has status `rule_status`
    rule_status: str = "fail"
    org_unit_id: Optional[int] = None
    platform: Optional[str] = None
    os_name: Optional[str] = None
    stale: Optional[bool] = None  # True: not seen for stale_after seconds (or never); False: seen recently
    search: Optional[str] = None  # prefix of hostname, serial or user (case-insensitive)
    state: str = DEVICE_ACTIVE  # active | revoked | replaced

    def validate(self) -> None:
        if self.compliance is not None and self.compliance not in COMPLIANCE_STATES:
            raise QueryError(f"status must be one of {', '.join(COMPLIANCE_STATES)}, found {self.compliance!r}")
        if self.rule_status not in RESULT_STATUSES:
            raise QueryError(f"rule_status must be one of {', '.join(RESULT_STATUSES)}, found {self.rule_status!r}")
        if self.state not in DEVICE_STATES:
            raise QueryError(f"state must be one of {', '.join(DEVICE_STATES)}, found {self.state!r}")
        if self.search is not None and len(self.search) > SEARCH_MAX_LENGTH:
            raise QueryError(f"search text is limited to {SEARCH_MAX_LENGTH} characters")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _like_prefix(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def parse_sort(sort: Optional[str]) -> tuple[str, bool]:
    key = sort or DEFAULT_SORT
    descending = key.startswith("-")
    name = key[1:] if descending else key
    if name not in SORT_COLUMNS:
        raise QueryError(f"sort must be one of {', '.join(sorted(SORT_COLUMNS))} (prefix - for descending), "
                         f"found {key!r}")
    return name, descending


_CODE_POINT_COLLATIONS = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8"})
_code_point_order: dict[str, bool] = {}


def prefix_ranges(conn: Connection) -> bool:
    """Whether text sorts by code point in this database (SQLite BINARY; PostgreSQL with a libc C
    collation), so that every string with a given prefix lies in one index range."""
    key = str(conn.engine.url)
    if key not in _code_point_order:
        if conn.dialect.name == "sqlite":
            _code_point_order[key] = True
        else:
            row = conn.execute(sa.text("SELECT datcollate, to_jsonb(d) ->> 'datlocprovider' AS provider "
                                       "FROM pg_database d WHERE datname = current_database()")).first()
            _code_point_order[key] = row is not None and row.datcollate in _CODE_POINT_COLLATIONS \
                and row.provider in (None, "c")
    return _code_point_order[key]


# Up to this many devices with a rule's status are handed to the database as an id list: it then reads
# them by primary key instead of walking the whole fleet in sort order looking for them.
FAILING_IDS_LIMIT = 5000


def _rule_status_ids(conn: Connection, scope: Scope, flt: DeviceFilter) -> Optional[list[str]]:
    """Ids of the active devices whose rule has the filter's status, or None when there are too many."""
    where = [check_state.c.active.is_(True), check_state.c.rule_id == flt.failing_rule,
             check_state.c.status == flt.rule_status, scope.clause(check_state.c.org_unit_id)]
    if flt.org_unit_id is not None:
        where.append(check_state.c.org_unit_id == flt.org_unit_id)
    ids = conn.execute(sa.select(check_state.c.device_id).where(*where).limit(FAILING_IDS_LIMIT + 1)).scalars().all()
    return None if len(ids) > FAILING_IDS_LIMIT else [str(i) for i in ids]


def _device_conditions(scope: Scope, flt: DeviceFilter, now: float, stale_after: float,
                       prefix_ranges: bool = False, rule_ids: Optional[list[str]] = None) -> list[Any]:
    flt.validate()
    where: list[Any] = [devices.c.state == flt.state, scope.clause(devices.c.org_unit_id)]
    if flt.org_unit_id is not None:
        where.append(devices.c.org_unit_id == flt.org_unit_id)
    if flt.compliance is not None:
        where.append(devices.c.compliance == flt.compliance)
    if flt.platform:
        where.append(devices.c.platform == flt.platform)
    if flt.os_name:
        where.append(devices.c.os_name == flt.os_name)
    cutoff = now - stale_after
    if flt.stale is True:
        where.append(sa.or_(devices.c.last_seen < cutoff,
                            sa.and_(devices.c.last_seen.is_(None), devices.c.enrolled_at < cutoff)))
    elif flt.stale is False:
        where.append(sa.or_(devices.c.last_seen >= cutoff,
                            sa.and_(devices.c.last_seen.is_(None), devices.c.enrolled_at >= cutoff)))
    if flt.search:
        pattern = _like_prefix(flt.search.strip())
        columns = (devices.c.hostname_lc, devices.c.serial_lc, devices.c.username_lc)
        low = flt.search.strip().lower()
        following = ord(low[-1]) + 1 if low else 0x110000
        if prefix_ranges and following < 0x110000:
            # LIKE 'x%' uses no index on SQLite (case-insensitive LIKE) nor on PostgreSQL outside the
            # plain "C" collation; a range on the lower-cased column does, and where text sorts by code
            # point a prefix is one contiguous range. LIKE stays as the exact test.
            high = low[:-1] + chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)
            where.append(sa.or_(*(sa.and_(col >= low, col < high, col.like(pattern, escape="\\"))
                                  for col in columns)))
        else:
            where.append(sa.or_(*(col.like(pattern, escape="\\") for col in columns)))
    if flt.failing_rule and rule_ids is not None:
        where.append(devices.c.id.in_(rule_ids))
    elif flt.failing_rule:
        failing = sa.select(check_state.c.device_id).where(
            check_state.c.active.is_(True), check_state.c.rule_id == flt.failing_rule,
            check_state.c.status == flt.rule_status, scope.clause(check_state.c.org_unit_id))
        where.append(devices.c.id.in_(failing))
    return where


DEVICE_LIST_COLUMNS = (
    devices.c.id, devices.c.hostname, devices.c.serial, devices.c.username, devices.c.platform,
    devices.c.os_name, devices.c.os_version, devices.c.agent_version, devices.c.org_unit_id,
    org_units.c.name.label("org_unit"), devices.c.state, devices.c.compliance, devices.c.compliance_since,
    devices.c.fail_count, devices.c.warn_count, devices.c.error_count, devices.c.disagreements,
    devices.c.last_seen, devices.c.last_report_at, devices.c.enrolled_at, devices.c.policy_ref,
    devices.c.agent_policy_ref, devices.c.revoked_at, devices.c.replaced_by, devices.c.replaces,
)


def _device_item(row: Any, now: float, stale_after: float) -> dict[str, Any]:
    item = dict(row)
    seen = item["last_seen"] if item["last_seen"] is not None else item["enrolled_at"]
    item["stale"] = seen < now - stale_after
    return item


def list_devices(conn: Connection, scope: Scope, flt: DeviceFilter, *, now: float, stale_after: float,
                 sort: Optional[str] = None, page: int = 1, per_page: int = 50,
                 known_total: Optional[int] = None) -> Page:
    """A page of devices; ``known_total`` (the maintained counts of a large fleet) spares the count."""
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise QueryError(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
    name, descending = parse_sort(sort)
    flt.validate()
    rule_ids = _rule_status_ids(conn, scope, flt) if flt.failing_rule else None
    where = _device_conditions(scope, flt, now, stale_after, prefix_ranges(conn), rule_ids)
    only_rule = replace(flt, failing_rule=None, rule_status="fail", org_unit_id=None) == DeviceFilter()
    if known_total is not None:
        total = known_total
    elif rule_ids is not None and only_rule:
        # check_state.active mirrors the device being active, and the id query applied scope and org
        # unit: the list is the answer, no count over the fleet needed.
        total = len(rule_ids)
    else:
        total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(*where)).scalar_one()
    column = SORT_COLUMNS[name]
    order = [column.desc() if descending else column.asc(), devices.c.id.desc() if descending else devices.c.id]
    rows = conn.execute(sa.select(*DEVICE_LIST_COLUMNS)
                        .select_from(devices.outerjoin(org_units, org_units.c.id == devices.c.org_unit_id))
                        .where(*where).order_by(*order).limit(per_page).offset((page - 1) * per_page)
                        ).mappings().all()
    return Page([_device_item(r, now, stale_after) for r in rows], int(total), page, per_page)


def iter_devices(conn: Connection, scope: Scope, flt: DeviceFilter, *, now: float, stale_after: float,
                 sort: Optional[str] = None, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching device in sort order, fetched in chunks (for exports)."""
    name, descending = parse_sort(sort)
    where = _device_conditions(scope, flt, now, stale_after, prefix_ranges(conn))
    column = SORT_COLUMNS[name]
    order = [column.desc() if descending else column.asc(), devices.c.id.desc() if descending else devices.c.id]
    result = conn.execution_options(yield_per=chunk).execute(
        sa.select(*DEVICE_LIST_COLUMNS)
        .select_from(devices.outerjoin(org_units, org_units.c.id == devices.c.org_unit_id))
        .where(*where).order_by(*order))
    for row in result.mappings():
        yield _device_item(row, now, stale_after)


def _json_or(text: Optional[str], default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def get_device(conn: Connection, scope: Scope, device_id: str, *, now: float,
               stale_after: float) -> Optional[dict[str, Any]]:
    """The device row (as list_devices shows it) or None when unknown or outside the scope."""
    row = conn.execute(sa.select(*DEVICE_LIST_COLUMNS, devices.c.machine_id, devices.c.key_id, devices.c.last_seq)
                       .select_from(devices.outerjoin(org_units, org_units.c.id == devices.c.org_unit_id))
                       .where(devices.c.id == device_id, scope.clause(devices.c.org_unit_id))).mappings().first()
    return None if row is None else _device_item(row, now, stale_after)


def device_checks(conn: Connection, device: dict[str, Any]) -> list[dict[str, Any]]:
    """Current state per rule, with the remediation text of the policy version that judged it."""
    remediation: dict[str, Any] = {}
    titles: dict[str, Any] = {}
    ref = device.get("policy_ref")
    if ref and "@" in ref:
        policy_id, _, version = ref.rpartition("@")
        if version.isdigit():
            stored = find_version(conn, policy_id, int(version))
            if stored is not None:
                for rule in stored.policy.rules:
                    remediation[rule.id] = dict(rule.remediation)
                    titles[rule.id] = dict(rule.title)
    rows = conn.execute(sa.select(check_state).where(check_state.c.device_id == device["id"])
                        .order_by(check_state.c.rule_id)).mappings().all()
    out = []
    for row in rows:
        out.append({
            "rule_id": row["rule_id"], "check": row["check_id"], "severity": row["severity"],
            "status": row["status"], "since": row["since"], "failing_since": row["failing_since"],
            "reason": row["reason"], "message": _json_or(row["message"], {}),
            "evidence": _json_or(row["evidence"], []), "agent_status": row["agent_status"],
            "disagrees": row["agent_status"] is not None and row["agent_status"] != row["status"],
            "updated_at": row["updated_at"], "title": titles.get(row["rule_id"], {}),
            "remediation": remediation.get(row["rule_id"], {}),
        })
    return out


def device_history(conn: Connection, device_id: str, *, page: int = 1, per_page: int = 50,
                   rule_id: Optional[str] = None) -> Page:
    where = [transitions.c.device_id == device_id]
    if rule_id:
        where.append(transitions.c.rule_id == rule_id)
    total = conn.execute(sa.select(sa.func.count()).select_from(transitions).where(*where)).scalar_one()
    rows = conn.execute(sa.select(transitions.c.rule_id, transitions.c.check_id, transitions.c.old_status,
                                  transitions.c.new_status, transitions.c.at, transitions.c.recorded_at,
                                  transitions.c.seq, transitions.c.reason, transitions.c.message)
                        .where(*where).order_by(transitions.c.at.desc(), transitions.c.id.desc())
                        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    # message: the engine's {key, params} (translatable); None on rows from before migration 0006
    return Page([{**r, "message": _json_or(r["message"], None)} for r in rows], int(total), page, per_page)


def device_reports(conn: Connection, device_id: str, *, limit: int = 10,
                   with_payload: bool = False) -> list[dict[str, Any]]:
    """The most recent kept raw reports (see ingest's sampling), newest first."""
    columns = [reports.c.seq, reports.c.report_id, reports.c.created_at, reports.c.received_at,
               reports.c.compliance, reports.c.policy_ref]
    if with_payload:
        columns.append(reports.c.payload)
    rows = conn.execute(sa.select(*columns).where(reports.c.device_id == device_id)
                        .order_by(reports.c.seq.desc()).limit(limit)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        if with_payload:
            item["payload"] = _json_or(item["payload"], None)
        out.append(item)
    return out


def fleet_history(conn: Connection, scope: Scope, *, since: float, until: float, page: int = 1,
                  per_page: int = 100) -> Page:
    """Status changes across the fleet in a time window, newest first (dashboard activity feed)."""
    where = [transitions.c.at >= since, transitions.c.at < until, scope.clause(transitions.c.org_unit_id)]
    total = conn.execute(sa.select(sa.func.count()).select_from(transitions).where(*where)).scalar_one()
    rows = conn.execute(sa.select(transitions).where(*where)
                        .order_by(transitions.c.at.desc(), transitions.c.id.desc())
                        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    return Page([dict(r) for r in rows], int(total), page, per_page)
