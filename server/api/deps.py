"""Typed FastAPI dependencies and request checks shared by the agent and admin APIs and the dashboard."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from agent import protocol
from server.context import AppContext
from server.ratelimit import Limiter, retry_after_header
from server.store import accounts, audit
from server.store.accounts import Principal


async def get_context(request: Request) -> AppContext:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop per request for one read.
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def address_of(scope: Scope) -> str:
    """The client's address as the server gives it (after trusted proxy headers); "unknown" without one."""
    client = scope.get("client")
    host: str = client[0] if client else "unknown"
    return host


def client_address(request: Request) -> str:
    return address_of(request.scope)


def limit_ip(request: Request, ctx: AppContext, limiter: Optional[Limiter] = None) -> None:
    limit_address(client_address(request), ctx, limiter)


def limit_address(address: str, ctx: AppContext, limiter: Optional[Limiter] = None) -> None:
    """429 once ``address`` is over the per-address limit (``ctx.ip_limiter`` unless another is given)."""
    wait = (limiter or ctx.ip_limiter).take(address)
    if wait:
        raise HTTPException(status_code=429, detail=f"too many requests from this address: retry in {wait:.0f} s",
                            headers={"Retry-After": retry_after_header(wait)})


def signed_headers(request: Request, ctx: AppContext) -> tuple[str, str, str]:
    """Device id, timestamp and signature of a request signed by a device (GET /policy, access requests),
    after the per-address limit; 401 when a header is missing. The caller verifies the signature."""
    limit_ip(request, ctx)
    device_id = request.headers.get(protocol.HEADER_DEVICE)
    timestamp = request.headers.get(protocol.HEADER_TIMESTAMP)
    signature = request.headers.get(protocol.HEADER_SIGNATURE)
    if not device_id or not timestamp or not signature or len(device_id) > 64:
        raise HTTPException(status_code=401, detail=f"signed request required: headers {protocol.HEADER_DEVICE}, "
                                                    f"{protocol.HEADER_TIMESTAMP} and {protocol.HEADER_SIGNATURE}")
    return device_id, timestamp, signature


def _bearer(request: Request) -> Optional[str]:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _authenticate(ctx: AppContext, token: str) -> Optional[Principal]:
    with ctx.db.read() as conn:
        principal = accounts.authenticate_api_token(conn, token)
    if principal is not None and principal.needs_touch and principal.token_id is not None:
        with ctx.db.write() as conn:
            accounts.touch_api_token(conn, principal.token_id)
    return principal


async def require_principal(request: Request, ctx: ContextDep) -> Principal:
    limit_ip(request, ctx)
    token = _bearer(request)
    unauthorized = HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                 detail="an admin API token is required: send `Authorization: Bearer tpa_...` "
                                        "(create one with `teleposture-server init` or the admin API)")
    if token is None:
        raise unauthorized
    principal = await run_in_threadpool(_authenticate, ctx, token)
    if principal is None:
        raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                            detail="API token not recognised, expired or revoked")
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]


def deny(ctx: AppContext, request: Request, principal: Principal, action: str, detail: str,
         target: Optional[str] = None, org_unit_id: Optional[int] = None) -> HTTPException:
    """Record a refused admin action in the audit log and return the 403 to raise."""
    with ctx.db.write() as conn:
        audit.record(conn, actor=principal.actor, action=action, target=target, org_unit_id=org_unit_id,
                     outcome="denied", details={"reason": detail}, remote_addr=client_address(request))
    return HTTPException(status_code=403, detail=detail)


async def require_admin(request: Request, ctx: ContextDep, principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        action = f"{request.method} {request.url.path}"
        raise await run_in_threadpool(deny, ctx, request, principal, action,
                                      "this action needs the admin role; your token has the viewer role")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
