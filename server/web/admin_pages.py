"""Policies (versions, diff, upload with dry-run, assignment), enrolment tokens and the audit log."""

from __future__ import annotations

import difflib
import json
import time
from typing import Annotated, Any, Optional

import yaml
from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from agent.policy import Policy, PolicyError, load_policy_text
from server.api.deps import ContextDep, deny
from server.context import AppContext
from server.settings import SettingsError, parse_duration
from server.store import accounts, audit, enrolment
from server.store import policies as policy_store
from server.web import auth, queries, render
from server.web.common import (
    AdminCsrfDep,
    AdminViewDep,
    UserDep,
    WebRoute,
    audit_address,
    bad_request,
    context,
    language,
    parse_int,
)
from server.web.i18n import Translator

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_POLICY_BYTES = 1_000_000
TEXT = r"^[^\x00-\x1f\x7f]*$"


def canonical_yaml(document: str) -> str:
    """A stored version as YAML with sorted keys: equal policies read equal, so diffs show real changes."""
    return yaml.safe_dump(json.loads(document), sort_keys=True, allow_unicode=True, default_flow_style=False,
                          width=100)


def diff_lines(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """(kind, text) per line of a unified diff; kind is add, del, hunk or same."""
    out = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, lineterm="", n=3):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out


def _visible_policies(ctx: AppContext, user: auth.WebUser) -> list[dict[str, Any]]:
    with ctx.db.read() as conn:
        rows = policy_store.list_policies(conn)
        if not user.principal.scope.unrestricted:
            visible = policy_store.policy_ids_in_scope(conn, user.principal.scope)
            rows = [r for r in rows if r["policy_id"] in visible]
    return rows


@router.get("/policies")
def policies(request: Request, ctx: ContextDep, user: UserDep) -> Response:
    rows = _visible_policies(ctx, user)
    with ctx.db.read() as conn:
        units = accounts.list_org_units(conn, user.principal.scope)
        default_id = policy_store.default_policy_id(conn)
    ids = sorted({r["policy_id"] for r in rows})
    return render.page("policies.html", context(request, ctx, user, "policies", policies=rows, policy_ids=ids,
                                                org_units=units, default_id=default_id,
                                                can_upload=user.is_admin and user.principal.scope.unrestricted))


def _stored_or_404(ctx: AppContext, user: auth.WebUser, pk: int, t: Translator) -> tuple[dict[str, Any], str]:
    row = next((r for r in _visible_policies(ctx, user) if r["id"] == pk), None)
    if row is None:
        raise HTTPException(status_code=404, detail=t("policy.not_found"))
    with ctx.db.read() as conn:
        stored = policy_store.get_policy(conn, pk)
    assert stored is not None
    return row, stored.policy.canonical_text()


@router.get("/policies/{pk}")
def policy_version(request: Request, ctx: ContextDep, user: UserDep, pk: Annotated[int, Path(ge=1, le=2**31 - 1)],
                   against: Annotated[Optional[str], Query(max_length=12)] = None) -> Response:
    t = Translator(language(request))
    row, document = _stored_or_404(ctx, user, pk, t)
    versions = [r for r in _visible_policies(ctx, user) if r["policy_id"] == row["policy_id"]]
    other_pk = parse_int(against, "against")
    if other_pk is None:
        older = [r for r in versions if r["version"] < row["version"]]
        other_pk = older[0]["id"] if older else None
    diff: list[tuple[str, str]] = []
    other = None
    if other_pk is not None and other_pk != pk:
        other, other_doc = _stored_or_404(ctx, user, other_pk, t)
        diff = diff_lines(canonical_yaml(other_doc), canonical_yaml(document),
                          f"{other['policy_id']}@{other['version']}", f"{row['policy_id']}@{row['version']}")
    with ctx.db.read() as conn:
        units = accounts.list_org_units(conn, user.principal.scope)
    return render.page("policy.html", context(request, ctx, user, "policies", row=row, yaml_text=canonical_yaml(document),
                                              versions=versions, other=other, diff=diff, org_units=units,
                                              dry=None, dry_unit=None))


