"""Admin API: fleet summary, devices, exports, enrolment tokens, policies, revocation, audit log.

Every query is restricted to the caller's org-unit scope; a device outside it answers 404 exactly like
an unknown one. Viewers read; admins also change things. Every change, every export and every refused
attempt is written to the audit log (a refusal therefore adds one audit row and changes nothing else).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from agent.policy import PolicyError, load_policy_text
from server.api.deps import AdminDep, ContextDep, PrincipalDep, client_address, deny
from server.api.models import (
    AuditPageModel,
    DefaultPolicy,
    DeviceDetail,
    DeviceModel,
    DevicePage,
    EnrollTokenCreate,
    EnrollTokenCreated,
    EnrollTokenModel,
    EnrolmentSetting,
    FleetSummaryModel,
    OrgUnitModel,
    PolicyAssign,
    PolicyPush,
    PolicyPushed,
    PolicyVersionModel,
    Problem,
    RuleTrendDay,
    TransitionPage,
    TrendDay,
)
from server.context import AppContext
from server.settings import SettingsError, parse_duration
from server.store import accounts, audit, counts, enrolment, fleet, maintenance
from server.store import policies as policy_store
from server.store import summary as summary_store
from server.store.accounts import Principal
from server.store.db import Database
from server.store.scope import Scope

router = APIRouter(prefix="/api/v1/admin", tags=["admin"],
                   responses={401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}})

# Free text from query strings and paths: printable, no control characters (PostgreSQL refuses NUL).
TEXT = r"^[^\x00-\x1f\x7f]*$"
DEVICE_ID = r"^[0-9a-fA-F-]{1,36}$"
DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID, description="device id (UUID)")]


def _now() -> float:
    return time.time()


def _stale_after(ctx: AppContext, value: Optional[str]) -> float:
    if value is None:
        return ctx.settings.stale_after
    try:
        return parse_duration(value, "stale_after")
    except SettingsError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def _org_unit_filter(ctx: AppContext, principal: Principal, name: Optional[str]) -> Optional[int]:
    if name is None:
        return None
    with ctx.db.read() as conn:
        found = accounts.org_unit_id(conn, name)
    # An unknown (or out-of-scope) org unit filters everything out instead of revealing what exists.
    return found if found is not None and principal.scope.allows(found) else -1


class DeviceQuery:
    """The device-list filters, shared by the list and the exports."""

    def __init__(
        self,
        status: Annotated[Optional[Literal["compliant", "not_compliant", "error", "unknown"]],
                          Query(description="compliance summary")] = None,
        failing_rule: Annotated[Optional[str], Query(max_length=200, pattern=TEXT,
                                                     description="rule id with status rule_status")] = None,
        rule_status: Literal["pass", "warn", "fail", "not_applicable", "error"] = "fail",
        org_unit: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
        platform: Optional[Literal["linux", "darwin", "windows"]] = None,
        os: Annotated[Optional[str], Query(max_length=200, pattern=TEXT, description="OS name")] = None,
        stale: Annotated[Optional[bool], Query(description="not seen for stale_after")] = None,
        stale_after: Annotated[Optional[str], Query(max_length=20, pattern=TEXT, description="e.g. 2d")] = None,
        q: Annotated[Optional[str], Query(max_length=100, pattern=TEXT,
                                          description="prefix of hostname, serial or user")] = None,
        state: Literal["active", "revoked", "replaced", "pending"] = "active",
        sort: Annotated[str, Query(max_length=30, pattern=TEXT,
                                   description="hostname, serial, user, last_seen, compliance, fail_count, "
                                               "enrolled_at, platform, os_version; prefix - for descending")
                        ] = fleet.DEFAULT_SORT,
    ) -> None:
        self.status, self.failing_rule, self.rule_status = status, failing_rule, rule_status
        self.org_unit, self.platform, self.os, self.stale = org_unit, platform, os, stale
        self.stale_after, self.q, self.state, self.sort = stale_after, q, state, sort

    def build(self, ctx: AppContext, principal: Principal) -> tuple[fleet.DeviceFilter, float]:
        flt = fleet.DeviceFilter(compliance=self.status, failing_rule=self.failing_rule,
                                 rule_status=self.rule_status,
                                 org_unit_id=_org_unit_filter(ctx, principal, self.org_unit),
                                 platform=self.platform, os_name=self.os, stale=self.stale, search=self.q or None,
                                 state=self.state)
        try:
            fleet.parse_sort(self.sort)
            flt.validate()
        except fleet.QueryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return flt, _stale_after(ctx, self.stale_after)




@router.get("/summary", response_model=FleetSummaryModel, responses={400: {"model": Problem}})
def summary(ctx: ContextDep, principal: PrincipalDep,
            stale_after: Annotated[Optional[str], Query(max_length=20, pattern=TEXT)] = None) -> dict[str, Any]:
    """Devices, compliant %, per-rule status counts and stale devices, within the caller's scope.

    Counted live for a fleet in scope of up to `overview_live_limit` devices; above it, the counts the
    maintenance job keeps (made every `maintenance_interval`), with `counted_at` and `counts_age_seconds`."""
    window = _stale_after(ctx, stale_after)
    now = _now()
    with ctx.db.read() as conn:
        result = summary_store.fleet_summary(
            conn, principal.scope, now=now, stale_after=window,
            max_age=counts.stored_max_age(ctx.settings.maintenance_interval),
            live_limit=ctx.settings.overview_live_limit)
    return {"devices": result.devices, "reporting": result.reporting, "by_compliance": result.by_compliance,
            "compliant_percent": result.compliant_percent, "stale": result.stale, "never_seen": result.never_seen,
            "revoked": result.revoked, "stale_after_seconds": result.stale_after, "rules": result.rules,
            "counted_at": result.counted_at,
            "counts_age_seconds": None if result.counted_at is None else max(0.0, now - result.counted_at)}


@router.get("/devices", response_model=DevicePage, responses={400: {"model": Problem}})
def list_devices(ctx: ContextDep, principal: PrincipalDep, query: Annotated[DeviceQuery, Depends()],
                 page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                 per_page: Annotated[int, Query(ge=1, le=fleet.MAX_PER_PAGE)] = 50) -> dict[str, Any]:
    flt, window = query.build(ctx, principal)
    with ctx.db.read() as conn:
        result = fleet.list_devices(conn, principal.scope, flt, now=_now(), stale_after=window, sort=query.sort,
                                    page=page, per_page=per_page)
    return {"items": result.items, "total": result.total, "page": result.page, "per_page": result.per_page,
            "pages": result.pages}


EXPORT_COLUMNS = ("id", "hostname", "serial", "username", "org_unit", "platform", "os_name", "os_version",
                  "agent_version", "state", "compliance", "fail_count", "warn_count", "error_count",
                  "disagreements", "last_seen", "enrolled_at", "stale", "policy_ref")


def _csv_cell(value: Any) -> Any:
    # Spreadsheet formula injection: a hostname like "=cmd()" must stay text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_stream(rows: Iterator[dict[str, Any]], columns: tuple[str, ...]) -> Iterator[str]:
    """CSV text of ``rows`` (a header line, then ``columns`` of each row), yielded every 500 rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([_csv_cell(row.get(name)) for name in columns])
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def streamed_export(db: Database, query: Callable[[Connection], Iterator[dict[str, Any]]], columns: tuple[str, ...],
                    fmt: str, filename: str) -> StreamingResponse:
    """An attachment ``filename.fmt``: the ``columns`` of the rows ``query`` yields, as CSV or a JSON array,
    streamed on one read connection held while the body is sent (so an export never builds a list). Never
    cached: an export holds fleet data."""
    def body() -> Iterator[str]:
        with db.read() as conn:
            rows = query(conn)
            if fmt == "csv":
                yield from csv_stream(rows, columns)
            else:
                yield "["
                for count, row in enumerate(rows):
                    yield ("," if count else "") + json.dumps({name: row.get(name) for name in columns})
                yield "]"

    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(body(), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{filename}.{fmt}"',
                                      "Cache-Control": "no-store"})


