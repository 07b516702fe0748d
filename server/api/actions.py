"""Admin API of server.actions: sinks (secrets never returned), dead letters and retry, test events,
org-unit ladders, rule exceptions, and a device's ladder state (docs/actions.md).

Sinks are fleet-wide: only an admin whose scope is the whole fleet manages them. Ladders and exceptions
follow the org-unit scope like the rest of the admin API. Every change is audited.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal, Optional

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.actions import delivery, ladder, secrets
from server.actions.events import EVENT_TYPES, Event, ocsf_body
from server.actions.sinks import Sink, SinkError, check_config, new_webhook_secret, open_sender
from server.api.admin import TEXT, DeviceIdPath, device_or_404
from server.api.deps import AdminDep, ContextDep, PrincipalDep, client_address
from server.api.models import Problem
from server.context import AppContext
from server.store import accounts, audit
from server.store.accounts import Principal
from server.store.schema import deliveries, sinks

router = APIRouter(prefix="/api/v1/admin", tags=["actions"],
                   responses={401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}})
SinkIdPath = Annotated[int, Path(ge=1, le=2 ** 31 - 1)]
OrgUnitPath = Annotated[str, Path(max_length=200, pattern=TEXT)]


class SinkFilters(BaseModel):
    event_types: list[str] = Field(default_factory=list, description="empty: every type")
    org_units: list[str] = Field(default_factory=list, description="org unit names; empty: every org unit")
    min_severity: Optional[Literal["low", "medium", "high", "critical"]] = None


class SinkCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    kind: Literal["webhook", "email", "syslog"]
    config: dict[str, Any] = Field(description="webhook: url, timeout; email: host, port, starttls, username, "
                                               "from, to, language, ca_file; syslog: host, port, transport "
                                               "(tcp|tls), format (json|cef), ca_file, facility")
    secret: Optional[str] = Field(default=None, max_length=500,
                                  description="webhook signing secret (whsec_...; generated when absent) or "
                                              "SMTP password; stored encrypted, never shown again")
    filters: SinkFilters = Field(default_factory=SinkFilters)
    enabled: bool = True


class SinkUpdate(BaseModel):
    config: Optional[dict[str, Any]] = None
    secret: Optional[str] = Field(default=None, max_length=500)
    filters: Optional[SinkFilters] = None
    enabled: Optional[bool] = None


class SinkModel(BaseModel):
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    filters: dict[str, Any]
    enabled: bool
    has_secret: bool
    pending: int = 0
    dead: int = 0


class SinkCreated(SinkModel):
    secret: Optional[str] = Field(default=None, description="the webhook secret, shown this once")


class TestResult(BaseModel):
    ok: bool
    detail: str


class DeadLetter(BaseModel):
    event_id: int
    sink_id: int
    sink: str
    device_key: str
    attempts: int
    last_error: Optional[str]
    uid: str
    type: str
    created_at: float


class Retried(BaseModel):
    retried: int


class OrgUnitLadder(BaseModel):
    actions: Optional[dict[str, Any]] = Field(
        default=None, description="severity -> [{after: 0s|30m|24h|7d, do: notify_employee|notify_team|"
                                  "notify_manager|block}, ...] in order of `after`; null: the policy's ladder")
    contacts: list[str] = Field(default_factory=list, max_length=50, description="notify_manager recipients")
    language: Literal["en", "fr", "ar"] = "en"


class ExceptionCreate(BaseModel):
    rule_id: str = Field(min_length=1, max_length=200, pattern=TEXT)
    device_id: Optional[str] = Field(default=None, pattern=r"^[0-9a-fA-F-]{1,36}$")
    org_unit: Optional[str] = Field(default=None, max_length=200, pattern=TEXT,
                                    description="exempt the whole org unit (when device_id is absent)")
    reason: str = Field(min_length=1, max_length=2000)
    expires_at: float = Field(description="epoch seconds; at most a year ahead", allow_inf_nan=False)


class ExceptionModel(BaseModel):
    id: int
    rule_id: str
    device_id: Optional[str]
    org_unit_id: int
    org_unit: str = ""
    reason: str
    expires_at: float
    created_at: float
    created_by: str
    ended_at: Optional[float]


class DeviceActions(BaseModel):
    device_id: str
    blocked: bool
    blocked_since: Optional[float]
    ladders: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]


class ActionsSummary(BaseModel):
    blocked: int
    due_within_24h: int


def _fleet_admin(principal: Principal) -> None:
    if not principal.scope.unrestricted:
        raise HTTPException(status_code=403, detail="sinks are fleet-wide: only an admin of the whole fleet "
                                                    "manages them")


def _filters_json(conn: Any, filters: SinkFilters) -> str:
    unknown = [t for t in filters.event_types if t not in EVENT_TYPES]
    if unknown:
        raise HTTPException(status_code=400, detail=f"unknown event types {unknown}; known: {sorted(EVENT_TYPES)}")
    ids = []
    for name in filters.org_units:
        unit = accounts.org_unit_id(conn, name)
        if unit is None:
            raise HTTPException(status_code=400, detail=f"no org unit {name!r}")
        ids.append(unit)
    return json.dumps({"event_types": filters.event_types, "org_unit_ids": ids,
                       "min_severity": filters.min_severity}, sort_keys=True)


def _sink_items(ctx: AppContext, sink_id: Optional[int] = None) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        query = sa.select(sinks).order_by(sinks.c.id)
        if sink_id is not None:
            query = query.where(sinks.c.id == sink_id)
        counts = delivery.queue_counts(conn)
        return [{"id": r["id"], "name": r["name"], "kind": r["kind"], "config": json.loads(r["config"]),
                 "filters": json.loads(r["filters"]), "enabled": bool(r["enabled"]),
                 "has_secret": r["secret"] is not None,
                 **counts.get(int(r["id"]), {delivery.PENDING: 0, delivery.DEAD: 0})}
                for r in conn.execute(query).mappings()]


def _sink_or_404(ctx: AppContext, sink_id: int) -> dict[str, Any]:
    found = _sink_items(ctx, sink_id)
    if not found:
        raise HTTPException(status_code=404, detail=f"no sink {sink_id}")
    return found[0]


@router.get("/sinks", response_model=list[SinkModel])
def list_sinks(ctx: ContextDep, principal: AdminDep) -> list[dict[str, Any]]:
    _fleet_admin(principal)
    return _sink_items(ctx)


@router.post("/sinks", response_model=SinkCreated, status_code=201, responses={400: {"model": Problem},
                                                                               409: {"model": Problem}})
def create_sink(request: Request, ctx: ContextDep, principal: AdminDep, body: SinkCreate) -> dict[str, Any]:
    """Add a sink. A webhook without a secret gets one, returned in this answer only."""
    _fleet_admin(principal)
    try:
        config = check_config(body.kind, body.config)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    secret = body.secret
    shown = None
    if body.kind == "webhook" and not secret:
        secret = shown = new_webhook_secret()
    with ctx.db.write() as conn:
        if conn.execute(sa.select(sinks.c.id).where(sinks.c.name == body.name)).first() is not None:
            raise HTTPException(status_code=409, detail=f"a sink named {body.name!r} exists")
        sink_id = conn.execute(sinks.insert().values(
            name=body.name, kind=body.kind, config=json.dumps(config, sort_keys=True),
            secret=None if not secret else secrets.seal(ctx.server_key, secret),
            filters=_filters_json(conn, body.filters), enabled=body.enabled, created_at=time.time(),
            created_by=principal.actor)).inserted_primary_key
        new_id = int(sink_id[0]) if sink_id is not None else 0
        audit.record(conn, actor=principal.actor, action="sink.create", target=body.name,
                     remote_addr=client_address(request), details={"kind": body.kind, "config": config})
    return {**_sink_or_404(ctx, new_id), "secret": shown}


@router.patch("/sinks/{sink_id}", response_model=SinkModel, responses={400: {"model": Problem},
                                                                       404: {"model": Problem}})
def update_sink(request: Request, ctx: ContextDep, principal: AdminDep, sink_id: SinkIdPath,
                body: SinkUpdate) -> dict[str, Any]:
    _fleet_admin(principal)
    current = _sink_or_404(ctx, sink_id)
    values: dict[str, Any] = {}
    with ctx.db.write() as conn:
        if body.config is not None:
            try:
                values["config"] = json.dumps(check_config(current["kind"], body.config), sort_keys=True)
            except (ValueError, TypeError) as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
        if body.secret:
            values["secret"] = secrets.seal(ctx.server_key, body.secret)
        if body.filters is not None:
            values["filters"] = _filters_json(conn, body.filters)
        if body.enabled is not None:
            values["enabled"] = body.enabled
        if values:
            conn.execute(sinks.update().where(sinks.c.id == sink_id).values(**values))
            audit.record(conn, actor=principal.actor, action="sink.update", target=current["name"],
                         remote_addr=client_address(request),
                         details={k: ("(changed)" if k == "secret" else v) for k, v in values.items()})
    return _sink_or_404(ctx, sink_id)


@router.delete("/sinks/{sink_id}", status_code=204, responses={404: {"model": Problem}})
def delete_sink(request: Request, ctx: ContextDep, principal: AdminDep, sink_id: SinkIdPath) -> None:
    """Remove a sink and its delivery queue (pending events for it are dropped, and audited)."""
    _fleet_admin(principal)
    current = _sink_or_404(ctx, sink_id)
    with ctx.db.write() as conn:
        dropped = conn.execute(deliveries.delete().where(deliveries.c.sink_id == sink_id,
                                                         deliveries.c.state != delivery.DELIVERED)).rowcount
        conn.execute(deliveries.delete().where(deliveries.c.sink_id == sink_id))
        conn.execute(sinks.delete().where(sinks.c.id == sink_id))
        audit.record(conn, actor=principal.actor, action="sink.delete", target=current["name"],
                     remote_addr=client_address(request), details={"undelivered_dropped": dropped})


def send_test_event(ctx: AppContext, sink_id: int, actor: str) -> tuple[bool, str]:
    """Send a ``sink.test`` event straight to one sink (not through the outbox): the answer is the outcome."""
    with ctx.db.read() as conn:
        found = [s for s in delivery.load_sinks(conn, ctx.server_key, enabled_only=False) if s.id == sink_id]
    if not found:
        raise HTTPException(status_code=404, detail=f"no sink {sink_id}")
    sink: Sink = found[0]
    uid = f"test-{int(time.time() * 1000)}"
    body = ocsf_body(Event("sink.test", data={"by": actor, "message": "Teleposture test event"}), uid, time.time())
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        sender = open_sender(sink)
        try:
            sender.send(uid, text, body)
            sender.flush()
        finally:
            sender.close()
    except SinkError as exc:
        return False, str(exc)
    return True, f"test event {uid} delivered to {sink.name}"


@router.post("/sinks/{sink_id}/test", response_model=TestResult, responses={404: {"model": Problem}})
async def test_sink(request: Request, ctx: ContextDep, principal: AdminDep, sink_id: SinkIdPath) -> dict[str, Any]:
    _fleet_admin(principal)
    ok, detail = await run_in_threadpool(send_test_event, ctx, sink_id, principal.actor)
    with ctx.db.write() as conn:
        audit.record(conn, actor=principal.actor, action="sink.test", target=str(sink_id),
                     outcome="ok" if ok else "failed", remote_addr=client_address(request), details={"detail": detail})
    return {"ok": ok, "detail": detail}


@router.get("/sinks/{sink_id}/dead-letters", response_model=list[DeadLetter], responses={404: {"model": Problem}})
def sink_dead_letters(ctx: ContextDep, principal: AdminDep, sink_id: SinkIdPath) -> list[dict[str, Any]]:
    _fleet_admin(principal)
    _sink_or_404(ctx, sink_id)
    with ctx.db.read() as conn:
        return delivery.dead_letters(conn, sink_id=sink_id)


@router.post("/sinks/{sink_id}/retry", response_model=Retried, responses={404: {"model": Problem}})
def retry_sink(request: Request, ctx: ContextDep, principal: AdminDep, sink_id: SinkIdPath,
               event_id: Annotated[Optional[int], Query(ge=1)] = None) -> dict[str, int]:
    """Put the sink's dead letters (or one of them) back in its queue."""
    _fleet_admin(principal)
    current = _sink_or_404(ctx, sink_id)
    with ctx.db.write() as conn:
        count = delivery.retry_dead(conn, sink_id=sink_id, event_id=event_id)
        audit.record(conn, actor=principal.actor, action="sink.retry", target=current["name"],
                     remote_addr=client_address(request), details={"event_id": event_id, "retried": count})
    return {"retried": count}