@router.get("/policies/{pk}/dry-run")
def stored_dry_run(request: Request, ctx: ContextDep, user: UserDep, pk: Annotated[int, Path(ge=1, le=2**31 - 1)],
                   org_unit: Annotated[Optional[str], Query(max_length=12)] = None) -> Response:
    """How this stored version would judge the devices of an org unit, before it is assigned there."""
    t = Translator(language(request))
    row, document = _stored_or_404(ctx, user, pk, t)
    unit_id = parse_int(org_unit, "org_unit")
    scope = queries.narrow(user.principal.scope, unit_id)
    with ctx.db.read() as conn:
        stored = policy_store.get_policy(conn, pk)
        assert stored is not None
        dry = queries.dry_run(conn, scope, stored.policy, now=time.time())
        units = accounts.list_org_units(conn, user.principal.scope)
    versions = [r for r in _visible_policies(ctx, user) if r["policy_id"] == row["policy_id"]]
    return render.page("policy.html", context(request, ctx, user, "policies", row=row, yaml_text=canonical_yaml(document),
                                              versions=versions, other=None, diff=[], org_units=units, dry=dry,
                                              dry_unit=unit_id))


def _require_unscoped(ctx: AppContext, request: Request, user: auth.WebUser, action: str) -> None:
    if not user.principal.scope.unrestricted:
        raise deny(ctx, request, user.principal, action, Translator(language(request))("policy.scoped_admin"))


