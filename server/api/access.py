"""Access decisions over HTTP: gates fetch signed decisions and report what they decided; agents ask
for theirs; admins see why a device is denied, link its certificates and grant exceptions.

Gate endpoints take ``Authorization: Bearer tpg_...`` (a gate token: it fetches decisions and reports
back, nothing else; it cannot authenticate to the admin API). Decisions are compact JWS signed with the
server key (gate/decision.py) and verifiable offline with the public key alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from agent import protocol
from agent.policy import Policy
from gate import decision as tokens
from server import device_ca
from server.access import decide, describe
from server.actions import ladder
from server.api.admin import DeviceIdPath, device_or_404, streamed_export
from server.api.deps import AdminDep, ContextDep, PrincipalDep, client_address, limit_ip, signed_headers
from server.api.models import Problem
from server.context import AppContext
from server.store import access as store
from server.store import audit, fleet
from server.store.accounts import Principal
from server.store.ingest_sql import Driver

log = logging.getLogger(__name__)

gate_router = APIRouter(prefix="/api/v1/gate", tags=["gate"],
                        responses={401: {"model": Problem}, 429: {"model": Problem}})
agent_router = APIRouter(prefix="/api/v1", tags=["agent"])
admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"],
                         responses={401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}})

Fingerprint = Annotated[str, Query(min_length=64, max_length=95, pattern=r"^[0-9A-Fa-f:]+$",
                                   description="SHA-256 of the client certificate (hex, colons allowed)")]


class SignedDecision(BaseModel):
    device_id: str
    decision: Literal["allow", "deny"]
    since: float
    expires_at: float
    causes: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    exception: Optional[dict[str, Any]] = None
    token: str = Field(description="compact JWS (alg Ed25519) signed by the collector's server key")


class CertificateRequest(BaseModel):
    csr: str = Field(min_length=1, max_length=16384, description="PEM certificate signing request (the device's "
                                                                    "TLS key; its subject is ignored)")


class DeviceCertificate(BaseModel):
    certificate: str = Field(description="PEM client certificate, CN = device id")
    ca: str = Field(description="PEM device CA certificate")
    fingerprint: str
    not_after: float = Field(description="renew before this (epoch seconds)")


class GateDecisionIn(BaseModel):
    at: float = Field(ge=0, le=2 ** 40)
    fingerprint: str = Field(min_length=64, max_length=95, pattern=r"^[0-9A-Fa-f:]+$")
    event: Literal["connect", "reauth", "disconnect", "request"]
    outcome: Literal["allow", "deny"]
    reason: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")
    detail: str = Field(default="", max_length=1000, pattern=r"^[^\x00]*$")


class GateDecisionBatch(BaseModel):
    decisions: list[GateDecisionIn] = Field(max_length=1000)


class GateAck(BaseModel):
    stored: int


class CredentialIn(BaseModel):
    fingerprint: str = Field(min_length=64, max_length=95, pattern=r"^[0-9A-Fa-f:]+$")
    kind: Literal["vpn"] = "vpn"
    label: str = Field(default="", max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")


class ExceptionIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")
    expires_at: float = Field(gt=0, le=2 ** 40, description="epoch seconds; at most 90 days ahead")


class DeviceAccess(BaseModel):
    device_id: str
    decision: Literal["allow", "deny"]
    since: float
    causes: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    exception: Optional[dict[str, Any]] = None
    credentials: list[dict[str, Any]]
    last_gate_decision: Optional[dict[str, Any]] = None


class DeniedPage(BaseModel):
    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int
    pages: int


GATE_EXPORT_COLUMNS = ("at", "gate", "device_id", "fingerprint", "event", "outcome", "reason", "detail",
                       "received_at")


def _now() -> float:
    return time.time()


def _titles(policy: Policy) -> dict[str, dict[str, str]]:
    return {rule.id: dict(rule.title) for rule in policy.rules}


def issue_many(ctx: AppContext, conn: Connection, driver: Driver, device_ids: Sequence[str],
               now: float) -> dict[str, dict[str, Any]]:
    """Decide for each known device, keep the result (and since when it holds) and sign it; the
    noncompliance ladder (its blocks, and which severities it blocks) goes into each decision. ``driver``:
    a cursor in ``conn``'s transaction, for the decision's own statements."""
    answers: dict[str, dict[str, Any]] = {}
    # org unit -> (the severities its ladder blocks, its policy's rule titles)
    units: dict[int, tuple[frozenset[str], dict[str, dict[str, str]]]] = {}
    lifetime = ctx.settings.decision_lifetime
    server_key_id = protocol.key_id(ctx.server_public_key)
    for device_id, inputs in store.load_inputs(driver, device_ids, now).items():
        unit = inputs.device.org_unit_id
        if unit not in units:
            stored = ctx.ingestor.policies.get(conn, unit)
            units[unit] = (frozenset(), {}) if stored is None else (
                ladder.block_severities(ladder.ladder_of(stored.policy, inputs.unit_ladder)), _titles(stored.policy))
        governed, titles = units[unit]
        result = decide(inputs.facts, now=now, stale_limit=ctx.settings.access_stale_limit,
                        blocked=inputs.blocked, exception=inputs.exception, ladder_blocks=governed)
        since = store.record_state(driver, inputs.device, result, inputs.previous, now)
        causes = [describe(c, titles) for c in result.causes]
        warnings = [describe(w, titles) for w in result.warnings]
        token = tokens.sign(ctx.server_key, server_key_id=server_key_id,
                            device_id=device_id, device_key_id=inputs.device.key_id, decision=result.decision,
                            since=since, now=now, lifetime=lifetime, fingerprints=inputs.fingerprints,
                            causes=causes, warnings=warnings, hostname=inputs.device.hostname,
                            exception=result.exception)
        answers[device_id] = {"device_id": device_id, "decision": result.decision, "since": since,
                              "expires_at": float(int(now + lifetime)), "causes": causes, "warnings": warnings,
                              "exception": result.exception, "token": token}
    return answers


def issue(ctx: AppContext, conn: Connection, device_id: str, now: float) -> Optional[dict[str, Any]]:
    """One device's signed decision (see issue_many); None for an unknown device."""
    with Driver.on(conn) as driver:
        return issue_many(ctx, conn, driver, [device_id], now).get(device_id)


