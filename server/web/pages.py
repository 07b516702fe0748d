"""Sign-in, overview, devices, device detail, exports and the printable report."""

from __future__ import annotations

import secrets
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from server import device_notices, lowprio
from server.actions import ladder
from server.api.access import device_access
from server.api.admin import EXPORT_COLUMNS, streamed_export
from server.api.deps import ContextDep
from server.context import AppContext
from server.store import access as access_store
from server.store import accounts, audit, change_counts, counts, enrolment, fleet, maintenance, sessions
from server.store import summary as summary_store
from server.store.scope import Scope
from server.web import auth, queries, render
from server.web.common import (
    AdminCsrfDep,
    AdminViewDep,
    CsrfUserDep,
    OptionalUserDep,
    UserDep,
    WebRoute,
    audit_address,
    bad_request,
    context,
    language,
    local_path,
    parse_int,
)
from server.web.i18n import LANGUAGES, Translator

router = APIRouter(route_class=WebRoute, include_in_schema=False)

TEXT = r"^[^\x00-\x1f\x7f]*$"
DEVICE_ID = r"^[0-9a-fA-F-]{1,36}$"
PER_PAGE_CHOICES = (25, 50, 100)
TREND_DAYS = 30


# -- static files ------------------------------------------------------------------------------

@router.get("/static/{name:path}")
def static(name: str) -> Response:
    # Only files that exist in the package at start are served: no path ever leaves STATIC_DIR.
    if name not in render.STATIC_VERSIONS:
        raise HTTPException(status_code=404, detail=f"no static file {name[:100]!r}")
    return FileResponse(render.STATIC_DIR / name, headers={"Cache-Control": "public, max-age=86400",
                                                           "X-Content-Type-Options": "nosniff"})


# -- sign-in, sign-out, language ---------------------------------------------------------------

def _login_nonce(request: Request) -> tuple[str, bool]:
    existing = request.cookies.get(auth.LOGIN_COOKIE, "")
    if 16 <= len(existing) <= 64 and existing.replace("-", "").replace("_", "").isalnum():
        return existing, False
    return secrets.token_urlsafe(24), True


