"""Dashboard pages of server.actions: sinks (test, enable, dead letters and retry), org-unit ladders and rule
exceptions. The work is done by the admin API's functions (server.api.actions), so both stay one code path."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import yaml
from fastapi import APIRouter, Form, HTTPException, Path, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from server.actions import delivery, ladder
from server.actions.events import EVENT_TYPES
from server.api import actions as api
from server.api.deps import ContextDep
from server.context import AppContext
from server.store import accounts, audit
from server.web import auth, render
from server.web.common import AdminCsrfDep, AdminViewDep, audit_address, bad_request, context

router = APIRouter()
SinkId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _page(request: Request, ctx: AppContext, user: auth.WebUser, *, created_secret: Optional[str] = None,
          tested: Optional[dict[str, Any]] = None, status: int = 200) -> Response:
    scope = user.principal.scope
    with ctx.db.read() as conn:
        units = accounts.list_org_units(conn, scope)
        ladders = {u["id"]: ladder.org_unit_ladder(conn, u["id"]) for u in units}
        exceptions = ladder.list_exceptions(conn, None if scope.unrestricted else scope.org_unit_ids)
        letters = {s["id"]: delivery.dead_letters(conn, sink_id=s["id"], limit=20) for s in api._sink_items(ctx)} \
            if scope.unrestricted else {}
    sinks = api._sink_items(ctx) if scope.unrestricted else []
    return render.page("actions.html", context(
        request, ctx, user, "actions", sinks=sinks, letters=letters, units=units, ladders=ladders,
        exceptions=exceptions, created_secret=created_secret, tested=tested, event_types=sorted(EVENT_TYPES),
        ladder_json=lambda value: json.dumps(value, ensure_ascii=False) if value else ""), status_code=status)


@router.get("/actions")
def actions_page(request: Request, ctx: ContextDep, user: AdminViewDep) -> Response:
    return _page(request, ctx, user)


@router.post("/actions/sinks")
def create_sink(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                name: Annotated[str, Form(max_length=200)], kind: Annotated[str, Form(max_length=16)],
                config: Annotated[str, Form(max_length=10000)], secret: Annotated[str, Form(max_length=500)] = "",
                event_types: Annotated[str, Form(max_length=2000)] = "",
                min_severity: Annotated[str, Form(max_length=16)] = "") -> Response:
    try:
        parsed = yaml.safe_load(config) if config.strip() else {}
        body = api.SinkCreate(name=name.strip(), kind=kind, config=parsed if isinstance(parsed, dict) else {},  # type: ignore[arg-type]
                              secret=secret or None, filters=api.SinkFilters(
                                  event_types=[e.strip() for e in event_types.split(",") if e.strip()],
                                  min_severity=min_severity or None))  # type: ignore[arg-type]
    except (yaml.YAMLError, ValidationError) as exc:
        raise bad_request(f"sink: {exc}") from exc
    made = api.create_sink(request, ctx, user.principal, body)
    return _page(request, ctx, user, created_secret=made.get("secret"), status=201)


@router.post("/actions/sinks/{sink_id}/toggle")
def toggle_sink(request: Request, ctx: ContextDep, user: AdminCsrfDep, sink_id: SinkId) -> Response:
    current = api._sink_or_404(ctx, sink_id)
    api.update_sink(request, ctx, user.principal, sink_id, api.SinkUpdate(enabled=not current["enabled"]))
    return RedirectResponse("/actions", status_code=303)


@router.post("/actions/sinks/{sink_id}/test")
async def test_sink(request: Request, ctx: ContextDep, user: AdminCsrfDep, sink_id: SinkId) -> Response:
    api._fleet_admin(user.principal)
    ok, detail = await run_in_threadpool(api.send_test_event, ctx, sink_id, user.principal.actor)

    def record() -> None:
        with ctx.db.write() as conn:
            audit.record(conn, actor=user.principal.actor, action="sink.test", target=str(sink_id),
                         outcome="ok" if ok else "failed", remote_addr=audit_address(request),
                         details={"detail": detail, "via": "dashboard"})
    await run_in_threadpool(record)
    return await run_in_threadpool(_page, request, ctx, user, tested={"sink_id": sink_id, "ok": ok, "detail": detail})


@router.post("/actions/sinks/{sink_id}/retry")
def retry_sink(request: Request, ctx: ContextDep, user: AdminCsrfDep, sink_id: SinkId,
               event_id: Annotated[str, Form(max_length=20)] = "") -> Response:
    api.retry_sink(request, ctx, user.principal, sink_id, int(event_id) if event_id.isdigit() else None)
    return RedirectResponse("/actions?retried=1", status_code=303)


@router.post("/actions/sinks/{sink_id}/delete")
def delete_sink(request: Request, ctx: ContextDep, user: AdminCsrfDep, sink_id: SinkId) -> Response:
    api.delete_sink(request, ctx, user.principal, sink_id)
    return RedirectResponse("/actions", status_code=303)


@router.post("/actions/ladder")
def set_ladder(request: Request, ctx: ContextDep, user: AdminCsrfDep,
               org_unit: Annotated[str, Form(max_length=200)], actions: Annotated[str, Form(max_length=10000)] = "",
               contacts: Annotated[str, Form(max_length=5000)] = "",
               language: Annotated[str, Form(max_length=2)] = "en") -> Response:
    try:
        parsed = yaml.safe_load(actions) if actions.strip() else None
        body = api.OrgUnitLadder(actions=parsed, contacts=[c.strip() for c in contacts.split(",") if c.strip()],
                                 language=language)  # type: ignore[arg-type]
    except (yaml.YAMLError, ValidationError) as exc:
        raise bad_request(f"ladder: {exc}") from exc
    api.put_ladder(request, ctx, user.principal, org_unit, body)
    return RedirectResponse("/actions?saved=1", status_code=303)


@router.post("/actions/exceptions")
def grant_exception(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                    rule_id: Annotated[str, Form(max_length=200)], reason: Annotated[str, Form(max_length=2000)],
                    days: Annotated[str, Form(max_length=4)], device_id: Annotated[str, Form(max_length=36)] = "",
                    org_unit: Annotated[str, Form(max_length=200)] = "") -> Response:
    if not days.isdigit() or not 1 <= int(days) <= 366:
        raise bad_request("days must be a whole number from 1 to 365")
    try:
        body = api.ExceptionCreate(rule_id=rule_id.strip(), device_id=device_id.strip() or None,
                                   org_unit=org_unit.strip() or None, reason=reason,
                                   expires_at=time.time() + int(days) * 86400)
    except ValidationError as exc:
        raise bad_request(f"exception: {exc}") from exc
    api.create_exception(request, ctx, user.principal, body)
    return RedirectResponse("/actions?granted=1", status_code=303)


@router.post("/actions/exceptions/{exception_id}/revoke")
def revoke_exception(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                     exception_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    try:
        api.revoke_exception(request, ctx, user.principal, exception_id)
    except HTTPException:
        raise
    return RedirectResponse("/actions?revoked=1", status_code=303)