def decisions_for_upload(ctx: AppContext, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The signed decision of each device whose reports were just accepted (the upload answer's
    ``access`` key); the reports are already stored whatever happens here."""
    if not device_ids:
        return {}
    # The ingest's kind of transaction (Database.write_driver): SQLAlchemy's own begin, commit and
    # reset cost more CPU than the decision's statements (~0.15 ms per evaluated batch-1 report).
    with ctx.db.write_driver() as transaction:
        return issue_many(ctx, transaction.conn, Driver(transaction.cursor, transaction.pyformat), device_ids,
                          _now())


# -- gates ------------------------------------------------------------------------------------

def _gate(ctx: AppContext, request: Request) -> str:
    limit_ip(request, ctx)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    name = None
    if scheme.lower() == "bearer" and token.strip():
        with ctx.db.read() as conn:
            name = store.authenticate_gate(conn, token.strip())
    if name is None:
        raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                            detail="a gate token is required: `Authorization: Bearer tpg_...` "
                                   "(create one with `teleposture-server gate-token create NAME`)")
    return name


def _decision_for_fingerprint(ctx: AppContext, request: Request, fingerprint: str) -> dict[str, Any]:
    _gate(ctx, request)
    try:
        normalised = tokens.normalise_fingerprint(fingerprint)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    with ctx.db.write() as conn:
        device_id = store.device_for_fingerprint(conn, normalised)
        signed = None if device_id is None else issue(ctx, conn, device_id, _now())
    if signed is None:
        raise HTTPException(status_code=404, detail="no device is linked to this certificate")
    return signed


@gate_router.get("/decision", response_model=SignedDecision, responses={400: {"model": Problem},
                                                                         404: {"model": Problem}})
async def gate_decision(request: Request, ctx: ContextDep, fingerprint: Fingerprint) -> dict[str, Any]:
    """The signed decision of the device linked to a client certificate (SHA-256 fingerprint)."""
    return await run_in_threadpool(_decision_for_fingerprint, ctx, request, fingerprint)


def _store_gate_decisions(ctx: AppContext, request: Request, batch: GateDecisionBatch) -> dict[str, int]:
    gate = _gate(ctx, request)
    events = []
    for item in batch.decisions:
        try:
            fingerprint = tokens.normalise_fingerprint(item.fingerprint)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        events.append({**item.model_dump(), "fingerprint": fingerprint})
    with ctx.db.write() as conn:
        stored = store.record_gate_decisions(conn, gate, events, _now())
    return {"stored": stored}


@gate_router.post("/decisions", response_model=GateAck, responses={400: {"model": Problem}})
async def gate_report(request: Request, ctx: ContextDep, batch: GateDecisionBatch) -> dict[str, int]:
    """What a gate decided (connections allowed, refused, disconnected), for the dashboard and exports."""
    return await run_in_threadpool(_store_gate_decisions, ctx, request, batch)


# -- agents ------------------------------------------------------------------------------------

def _verified_device(conn: Connection, device_id: str, method: str, path: str, timestamp: str,
                     signature: str) -> store.DeviceRow:
    device = store.device_row(conn, device_id)
    if device is None:
        raise HTTPException(status_code=401, detail="unknown device: enrol it first")
    try:
        protocol.check_request_signature(protocol.load_public_key(store.device_public_key(conn, device_id)),
                                         method, path, timestamp, signature)
    except protocol.ProtocolError as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from exc
    return device


def _agent_decision(ctx: AppContext, device_id: str, method: str, path: str, timestamp: str,
                    signature: str) -> dict[str, Any]:
    with ctx.db.write() as conn:
        _verified_device(conn, device_id, method, path, timestamp, signature)
        signed = issue(ctx, conn, device_id, _now())
    assert signed is not None  # the device row exists in this transaction
    return signed


@agent_router.get("/access", response_model=SignedDecision, responses={401: {"model": Problem},
                                                                        429: {"model": Problem}})
async def agent_access(request: Request, ctx: ContextDep) -> dict[str, Any]:
    """The device's own signed access decision, on demand. Requests are signed by the device."""
    device_id, timestamp, signature = signed_headers(request, ctx)
    return await run_in_threadpool(_agent_decision, ctx, device_id, request.method, request.url.path, timestamp,
                                   signature)


def _device_ca(ctx: AppContext) -> device_ca.DeviceCA:
    data_dir = ctx.settings.data_dir.resolve()
    with _ca_lock:
        found = _device_cas.get(data_dir)
        if found is None:
            found = _device_cas[data_dir] = device_ca.load_or_create(data_dir)
    return found


_device_cas: dict[FilePath, device_ca.DeviceCA] = {}
_ca_lock = threading.Lock()


def _issue_certificate(ctx: AppContext, device_id: str, method: str, path: str, timestamp: str, signature: str,
                       csr: str) -> dict[str, Any]:
    ca = _device_ca(ctx)
    now = _now()
    with ctx.db.write() as conn:
        device = _verified_device(conn, device_id, method, path, timestamp, signature)
        if device.state != "active":
            raise HTTPException(status_code=403, detail=f"device is {device.state}: no certificate is issued")
        try:
            issued = ca.issue(csr, device_id, now, ctx.settings.device_cert_lifetime)
        except device_ca.CertificateRequestError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        store.replace_device_certificate(conn, device_id, issued.fingerprint, issued.not_after, now)
    return {"certificate": issued.pem, "ca": ca.pem, "fingerprint": issued.fingerprint,
            "not_after": issued.not_after}


@agent_router.post("/device-certificate", response_model=DeviceCertificate,
                   responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem},
                              429: {"model": Problem}})