def _org_unit_or_404(conn: Any, principal: Principal, name: str) -> int:
    unit_id = accounts.org_unit_id(conn, name)
    if unit_id is None or not principal.scope.allows(unit_id):
        raise HTTPException(status_code=404, detail=f"no org unit {name!r} in your scope")
    return unit_id


@router.get("/org-units/{name}/ladder", response_model=OrgUnitLadder, responses={404: {"model": Problem}})
def get_ladder(ctx: ContextDep, principal: PrincipalDep, name: OrgUnitPath) -> dict[str, Any]:
    with ctx.db.read() as conn:
        unit = ladder.org_unit_ladder(conn, _org_unit_or_404(conn, principal, name))
    return unit or {"actions": None, "contacts": [], "language": "en"}


@router.put("/org-units/{name}/ladder", response_model=OrgUnitLadder, responses={400: {"model": Problem},
                                                                                 404: {"model": Problem}})
def put_ladder(request: Request, ctx: ContextDep, principal: AdminDep, name: OrgUnitPath,
               body: OrgUnitLadder) -> dict[str, Any]:
    """Set the org unit's ladder (overrides the policy's `actions`; null goes back to it) and contacts.
    Running episodes keep the ladder they started with."""
    actions = body.actions
    with ctx.db.write() as conn:
        unit_id = _org_unit_or_404(conn, principal, name)
        try:
            ladder.set_org_unit_ladder(conn, unit_id, actions=actions, contacts=body.contacts,
                                       language=body.language, actor=principal.actor)
        except ladder.LadderError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="ladder.set", target=name, org_unit_id=unit_id,
                     remote_addr=client_address(request), details=body.model_dump())
        return ladder.org_unit_ladder(conn, unit_id) or {}