@router.get("/devices/export", responses={200: {"content": {"text/csv": {}, "application/json": {}},
                                                "description": "every matching device"},
                                          400: {"model": Problem}})
def export_devices(request: Request, ctx: ContextDep, principal: PrincipalDep,
                   query: Annotated[DeviceQuery, Depends()],
                   format: Literal["csv", "json"] = "csv") -> StreamingResponse:  # noqa: A002 (API name)
    """All matching devices (same filters as the list) as CSV or JSON, streamed."""
    flt, window = query.build(ctx, principal)
    with ctx.db.write() as conn:
        audit.record(conn, actor=principal.actor, action="devices.export", remote_addr=client_address(request),
                     details={"format": format, "filters": {k: v for k, v in vars(query).items() if v is not None}})
    return streamed_export(ctx.db, lambda conn: fleet.iter_devices(conn, principal.scope, flt, now=_now(),
                                                                   stale_after=window, sort=query.sort),
                           EXPORT_COLUMNS, format, "devices")


def device_or_404(ctx: AppContext, principal: Principal, device_id: str) -> dict[str, Any]:
    """The device as the admin API shows it, when it is in the principal's scope; 404 otherwise."""
    with ctx.db.read() as conn:
        device = fleet.get_device(conn, principal.scope, device_id, now=_now(),
                                  stale_after=ctx.settings.stale_after)
    if device is None:
        raise HTTPException(status_code=404, detail=f"no device {device_id} in your scope")
    return device