async def _document(document: str, file: Optional[UploadFile]) -> str:
    if file is not None and file.filename:
        raw = await file.read(MAX_POLICY_BYTES + 1)
        if len(raw) > MAX_POLICY_BYTES:
            raise bad_request(f"the policy file is over {MAX_POLICY_BYTES} bytes: a policy is a short YAML document")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad_request(f"the policy file is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    return document


@router.post("/policies/check")
async def check_policy(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                       document: Annotated[str, Form(max_length=MAX_POLICY_BYTES)] = "",
                       file: Annotated[Optional[UploadFile], File()] = None) -> Response:
    """Validate an uploaded document (line-numbered problems) and dry-run it on stored facts; nothing
    is stored until the admin confirms."""
    await run_in_threadpool(_require_unscoped, ctx, request, user, "policy.check")
    text = await _document(document, file)
    return await run_in_threadpool(_check_policy, request, ctx, user, text)


def _check_policy(request: Request, ctx: AppContext, user: auth.WebUser, text: str) -> Response:
    t = Translator(language(request))
    problems: list[str] = []
    policy: Optional[Policy] = None
    if not text.strip():
        problems = [t("upload.empty")]
    else:
        try:
            policy = load_policy_text(text, "upload")
        except PolicyError as exc:
            problems = list(exc.problems)
    dry = None
    diff: list[tuple[str, str]] = []
    previous = None
    if policy is not None:
        with ctx.db.read() as conn:
            dry = queries.dry_run(conn, user.principal.scope, policy, now=time.time())
            latest = policy_store.latest_pk(conn, policy.id)
            if latest is not None:
                stored = policy_store.get_policy(conn, latest)
                assert stored is not None
                previous = stored.ref
                diff = diff_lines(canonical_yaml(stored.policy.canonical_text()),
                                  canonical_yaml(policy.canonical_text()), previous, "upload")
    return render.page("policy_check.html", context(request, ctx, user, "policies", problems=problems, policy=policy,
                                                    document=text, dry=dry, diff=diff, previous=previous),
                       status_code=400 if problems else 200)


@router.post("/policies/store")
def store_policy(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                 document: Annotated[str, Form(max_length=MAX_POLICY_BYTES)] = "",
                 make_default: Annotated[str, Form(max_length=5)] = "") -> Response:
    _require_unscoped(ctx, request, user, "policy.push")
    try:
        policy = load_policy_text(document, "upload")
    except PolicyError as exc:
        raise bad_request("; ".join(exc.problems)) from exc
    with ctx.db.write() as conn:
        try:
            pk, created = policy_store.push_policy(conn, policy, created_by=user.principal.actor)
            if make_default:
                policy_store.set_default_policy(conn, policy.id)
        except policy_store.PolicyStoreError as exc:
            raise bad_request(str(exc)) from exc
        audit.record(conn, actor=user.principal.actor, action="policy.push", target=f"{policy.id}@{policy.version}",
                     remote_addr=audit_address(request), details={"digest": policy.digest(), "created": created,
                                                                  "make_default": bool(make_default),
                                                                  "via": "dashboard"})
    ctx.policy_changed()
    return RedirectResponse(f"/policies/{pk}?stored=1", status_code=303)


@router.post("/policies/assign")
def assign_policy(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                  org_unit: Annotated[str, Form(max_length=12)] = "",
                  policy_id: Annotated[str, Form(max_length=200, pattern=TEXT)] = "") -> Response:
    t = Translator(language(request))
    unit_id = parse_int(org_unit, "org_unit")
    if unit_id is None or not user.principal.scope.allows(unit_id):
        raise HTTPException(status_code=404, detail=t("policy.unit_not_found"))
    with ctx.db.write() as conn:
        try:
            policy_store.assign_policy(conn, unit_id, policy_id or None)
        except policy_store.PolicyStoreError as exc:
            raise bad_request(str(exc)) from exc
        audit.record(conn, actor=user.principal.actor, action="policy.assign", target=str(unit_id),
                     org_unit_id=unit_id, remote_addr=audit_address(request),
                     details={"policy_id": policy_id or None, "via": "dashboard"})
    ctx.policy_changed()
    return RedirectResponse("/policies?assigned=1", status_code=303)


# -- enrolment tokens --------------------------------------------------------------------------

def _tokens_page(request: Request, ctx: AppContext, user: auth.WebUser, *, created: Optional[dict[str, Any]] = None,
                 status: int = 200) -> Response:
    show_all = request.query_params.get("all") == "1"
    with ctx.db.read() as conn:
        rows = enrolment.list_enroll_tokens(conn, user.principal.scope, include_inactive=show_all)
        names = accounts.org_unit_names(conn, [r["org_unit_id"] for r in rows])
        units = accounts.list_org_units(conn, user.principal.scope)
    tokens = [{**r, "org_unit": names.get(r["org_unit_id"], "")} for r in rows]
    return render.page("tokens.html", context(request, ctx, user, "tokens", tokens=tokens, org_units=units,
                                              created=created, show_all=show_all), status_code=status)


@router.get("/tokens")
def tokens(request: Request, ctx: ContextDep, user: AdminViewDep) -> Response:
    return _tokens_page(request, ctx, user)


@router.post("/tokens")
def create_token(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                 org_unit: Annotated[str, Form(max_length=200)] = "",
                 uses: Annotated[str, Form(max_length=9)] = "",
                 expires: Annotated[str, Form(max_length=20)] = "7d") -> Response:
    t = Translator(language(request))
    try:
        lifetime = parse_duration(expires, "expires")
        accounts.check_org_unit_name(org_unit.strip())
    except (SettingsError, accounts.AccountError) as exc:
        raise bad_request(str(exc)) from exc
    uses_allowed = parse_int(uses, "uses", maximum=1_000_000)
    name = org_unit.strip()
    with ctx.db.read() as conn:
        existing = accounts.org_unit_id(conn, name)
    if not user.principal.scope.unrestricted and (existing is None or not user.principal.scope.allows(existing)):
        raise deny(ctx, request, user.principal, "enroll_token.create", t("tokens.scoped"), target=name)
    with ctx.db.write() as conn:
        unit_id = accounts.ensure_org_unit(conn, name)
        try:
            token_id, token, expires_at = enrolment.create_enroll_token(
                conn, unit_id, uses_allowed=uses_allowed, lifetime=lifetime, created_by=user.principal.actor)
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        audit.record(conn, actor=user.principal.actor, action="enroll_token.create", target=str(token_id),
                     org_unit_id=unit_id, remote_addr=audit_address(request),
                     details={"org_unit": name, "uses": uses_allowed, "expires": expires, "via": "dashboard"})
    # The secret is in this one response and nowhere else (stored hashed); the page says so.
    response = _tokens_page(request, ctx, user, created={"token": token, "org_unit": name, "expires_at": expires_at},
                            status=201)
    return response


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, ctx: ContextDep, user: AdminCsrfDep,
                 token_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    t = Translator(language(request))
    with ctx.db.write() as conn:
        row = enrolment.get_enroll_token(conn, token_id)
        if row is None or not user.principal.scope.allows(row["org_unit_id"]):
            raise HTTPException(status_code=404, detail=t("tokens.not_found"))
        enrolment.revoke_enroll_token(conn, token_id)
        audit.record(conn, actor=user.principal.actor, action="enroll_token.revoke", target=str(token_id),
                     org_unit_id=row["org_unit_id"], remote_addr=audit_address(request), details={"via": "dashboard"})
    return RedirectResponse("/tokens?revoked=1", status_code=303)


# -- audit log ---------------------------------------------------------------------------------

@router.get("/audit")
def audit_page(request: Request, ctx: ContextDep, user: AdminViewDep,
               action: Annotated[Optional[str], Query(max_length=100, pattern=TEXT)] = None,
               actor: Annotated[Optional[str], Query(max_length=200, pattern=TEXT)] = None,
               page: Annotated[Optional[str], Query(max_length=9)] = None) -> Response:
    number = parse_int(page, "page", maximum=1_000_000) or 1
    with ctx.db.read() as conn:
        result = audit.list_entries(conn, user.principal.scope, page=number, per_page=50, action=action or None,
                                    actor=actor or None)
    return render.page("audit.html", context(request, ctx, user, "audit", result=result,
                                             action=action or "", actor=actor or ""))