async def device_certificate(request: Request, ctx: ContextDep, body: CertificateRequest) -> dict[str, Any]:
    """Issue (or renew) the device's short-lived client TLS certificate from the device CA. Signed by the
    device like GET /policy; a revoked or replaced device gets none."""
    device_id, timestamp, signature = signed_headers(request, ctx)
    return await run_in_threadpool(_issue_certificate, ctx, device_id, request.method, request.url.path, timestamp,
                                   signature, body.csr)


class VpnCertificateIn(BaseModel):
    fingerprint: str = Field(min_length=64, max_length=95, pattern=r"^[0-9A-Fa-f:]+$")
    label: str = Field(default="", max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")


class VpnCertificateOut(BaseModel):
    fingerprint: str
    device_id: str


def _register_vpn(ctx: AppContext, device_id: str, method: str, path: str, timestamp: str, signature: str,
                  body: VpnCertificateIn) -> dict[str, Any]:
    try:
        fingerprint = tokens.normalise_fingerprint(body.fingerprint)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    with ctx.db.write() as conn:
        device = _verified_device(conn, device_id, method, path, timestamp, signature)
        if device.state != "active":
            raise HTTPException(status_code=403, detail=f"device is {device.state}")
        try:
            store.link_credential(conn, device_id, fingerprint, "vpn", body.label, f"device:{device_id}", _now())
        except store.AccessStoreError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        audit.record(conn, actor=f"device:{device_id}", action="device.credential.register", target=device_id,
                     org_unit_id=device.org_unit_id, details={"fingerprint": fingerprint, "label": body.label})
    return {"fingerprint": fingerprint, "device_id": device_id}


@agent_router.post("/vpn-certificate", response_model=VpnCertificateOut,
                   responses={400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem},
                              409: {"model": Problem}, 429: {"model": Problem}})