def _login_page(request: Request, ctx: AppContext, *, error: Optional[str] = None, username: str = "",
                status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    nonce, fresh = _login_nonce(request)
    data = context(request, ctx, None, "login", error=error, username=username,
                   next=local_path(request.query_params.get("next")),
                   login_csrf=auth.csrf_token(ctx, "login:" + nonce))
    response = render.page("login.html", data, status_code=status, headers=headers)
    if fresh:
        auth.set_cookie(response, request, ctx, auth.LOGIN_COOKIE, nonce, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, ctx: ContextDep, user: OptionalUserDep) -> Response:
    if user is not None:
        return RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    return _login_page(request, ctx)


@router.post("/login")
def login(request: Request, ctx: ContextDep,
          username: Annotated[str, Form(max_length=200)] = "",
          password: Annotated[str, Form(max_length=1024)] = "",
          csrf_token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # noqa: A002 (form field name)
    t = Translator(language(request))
    nonce = request.cookies.get(auth.LOGIN_COOKIE)
    if not auth.csrf_valid(ctx, "login:" + nonce if nonce else None, csrf_token):
        raise HTTPException(status_code=403, detail=t("error.csrf_login"))
    address = audit_address(request)
    session: Optional[auth.Session] = None
    details: dict[str, Any] = {"via": "dashboard"}
    limited = auth.login_limited(request, address, username)
    # scrypt runs outside the write transaction (on SQLite a lock every process's ingest needs), on a
    # low-priority thread so that a storm of sign-ins only gets the CPU ingest leaves idle. Attempts
    # that fail whatever the password (over a failure limit, unknown or disabled user) cost no scrypt,
    # but take as long as one and get the same answer: timing and page tell nothing about which.
    try:
        if limited:
            details["limited"] = limited
            accounts.pause_like_a_check(password)
            match = None
        elif username and password:
            match = accounts.verify_user_password(ctx.db, username, password)
        else:
            match = None
    except lowprio.Busy:
        ctx.metrics.signins.labels("busy").inc()
        return _login_page(request, ctx, error=t.plural("login.too_many", 5, seconds=5), username=username,
                           status=429, headers={"Retry-After": "5"})
    with ctx.db.write() as conn:
        principal = accounts.complete_sign_in(conn, match) if match is not None else None
        if principal is not None and principal.user_id is not None:
            session = auth.new_session(principal.user_id)
            previous = auth.decode_session(ctx, request.cookies.get(auth.SESSION_COOKIE, ""))
            if previous is not None:  # signing in again in this browser replaces its session
                sessions.revoke_session_by_secret(conn, previous.session_id)
            details["session"] = sessions.create_session(
                conn, principal.user_id, session.session_id, lifetime=auth.SESSION_LIFETIME, remote_addr=address,
                user_agent=request.headers.get("user-agent"), now=session.issued_at)
            # Sessions are only added here, so deleting a few expired ones per sign-in bounds the table.
            maintenance.prune_web_sessions(conn, batch=100)
        if principal is None and not accounts.user_exists(conn, username):
            # People type passwords into the user name field: an unknown name is kept only as a keyed
            # fingerprint (repeated attempts with the same text still match), never as typed.
            actor = "user:?"
            details["name_fingerprint"] = auth.name_fingerprint(ctx, username)
        else:
            actor = f"user:{username[:100]}"
        audit.record(conn, actor=actor, action="user.login", remote_addr=address,
                     outcome="ok" if session else "failed", details=details)
    ctx.metrics.signins.labels("ok" if session else "limited" if limited else "failed").inc()
    if session is None:
        if not limited:  # refusals by a limit do not extend it: the cooldown ends a minute after the failures
            auth.login_failed(request, address, username)
        return _login_page(request, ctx, error=t("login.failed"), username=username, status=401)
    response = RedirectResponse(local_path(next), status_code=303)
    auth.set_cookie(response, request, ctx, auth.SESSION_COOKIE, auth.encode_session(ctx, session),
                    max_age=int(auth.SESSION_LIFETIME))
    response.delete_cookie(auth.LOGIN_COOKIE, path="/")
    return response


def _signed_out() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, ctx: ContextDep, user: CsrfUserDep) -> Response:
    # Revoked on the server: a copy of the cookie (another browser, a stolen one) stops working too.
    with ctx.db.write() as conn:
        sessions.revoke_session(conn, user.session_row)
        audit.record(conn, actor=user.principal.actor, action="user.logout", remote_addr=audit_address(request),
                     details={"session": user.session_row})
    return _signed_out()


@router.get("/sessions")
def sessions_page(request: Request, ctx: ContextDep, user: UserDep) -> Response:
    """The signed-in user's own open sessions, each of which can be ended."""
    revoked = parse_int(request.query_params.get("revoked"), "revoked", minimum=0, maximum=10**6)
    with ctx.db.read() as conn:
        rows = sessions.list_user_sessions(conn, user.session.user_id)
    return render.page("sessions.html", context(request, ctx, user, "sessions", sessions=rows,
                                                current=user.session_row, revoked=revoked))


@router.post("/sessions/{session_id}/revoke")
def revoke_one_session(request: Request, ctx: ContextDep, user: CsrfUserDep,
                       session_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    with ctx.db.write() as conn:
        if not sessions.revoke_session(conn, session_id, user_id=user.session.user_id):
            raise HTTPException(status_code=404, detail=Translator(language(request))("sessions.not_found"))
        audit.record(conn, actor=user.principal.actor, action="user.session_revoke", target=str(session_id),
                     remote_addr=audit_address(request), details={"session": user.session_row})
    if session_id == user.session_row:
        return _signed_out()
    return RedirectResponse("/sessions?revoked=1", status_code=303)


@router.post("/sessions/revoke-others")
def revoke_other_sessions(request: Request, ctx: ContextDep, user: CsrfUserDep) -> Response:
    with ctx.db.write() as conn:
        count = sessions.revoke_user_sessions(conn, user.session.user_id, keep=user.session_row)
        audit.record(conn, actor=user.principal.actor, action="user.sessions_revoke_others",
                     remote_addr=audit_address(request), details={"session": user.session_row, "revoked": count})
    return RedirectResponse(f"/sessions?revoked={count}", status_code=303)


@router.post("/lang")
def set_language(request: Request, ctx: ContextDep, user: OptionalUserDep,
                 lang: Annotated[str, Form(max_length=5)] = "en",
                 csrf_token: Annotated[str, Form(max_length=200)] = "",
                 next: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # noqa: A002
    nonce = request.cookies.get(auth.LOGIN_COOKIE)
    binding = user.session.session_id if user else ("login:" + nonce if nonce else None)
    if not auth.csrf_valid(ctx, binding, csrf_token):
        raise HTTPException(status_code=403, detail=Translator(language(request))("error.csrf"))
    if lang not in LANGUAGES:
        raise bad_request(f"language must be one of {', '.join(LANGUAGES)}, found {lang!r}")
    response = RedirectResponse(local_path(next), status_code=303)
    auth.set_cookie(response, request, ctx, auth.LANG_COOKIE, lang, max_age=365 * 86400)
    return response


# -- overview ----------------------------------------------------------------------------------

def _org_units(ctx: AppContext, scope: Scope) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        return accounts.list_org_units(conn, scope)


@router.get("/")
def overview(request: Request, ctx: ContextDep, user: UserDep,
             org_unit: Annotated[Optional[str], Query(max_length=12)] = None) -> Response:
    unit_id = parse_int(org_unit, "org_unit")
    scope = queries.narrow(user.principal.scope, unit_id)
    now = time.time()
    stale_after = ctx.settings.stale_after
    with ctx.db.read() as conn:
        max_age = counts.stored_max_age(ctx.settings.maintenance_interval)
        figures = queries.fleet_overview(conn, scope, now=now, stale_after=stale_after, max_age=max_age,
                                         live_limit=ctx.settings.overview_live_limit)
        rules = queries.rule_counts(conn, scope, now=now, max_age=max_age)
        trend = maintenance.daily_trend(conn, scope, since_day=maintenance.utc_day(now - TREND_DAYS * 86400))
        changes = queries.recent_changes(conn, scope, limit=12)
        ladder_counts = ladder.due_counts(conn, None if scope.unrestricted else sorted(scope.org_unit_ids or ()), now)
        stale = queries.stale_devices(conn, scope, cutoff=now - stale_after, limit=10)
        denied = access_store.denied_now(conn, scope, per_page=5)
        all_units = accounts.list_org_units(conn, user.principal.scope)
    trend_data = {"labels": [d["day"] for d in trend],
                  "percent": [round(100.0 * d["compliant"] / r, 1) if (r := d["compliant"] + d["not_compliant"]
                                                                       + d["error"]) else None for d in trend],
                  "stale": [d["stale"] for d in trend], "devices": [d["devices"] for d in trend]}
    return render.page("overview.html", context(
        request, ctx, user, "overview", summary=figures, fresh=figures, units=figures.units, trend=trend,
        rules=sorted(rules.rules.items()), rules_counted_at=rules.computed_at,
        trend_data=trend_data, changes=changes, stale=stale, org_units=all_units,
        org_unit_id=unit_id, ladder_counts=ladder_counts, denied=denied))


# -- devices -----------------------------------------------------------------------------------

@dataclass
class ListArgs:
    """The device-list query string, validated against the same allow-lists as the store."""

    status: Optional[str]
    rule: Optional[str]
    rule_status: str
    org_unit: Optional[int]
    os: Optional[str]
    platform: Optional[str]
    stale: Optional[bool]
    q: Optional[str]
    sort: str
    page: int
    per_page: int

    def device_filter(self, scope: Scope) -> fleet.DeviceFilter:
        unit = self.org_unit
        if unit is not None and not scope.allows(unit):
            unit = -1  # outside the scope: matches nothing, reveals nothing
        return fleet.DeviceFilter(compliance=self.status, failing_rule=self.rule, rule_status=self.rule_status,
                                  org_unit_id=unit, platform=self.platform, os_name=self.os, stale=self.stale,
                                  search=self.q)

    def query(self, **overrides: Any) -> str:
        values: dict[str, Any] = {"status": self.status, "rule": self.rule,
                                  "rule_status": None if self.rule_status == "fail" else self.rule_status,
                                  "org_unit": self.org_unit, "os": self.os, "platform": self.platform,
                                  "stale": None if self.stale is None else ("yes" if self.stale else "no"),
                                  "q": self.q, "sort": None if self.sort == fleet.DEFAULT_SORT else self.sort,
                                  "page": None if self.page == 1 else self.page,
                                  "per_page": None if self.per_page == 50 else self.per_page}
        values.update(overrides)
        return urllib.parse.urlencode({k: v for k, v in values.items() if v not in (None, "")})


def list_args(
    status: Annotated[Optional[str], Query(max_length=20, pattern=TEXT)] = None,
    rule: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
    rule_status: Annotated[Optional[str], Query(max_length=20, pattern=TEXT)] = None,
    org_unit: Annotated[Optional[str], Query(max_length=12)] = None,
    os: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
    platform: Annotated[Optional[str], Query(max_length=20, pattern=TEXT)] = None,
    stale: Annotated[Optional[str], Query(max_length=5)] = None,
    q: Annotated[Optional[str], Query(max_length=fleet.SEARCH_MAX_LENGTH, pattern=TEXT)] = None,
    sort: Annotated[Optional[str], Query(max_length=30, pattern=TEXT)] = None,
    page: Annotated[Optional[str], Query(max_length=9)] = None,
    per_page: Annotated[Optional[str], Query(max_length=4)] = None,
) -> ListArgs:
    if stale not in (None, "", "yes", "no"):
        raise bad_request(f"stale must be yes or no, found {stale!r}")
    if platform not in (None, "", "linux", "darwin", "windows"):
        raise bad_request(f"platform must be linux, darwin or windows, found {platform!r}")
    size = parse_int(per_page, "per_page") or 50
    if size not in PER_PAGE_CHOICES:
        raise bad_request(f"per_page must be one of {', '.join(map(str, PER_PAGE_CHOICES))}, found {size}")
    args = ListArgs(status=status or None, rule=rule or None, rule_status=rule_status or "fail",
                    org_unit=parse_int(org_unit, "org_unit"), os=os or None, platform=platform or None,
                    stale=None if not stale else stale == "yes", q=(q or "").strip() or None,
                    sort=sort or fleet.DEFAULT_SORT, page=parse_int(page, "page", maximum=1_000_000) or 1,
                    per_page=size)
    try:
        fleet.parse_sort(args.sort)
        args.device_filter(Scope.everything()).validate()
    except fleet.QueryError as exc:
        raise bad_request(str(exc)) from exc
    return args


ListArgsDep = Annotated[ListArgs, Depends(list_args)]

# (sort key, label key) of the sortable columns, in table order.
SORTABLE = (("hostname", "devices.hostname"), ("user", "devices.user"), ("serial", "devices.serial"),
            ("compliance", "devices.status"), ("fail_count", "devices.failing"), ("platform", "devices.os"),
            ("last_seen", "devices.last_seen"))


@router.get("/devices")
def device_list(request: Request, ctx: ContextDep, user: UserDep, args: ListArgsDep) -> Response:
    scope = user.principal.scope
    now = time.time()
    flt = args.device_filter(scope)
    with ctx.db.read() as conn:
        known = counts.list_total(conn, scope, flt, now=now, stale_after=ctx.settings.stale_after,
                                  max_age=counts.stored_max_age(ctx.settings.maintenance_interval),
                                  live_limit=ctx.settings.overview_live_limit)
        result = fleet.list_devices(conn, scope, flt, now=now, stale_after=ctx.settings.stale_after,
                                    sort=args.sort, page=args.page, per_page=args.per_page,
                                    known_total=None if known is None else known[0])
        partial = bool(request.headers.get("hx-request")) and not request.headers.get("hx-history-restore-request")
        extra: dict[str, Any] = {}
        if not partial:
            extra = {"org_units": accounts.list_org_units(conn, scope), "rule_ids": queries.rule_ids(conn, scope),
                     "os_names": queries.os_names(conn, scope)}
    data = context(request, ctx, user, "devices", result=result, args=args, sortable=SORTABLE,
                   counted_at=None if known is None else known[1],
                   per_page_choices=PER_PAGE_CHOICES, **extra)
    return render.page("_device_table.html" if partial else "devices.html", data)


def _export_audit(ctx: AppContext, request: Request, user: auth.WebUser, action: str, args: ListArgs) -> None:
    with ctx.db.write() as conn:
        audit.record(conn, actor=user.principal.actor, action=action, remote_addr=audit_address(request),
                     details={"via": "dashboard", "filters": args.query(page=None, per_page=None)})


def _stamp() -> str:
    return datetime.now(tz=timezone.utc).strftime("%Y%m%d-%H%M")


@router.get("/devices/export.csv")
def export_devices(request: Request, ctx: ContextDep, user: UserDep, args: ListArgsDep) -> Response:
    _export_audit(ctx, request, user, "devices.export", args)
    scope = user.principal.scope

    return streamed_export(ctx.db, lambda conn: fleet.iter_devices(
        conn, scope, args.device_filter(scope), now=time.time(), stale_after=ctx.settings.stale_after,
        sort=args.sort), EXPORT_COLUMNS, "csv", f"devices-{_stamp()}")


@router.get("/devices/checks.csv")
def export_checks(request: Request, ctx: ContextDep, user: UserDep, args: ListArgsDep) -> Response:
    _export_audit(ctx, request, user, "checks.export", args)
    scope = user.principal.scope

    return streamed_export(ctx.db, lambda conn: queries.iter_check_states(
        conn, scope, args.device_filter(scope), now=time.time(), stale_after=ctx.settings.stale_after),
        queries.CHECK_EXPORT_COLUMNS, "csv", f"check-states-{_stamp()}")


# -- one device --------------------------------------------------------------------------------

DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID)]


def _device_or_404(ctx: AppContext, user: auth.WebUser, device_id: str, t: Translator) -> dict[str, Any]:
    with ctx.db.read() as conn:
        device = fleet.get_device(conn, user.principal.scope, device_id, now=time.time(),
                                  stale_after=ctx.settings.stale_after)
    if device is None:
        raise HTTPException(status_code=404, detail=t("device.not_found"))
    return device


@router.get("/devices/{device_id}")
def device_detail(request: Request, ctx: ContextDep, user: UserDep, device_id: DeviceIdPath,
                  history_page: Annotated[Optional[str], Query(max_length=9)] = None) -> Response:
    t = Translator(language(request))
    device = _device_or_404(ctx, user, device_id, t)
    page = parse_int(history_page, "history_page", maximum=1_000_000) or 1
    with ctx.db.read() as conn:
        checks = fleet.device_checks(conn, device)
        history = fleet.device_history(conn, device_id, page=page, per_page=25)
        reports = fleet.device_reports(conn, device_id, limit=10)
        notices = device_notices.list_notices(conn, device_id, limit=20)
        machine = [d for d in enrolment.machine_enrolments(conn, device["machine_id"])
                   if user.principal.scope.allows(int(d["org_unit_id"]))]
        events = enrolment.enrolment_events(conn, [d["id"] for d in machine])
        ladders = {item["rule_id"]: item for item in ladder.device_ladders(conn, [device_id])[device_id]}
        exceptions = ladder.active_exceptions(conn, device_id, int(device["org_unit_id"]))
    order = {"fail": 0, "error": 1, "warn": 2, "pass": 3, "not_applicable": 4}
    checks.sort(key=lambda c: (order.get(c["status"], 5), c["rule_id"]))
    access = device_access(ctx, device_id)
    return render.page("device.html", context(request, ctx, user, "devices", device=device, checks=checks,
                                              history=history, reports=reports, notices=notices, machine=machine,
                                              enrolment_events=events, ladders=ladders, exceptions=exceptions,
                                              access=access))


@router.post("/devices/{device_id}/approve")
def approve(request: Request, ctx: ContextDep, user: AdminCsrfDep, device_id: DeviceIdPath) -> Response:
    return _decide(request, ctx, user, device_id, approve=True)


@router.post("/devices/{device_id}/reject")
def reject(request: Request, ctx: ContextDep, user: AdminCsrfDep, device_id: DeviceIdPath) -> Response:
    return _decide(request, ctx, user, device_id, approve=False)


def _decide(request: Request, ctx: AppContext, user: Any, device_id: str, approve: bool) -> Response:
    """An admin's decision on a pending re-enrolment (the same store functions as the API's)."""
    t = Translator(language(request))
    device = _device_or_404(ctx, user, device_id, t)
    with ctx.db.write() as conn:
        try:
            if approve:
                replaced = enrolment.approve_pending(conn, device_id, time.time())
            else:
                enrolment.reject_pending(conn, device_id, time.time())
                replaced = ()
        except enrolment.EnrolmentError as exc:
            raise HTTPException(status_code=409, detail=t("device.not_pending")) from exc
        enrolment.record_decision(conn, user.principal.actor, device, approve, replaced, audit_address(request))
    return RedirectResponse(f"/devices/{device_id}", status_code=303)


@router.get("/devices/{device_id}/revoke")
def revoke_confirm(request: Request, ctx: ContextDep, user: AdminViewDep, device_id: DeviceIdPath) -> Response:
    device = _device_or_404(ctx, user, device_id, Translator(language(request)))
    return render.page("revoke.html", context(request, ctx, user, "devices", device=device))


@router.post("/devices/{device_id}/revoke")
def revoke(request: Request, ctx: ContextDep, user: AdminCsrfDep, device_id: DeviceIdPath,
           confirm: Annotated[str, Form(max_length=300)] = "") -> Response:
    t = Translator(language(request))
    device = _device_or_404(ctx, user, device_id, t)
    if confirm.strip() != device["hostname"]:
        raise bad_request(t("revoke.mismatch"))
    with ctx.db.write() as conn:
        if not enrolment.revoke_device(conn, device_id, time.time()):
            raise HTTPException(status_code=409, detail=t("revoke.already", state=device["state"]))
        audit.record(conn, actor=user.principal.actor, action="device.revoke", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=audit_address(request),
                     details={"hostname": device["hostname"], "via": "dashboard"})
    return RedirectResponse(f"/devices/{device_id}?revoked=1", status_code=303)


# -- printable report --------------------------------------------------------------------------

def _day(value: Optional[str], name: str, default: float) -> float:
    if not value:
        return default
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError as exc:
        raise bad_request(f"{name} must be a date as YYYY-MM-DD, found {value[:40]!r}") from exc


@router.get("/report")
def report(request: Request, ctx: ContextDep, user: UserDep,
           org_unit: Annotated[Optional[str], Query(max_length=12)] = None,
           since: Annotated[Optional[str], Query(max_length=10)] = None,
           until: Annotated[Optional[str], Query(max_length=10)] = None) -> Response:
    now = time.time()
    unit_id = parse_int(org_unit, "org_unit")
    start = _day(since, "since", now - TREND_DAYS * 86400)
    end = _day(until, "until", now) + (86400 if until else 0)
    if end <= start:
        raise bad_request("the period must end after it starts: choose an 'until' date after 'since'")
    if end - start > 366 * 86400:
        raise bad_request("the period is limited to 366 days: choose a shorter period")
    scope = queries.narrow(user.principal.scope, unit_id)
    with ctx.db.read() as conn:
        # Today's figures: one count (live, or the maintained one of a large fleet) for both tables.
        per_unit, counted_at = counts.stored_or_live(
            conn, scope, now=now, stale_after=ctx.settings.stale_after,
            max_age=counts.stored_max_age(ctx.settings.maintenance_interval),
            live_limit=ctx.settings.overview_live_limit)
        summary = summary_store.summary_of(conn, scope, per_unit, counted_at, stale_after=ctx.settings.stale_after)
        fresh = queries.overview_of(conn, per_unit, counted_at)
        trend = [d for d in maintenance.daily_trend(conn, scope, since_day=maintenance.utc_day(start))
                 if d["day"] < maintenance.utc_day(end) or d["day"] == maintenance.utc_day(end - 1)]
        changes = change_counts.changes_in_period(conn, scope, since=start, until=end)
        failing = queries.non_compliant_devices(conn, scope, limit=200)
        all_units = accounts.list_org_units(conn, user.principal.scope)
    unit_name = next((u["name"] for u in all_units if u["id"] == unit_id), None)
    return render.page("report.html", context(
        request, ctx, user, "report", summary=summary, fresh=fresh, trend=trend, changes=changes, failing=failing,
        counts_age_minutes=None if counted_at is None else int(max(0.0, now - counted_at) // 60),
        org_units=all_units, org_unit_id=unit_id, unit_name=unit_name, since=maintenance.utc_day(start),
        until=maintenance.utc_day(end - 1), rules=sorted(summary.rules.items())))