@router.get("/exceptions", response_model=list[ExceptionModel])
def list_exceptions(ctx: ContextDep, principal: PrincipalDep, include_ended: bool = False) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        return ladder.list_exceptions(conn, None if principal.scope.unrestricted else principal.scope.org_unit_ids,
                                      include_ended=include_ended)


@router.post("/exceptions", response_model=ExceptionModel, status_code=201,
             responses={400: {"model": Problem}, 404: {"model": Problem}})
def create_exception(request: Request, ctx: ContextDep, principal: AdminDep, body: ExceptionCreate) -> dict[str, Any]:
    """Exempt a device, or an org unit, from a rule: mandatory reason, expiry at most a year ahead."""
    if body.device_id is not None:
        device = device_or_404(ctx, principal, body.device_id)
        unit_id = int(device["org_unit_id"])
    elif body.org_unit is None:
        raise HTTPException(status_code=400, detail="give device_id or org_unit")
    with ctx.db.write() as conn:
        if body.device_id is None:
            unit_id = _org_unit_or_404(conn, principal, str(body.org_unit))
        try:
            exception_id = ladder.grant_exception(conn, rule_id=body.rule_id, org_unit_id=unit_id,
                                                  device_id=body.device_id, reason=body.reason,
                                                  expires_at=body.expires_at, actor=principal.actor)
        except ladder.LadderError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="exception.grant", target=body.device_id or body.org_unit,
                     org_unit_id=unit_id, remote_addr=client_address(request),
                     details={"rule_id": body.rule_id, "reason": body.reason, "expires_at": body.expires_at})
        found = ladder.list_exceptions(conn, exception_id=exception_id)
    return found[0]