async def register_vpn_certificate(request: Request, ctx: ContextDep, body: VpnCertificateIn) -> dict[str, Any]:
    """The device registers the SHA-256 of its VPN client certificate (signed by the device). A certificate
    already linked to another device is refused (409): an admin unlinks it there first."""
    device_id, timestamp, signature = signed_headers(request, ctx)
    return await run_in_threadpool(_register_vpn, ctx, device_id, request.method, request.url.path, timestamp,
                                   signature, body)


@gate_router.get("/device-ca", response_model=None,
                 responses={200: {"content": {"application/x-pem-file": {}}, "description": "the device CA (PEM)"}})
async def gate_device_ca(request: Request, ctx: ContextDep) -> PlainTextResponse:
    """The device CA certificate a reverse proxy trusts for client certificates."""
    await run_in_threadpool(_gate, ctx, request)
    ca = await run_in_threadpool(_device_ca, ctx)
    return PlainTextResponse(ca.pem, media_type="application/x-pem-file")


# -- admins -----------------------------------------------------------------------------------

def device_access(ctx: AppContext, device_id: str) -> Optional[dict[str, Any]]:
    """Decision, since, why, certificates and last gate decision of a device (the caller checked scope)."""
    with ctx.db.write() as conn:
        signed = issue(ctx, conn, device_id, _now())
        if signed is None:
            return None
        credentials = store.fingerprints(conn, device_id)
        last = store.last_gate_decision(conn, device_id)
    return {**{k: signed[k] for k in ("device_id", "decision", "since", "causes", "warnings", "exception")},
            "credentials": credentials, "last_gate_decision": last}


def _device_access(ctx: AppContext, principal: Principal, device_id: str) -> dict[str, Any]:
    device_or_404(ctx, principal, device_id)
    found = device_access(ctx, device_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no device {device_id} in your scope")
    return found


@admin_router.get("/devices/{device_id}/access", response_model=DeviceAccess, responses={404: {"model": Problem}})
def admin_device_access(ctx: ContextDep, principal: PrincipalDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """The device's access decision, since when and why, its certificates and the last gate decision."""
    return _device_access(ctx, principal, device_id)


@admin_router.post("/devices/{device_id}/credentials", response_model=DeviceAccess,
                   responses={400: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}})
def link_credential(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath,
                    body: CredentialIn) -> dict[str, Any]:
    """Link a VPN client certificate (SHA-256 fingerprint) to the device: gates identify it by it."""
    device = device_or_404(ctx, principal, device_id)
    try:
        fingerprint = tokens.normalise_fingerprint(body.fingerprint)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    with ctx.db.write() as conn:
        try:
            store.link_credential(conn, device_id, fingerprint, body.kind, body.label, principal.actor, _now())
        except store.AccessStoreError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="device.credential.link", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=client_address(request),
                     details={"fingerprint": fingerprint, "kind": body.kind, "label": body.label})
    return _device_access(ctx, principal, device_id)