@router.get("/devices/{device_id}", response_model=DeviceDetail, responses={404: {"model": Problem}})
def device_detail(ctx: ContextDep, principal: PrincipalDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """Current checks (evidence, remediation), the latest history and the latest kept reports."""
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.read() as conn:
        checks = fleet.device_checks(conn, device)
        history = fleet.device_history(conn, device_id, per_page=50)
        reports = fleet.device_reports(conn, device_id, limit=10)
    return {"device": device, "checks": checks,
            "history": {"items": history.items, "total": history.total, "page": history.page,
                        "per_page": history.per_page, "pages": history.pages},
            "reports": reports}


@router.get("/devices/{device_id}/history", response_model=TransitionPage, responses={404: {"model": Problem}})
def device_history(ctx: ContextDep, principal: PrincipalDep, device_id: DeviceIdPath,
                   rule: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
                   page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                   per_page: Annotated[int, Query(ge=1, le=fleet.MAX_PER_PAGE)] = 50) -> dict[str, Any]:
    device_or_404(ctx, principal, device_id)
    with ctx.db.read() as conn:
        history = fleet.device_history(conn, device_id, page=page, per_page=per_page, rule_id=rule)
    return {"items": history.items, "total": history.total, "page": history.page,
            "per_page": history.per_page, "pages": history.pages}


@router.post("/devices/{device_id}/revoke", response_model=DeviceModel, responses={404: {"model": Problem},
                                                                                    409: {"model": Problem}})
def revoke_device(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """Revoke a device: every later report and policy request signed by it is refused."""
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.write() as conn:
        if not enrolment.revoke_device(conn, device_id, _now()):
            raise HTTPException(status_code=409, detail=f"device {device_id} is already {device['state']}")
        audit.record(conn, actor=principal.actor, action="device.revoke", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=client_address(request),
                     details={"hostname": device["hostname"]})
    return device_or_404(ctx, principal, device_id)


def _decide_pending(request: Request, ctx: ContextDep, principal: Principal, device_id: str, approve: bool
                    ) -> dict[str, Any]:
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.write() as conn:
        try:
            if approve:
                replaced = enrolment.approve_pending(conn, device_id, _now())
            else:
                enrolment.reject_pending(conn, device_id, _now())
                replaced = ()
        except enrolment.EnrolmentError as exc:
            raise HTTPException(status_code=exc.status, detail=f"{exc.message} (it is {device['state']})") from exc
        enrolment.record_decision(conn, principal.actor, device, approve, replaced, client_address(request))
    return device_or_404(ctx, principal, device_id)


@router.post("/devices/{device_id}/approve", response_model=DeviceModel, responses={404: {"model": Problem},
                                                                                     409: {"model": Problem}})
def approve_device(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """Approve a pending re-enrolment: the device becomes active and the machine's old device is replaced."""
    return _decide_pending(request, ctx, principal, device_id, approve=True)


@router.post("/devices/{device_id}/reject", response_model=DeviceModel, responses={404: {"model": Problem},
                                                                                    409: {"model": Problem}})
def reject_device(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """Refuse a pending re-enrolment: the new device is revoked, the machine's old device stays active."""
    return _decide_pending(request, ctx, principal, device_id, approve=False)


@router.put("/org-units/{name}/enrolment", response_model=EnrolmentSetting, responses={404: {"model": Problem}})
def set_enrolment_setting(request: Request, ctx: ContextDep, principal: AdminDep,
                          name: Annotated[str, Path(max_length=200, pattern=TEXT)],
                          body: EnrolmentSetting) -> dict[str, Any]:
    """Whether re-enrolments within this org unit replace the old device without an admin's approval."""
    with ctx.db.write() as conn:
        unit_id = accounts.org_unit_id(conn, name)
        if unit_id is None or not principal.scope.allows(unit_id):
            raise HTTPException(status_code=404, detail=f"no org unit {name!r} in your scope")
        enrolment.set_replace_within_org_unit(conn, unit_id, body.replace_within_org_unit, _now())
        audit.record(conn, actor=principal.actor, action="org_unit.enrolment", target=name, org_unit_id=unit_id,
                     remote_addr=client_address(request),
                     details={"replace_within_org_unit": body.replace_within_org_unit})
    return {"replace_within_org_unit": body.replace_within_org_unit}


@router.get("/org-units", response_model=list[OrgUnitModel])
def org_units(ctx: ContextDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        return accounts.list_org_units(conn, principal.scope)


@router.put("/org-units/{name}/policy", response_model=OrgUnitModel, responses={400: {"model": Problem},
                                                                                 404: {"model": Problem}})
def assign_policy(request: Request, ctx: ContextDep, principal: AdminDep,
                  name: Annotated[str, Path(max_length=200, pattern=TEXT)], body: PolicyAssign) -> dict[str, Any]:
    """Assign a policy id (its latest version applies) to an org unit, or null for the default policy."""
    with ctx.db.write() as conn:
        unit_id = accounts.org_unit_id(conn, name)
        if unit_id is None or not principal.scope.allows(unit_id):
            raise HTTPException(status_code=404, detail=f"no org unit {name!r} in your scope")
        try:
            policy_store.assign_policy(conn, unit_id, body.policy_id)
        except policy_store.PolicyStoreError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="policy.assign", target=name, org_unit_id=unit_id,
                     remote_addr=client_address(request), details={"policy_id": body.policy_id})
        unit = next(u for u in accounts.list_org_units(conn, principal.scope) if u["id"] == unit_id)
    ctx.policy_changed()
    return unit


def _token_items(conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = accounts.org_unit_names(conn, [r["org_unit_id"] for r in rows])
    return [{**row, "org_unit": names.get(row["org_unit_id"], "")} for row in rows]


@router.get("/enroll-tokens", response_model=list[EnrollTokenModel])
def list_enroll_tokens(ctx: ContextDep, principal: PrincipalDep, include_inactive: bool = False
                       ) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        return _token_items(conn, enrolment.list_enroll_tokens(conn, principal.scope,
                                                               include_inactive=include_inactive))


@router.post("/enroll-tokens", response_model=EnrollTokenCreated, status_code=201,
             responses={400: {"model": Problem}})
async def create_enroll_token(request: Request, ctx: ContextDep, principal: AdminDep,
                              body: EnrollTokenCreate) -> dict[str, Any]:
    """A new enrolment token for one org unit (created if new; a scoped admin: only its own units)."""
    return await run_in_threadpool(_create_enroll_token, request, ctx, principal, body)


def _create_enroll_token(request: Request, ctx: AppContext, principal: Principal,
                         body: EnrollTokenCreate) -> dict[str, Any]:
    try:
        lifetime = parse_duration(body.expires, "expires")
        accounts.check_org_unit_name(body.org_unit)
    except (SettingsError, accounts.AccountError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    with ctx.db.read() as conn:
        existing = accounts.org_unit_id(conn, body.org_unit)
    if not principal.scope.unrestricted and (existing is None or not principal.scope.allows(existing)):
        raise deny(ctx, request, principal, "enroll_token.create",
                   f"your token may create enrolment tokens only for its own org units, not {body.org_unit!r}",
                   target=body.org_unit)
    with ctx.db.write() as conn:
        unit_id = accounts.ensure_org_unit(conn, body.org_unit)
        try:
            token_id, token, _expires = enrolment.create_enroll_token(
                conn, unit_id, uses_allowed=body.uses, lifetime=lifetime, created_by=principal.actor)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="enroll_token.create", target=str(token_id),
                     org_unit_id=unit_id, remote_addr=client_address(request),
                     details={"org_unit": body.org_unit, "uses": body.uses, "expires": body.expires})
        row = enrolment.get_enroll_token(conn, token_id)
        assert row is not None
        item = _token_items(conn, [row])[0]
    return {**item, "token": token}


@router.delete("/enroll-tokens/{token_id}", response_model=EnrollTokenModel, responses={404: {"model": Problem}})
def revoke_enroll_token(request: Request, ctx: ContextDep, principal: AdminDep,
                        token_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    with ctx.db.write() as conn:
        row = enrolment.get_enroll_token(conn, token_id)
        if row is None or not principal.scope.allows(row["org_unit_id"]):
            raise HTTPException(status_code=404, detail=f"no enrolment token {token_id} in your scope")
        enrolment.revoke_enroll_token(conn, token_id)
        audit.record(conn, actor=principal.actor, action="enroll_token.revoke", target=str(token_id),
                     org_unit_id=row["org_unit_id"], remote_addr=client_address(request))
        updated = enrolment.get_enroll_token(conn, token_id)
        assert updated is not None
        return _token_items(conn, [updated])[0]


@router.get("/policies", response_model=list[PolicyVersionModel])
def list_policies(ctx: ContextDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        rows = policy_store.list_policies(conn)
        if not principal.scope.unrestricted:
            visible = policy_store.policy_ids_in_scope(conn, principal.scope)
            rows = [r for r in rows if r["policy_id"] in visible]
    return rows


def _require_unscoped(ctx: AppContext, request: Request, principal: Principal, action: str) -> None:
    if not principal.scope.unrestricted:
        raise deny(ctx, request, principal, action,
                   "policies are server-wide: this needs an admin token that is not limited to org units")


@router.post("/policies", response_model=PolicyPushed, status_code=201, responses={400: {"model": Problem}})
def push_policy(request: Request, ctx: ContextDep, principal: AdminDep, body: PolicyPush) -> dict[str, Any]:
    """Store a new immutable policy version (validated); optionally make its id the default."""
    _require_unscoped(ctx, request, principal, "policy.push")
    try:
        policy = load_policy_text(body.document, "<upload>")
    except PolicyError as exc:
        raise HTTPException(status_code=400, detail={"message": "policy document is not valid",
                                                     "problems": list(exc.problems)}) from exc
    with ctx.db.write() as conn:
        try:
            pk, created = policy_store.push_policy(conn, policy, created_by=principal.actor)
            if body.make_default:
                policy_store.set_default_policy(conn, policy.id)
        except policy_store.PolicyStoreError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="policy.push", target=f"{policy.id}@{policy.version}",
                     remote_addr=client_address(request),
                     details={"digest": policy.digest(), "created": created, "make_default": body.make_default})
    ctx.policy_changed()
    return {"id": pk, "policy_id": policy.id, "version": policy.version, "digest": policy.digest(),
            "created": created}


@router.put("/policies/default", response_model=DefaultPolicy, responses={400: {"model": Problem}})
def set_default_policy(request: Request, ctx: ContextDep, principal: AdminDep, body: DefaultPolicy) -> dict[str, Any]:
    _require_unscoped(ctx, request, principal, "policy.default")
    with ctx.db.write() as conn:
        try:
            policy_store.set_default_policy(conn, body.policy_id)
        except policy_store.PolicyStoreError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="policy.default", target=body.policy_id,
                     remote_addr=client_address(request))
    ctx.policy_changed()
    return {"policy_id": body.policy_id}


@router.get("/audit", response_model=AuditPageModel, responses={403: {"model": Problem}})
def audit_log(ctx: ContextDep, principal: AdminDep,
              action: Annotated[Optional[str], Query(max_length=100, pattern=TEXT)] = None,
              actor: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
              page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
              per_page: Annotated[int, Query(ge=1, le=fleet.MAX_PER_PAGE)] = 50) -> dict[str, Any]:
    """The audit log, for admins only (as on the dashboard): it names people, addresses and actions."""
    with ctx.db.read() as conn:
        result = audit.list_entries(conn, principal.scope, page=page, per_page=per_page, action=action, actor=actor)
    return {"items": result.items, "total": result.total, "page": result.page, "per_page": result.per_page}


@router.get("/trend/rules", response_model=list[RuleTrendDay], responses={400: {"model": Problem}})
def rule_trend(ctx: ContextDep, principal: PrincipalDep,
               since: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")],
               until: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")],
               rule: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
               org_unit: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None
               ) -> list[dict[str, Any]]:
    """Daily rollups per rule (status counts, new failures, fixes, time to fix) from ``since`` to ``until``
    (UTC days, both included, at most 400 days), over the caller's org units or one of them."""
    try:
        first, last = (datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc) for day in (since, until))
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=f"since and until must be dates as YYYY-MM-DD: {exc}") from exc
    if not timedelta(0) <= last - first < timedelta(days=400):
        raise HTTPException(status_code=400, detail="until must be on or after since, at most 399 days later")
    unit = _org_unit_filter(ctx, principal, org_unit)
    scope = principal.scope if unit is None else Scope(frozenset({unit}) if unit > 0 else frozenset())
    with ctx.db.read() as conn:
        return maintenance.rule_trend(conn, scope, since_day=since, until_day=until, rule_id=rule)


@router.get("/trend", response_model=list[TrendDay])
def trend(ctx: ContextDep, principal: PrincipalDep, days: Annotated[int, Query(ge=1, le=366)] = 30
          ) -> list[dict[str, Any]]:
    """Daily compliance totals (snapshots taken by the maintenance job) over the last ``days`` days."""
    with ctx.db.read() as conn:
        return maintenance.daily_trend(conn, principal.scope, since_day=maintenance.utc_day(_now() - days * 86400))