@router.delete("/exceptions/{exception_id}", response_model=ExceptionModel, responses={404: {"model": Problem}})
def revoke_exception(request: Request, ctx: ContextDep, principal: AdminDep,
                     exception_id: Annotated[int, Path(ge=1, le=2 ** 31 - 1)]) -> dict[str, Any]:
    with ctx.db.write() as conn:
        found = ladder.list_exceptions(conn, exception_id=exception_id)
        if not found or not principal.scope.allows(found[0]["org_unit_id"]):
            raise HTTPException(status_code=404, detail=f"no active exception {exception_id} in your scope")
        ladder.end_exception(conn, exception_id, why=f"revoked by {principal.actor}")
        audit.record(conn, actor=principal.actor, action="exception.revoke", target=str(exception_id),
                     org_unit_id=found[0]["org_unit_id"], remote_addr=client_address(request),
                     details={"rule_id": found[0]["rule_id"]})
        ended = ladder.list_exceptions(conn, include_ended=True, exception_id=exception_id)
    return ended[0]


@router.get("/devices/{device_id}/actions", response_model=DeviceActions, responses={404: {"model": Problem}})
def device_actions(ctx: ContextDep, principal: PrincipalDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """The device's running ladders (step reached, next step and deadline), block and exceptions."""
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.read() as conn:
        running = ladder.device_ladders(conn, [device_id])[device_id]
        since = ladder.blocked_since(conn, device_id)
        exceptions = list(ladder.active_exceptions(conn, device_id, int(device["org_unit_id"])).values())
    return {"device_id": device_id, "blocked": since is not None, "blocked_since": since, "ladders": running,
            "exceptions": exceptions}


@router.get("/actions/summary", response_model=ActionsSummary)
def actions_summary(ctx: ContextDep, principal: PrincipalDep) -> dict[str, int]:
    """Devices blocked now and devices whose `block` step is due within 24 hours (in the caller's scope)."""
    with ctx.db.read() as conn:
        return ladder.due_counts(conn, None if principal.scope.unrestricted else
                                 sorted(principal.scope.org_unit_ids or ()), time.time())