@admin_router.delete("/devices/{device_id}/credentials/{fingerprint}", response_model=DeviceAccess,
                     responses={404: {"model": Problem}})
def unlink_credential(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath,
                      fingerprint: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> dict[str, Any]:
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.write() as conn:
        if not store.unlink_credential(conn, device_id, fingerprint):
            raise HTTPException(status_code=404, detail="this certificate is not linked to this device")
        audit.record(conn, actor=principal.actor, action="device.credential.unlink", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=client_address(request),
                     details={"fingerprint": fingerprint})
    return _device_access(ctx, principal, device_id)


@admin_router.post("/devices/{device_id}/access-exception", response_model=DeviceAccess,
                   responses={400: {"model": Problem}, 404: {"model": Problem}})
def grant_exception(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath,
                    body: ExceptionIn) -> dict[str, Any]:
    """Allow the device despite failing rules until ``expires_at``, for a stated reason (audited).
    A revoked or replaced device stays denied."""
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.write() as conn:
        try:
            store.add_exception(conn, device_id, body.reason, body.expires_at, principal.actor, _now())
        except store.AccessStoreError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        audit.record(conn, actor=principal.actor, action="device.access_exception.grant", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=client_address(request),
                     details={"reason": body.reason, "expires_at": body.expires_at})
    return _device_access(ctx, principal, device_id)


@admin_router.delete("/devices/{device_id}/access-exception", response_model=DeviceAccess,
                     responses={404: {"model": Problem}})
def end_exception(request: Request, ctx: ContextDep, principal: AdminDep, device_id: DeviceIdPath) -> dict[str, Any]:
    """End the device's running exceptions now (audited)."""
    device = device_or_404(ctx, principal, device_id)
    with ctx.db.write() as conn:
        ended = store.revoke_exceptions(conn, device_id, _now())
        if not ended:
            raise HTTPException(status_code=404, detail="this device has no running exception")
        audit.record(conn, actor=principal.actor, action="device.access_exception.end", target=device_id,
                     org_unit_id=device["org_unit_id"], remote_addr=client_address(request),
                     details={"ended": ended})
    return _device_access(ctx, principal, device_id)


@admin_router.get("/access/denied", response_model=DeniedPage)
def denied_devices(ctx: ContextDep, principal: PrincipalDep,
                   page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                   per_page: Annotated[int, Query(ge=1, le=fleet.MAX_PER_PAGE)] = 50) -> dict[str, Any]:
    """Devices denied now (as last decided), newest denial first."""
    with ctx.db.read() as conn:
        found = store.denied_now(conn, principal.scope, page=page, per_page=per_page)
    return {"items": found.items, "total": found.total, "page": found.page, "per_page": found.per_page,
            "pages": found.pages}


@admin_router.get("/gate-decisions/export", responses={200: {"content": {"text/csv": {}, "application/json": {}},
                                                             "description": "every matching gate decision"}})
def export_gate_decisions(request: Request, ctx: ContextDep, principal: PrincipalDep,
                          device_id: Annotated[Optional[str], Query(pattern=r"^[0-9a-fA-F-]{1,36}$")] = None,
                          outcome: Optional[Literal["allow", "deny"]] = None,
                          since: Annotated[Optional[float], Query(ge=0, le=2 ** 40)] = None,
                          format: Literal["csv", "json"] = "csv") -> StreamingResponse:  # noqa: A002 (API name)
    """Decisions the gates reported (newest first) as CSV or JSON, streamed."""
    with ctx.db.write() as conn:
        audit.record(conn, actor=principal.actor, action="gate_decisions.export", remote_addr=client_address(request),
                     details={"format": format, "device_id": device_id, "outcome": outcome, "since": since})
    return streamed_export(ctx.db, lambda conn: store.iter_gate_decisions(conn, principal.scope, device_id=device_id,
                                                                          outcome=outcome, since=since),
                           GATE_EXPORT_COLUMNS, format, "gate-decisions")
