"""Agent endpoints: enrolment, report ingest, signed policy distribution (wire protocol v1)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Optional, TypeVar

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import get_route_path  # how the router itself reads the path (root_path aware)
from starlette.types import Receive, Scope, Send

from agent import protocol
from server.api import access
from server.api.deps import ContextDep, address_of, client_address, limit_address, limit_ip, signed_headers
from server.api.models import (
    EnrollRequest,
    EnrollResponse,
    Ping,
    PolicyBundle,
    Problem,
    ReportBatch,
    ReportResponse,
)
from server.bodies import (
    BodyTooLarge,
    OverLimit,
    declared_over_limit,
    parse_json,
    receive_body,
    refuse_too_large,
)
from server.context import AppContext
from server.ingest import ACCEPTED, DUPLICATE, IngestStats, NoPolicyError
from server.ratelimit import Limiter, retry_after_header, take_together
from server.store import assignment, enrolment
from server.store import policies as policy_store
from server.store.schema import DEVICE_ACTIVE, DEVICE_PENDING, devices

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(prefix="/api/v1", tags=["agent"])

HEADER_LAST_SEQ = "X-Teleposture-Last-Seq"
HEADER_SERVER_TIME = "X-Teleposture-Server-Time"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem}, 413: {"model": Problem}, 429: {"model": Problem}, 503: {"model": Problem}}


def _bundle(ctx: AppContext, stored: policy_store.StoredPolicy) -> dict[str, str]:
    # Ed25519 signatures are deterministic, so a signed bundle per immutable version can be kept.
    with ctx.bundle_lock:
        bundle = ctx.bundles.get(stored.pk)
    if bundle is None:
        bundle = protocol.sign_policy_bundle(ctx.server_key, stored.policy.to_json())
        with ctx.bundle_lock:
            ctx.bundles[stored.pk] = bundle
    return bundle


def _assigned_bundle(ctx: AppContext, stored: policy_store.StoredPolicy, device_id: str, counter: int
                     ) -> dict[str, str]:
    """The bundle for one device: the cached signed policy plus its signed assignment (device, policy
    digest, assignment counter; server/store/assignment.py), so no older bundle can be replayed to it."""
    bundle = _bundle(ctx, stored)
    return {**bundle, **protocol.sign_assignment(ctx.server_key, device_id, bundle["payload"], counter)}


def _enrol(ctx: AppContext, body: EnrollRequest, remote: str) -> dict[str, Any]:
    try:
        protocol.load_public_key(body.public_key)
    except protocol.ProtocolError as exc:
        raise HTTPException(status_code=400, detail=f"public_key: {exc}") from exc
    now = time.time()
    with ctx.db.write() as conn:
        try:
            grant = enrolment.consume_enroll_token(conn, body.token, now)
        except enrolment.EnrolmentError as exc:
            raise HTTPException(status_code=exc.status, detail=exc.message) from exc
        pk, counter = assignment.current(conn, grant.org_unit_id)
        stored = None if pk is None else policy_store.get_policy(conn, pk)
        if stored is None:
            raise HTTPException(status_code=503, detail="the collector has no policy yet: the operator must run "
                                                        "`teleposture-server init` or `policy push`")
        outcome = enrolment.register_device(
            conn, grant, body.public_key, protocol.key_id(body.public_key), body.device.model_dump(), now,
            proof=body.previous.model_dump() if body.previous is not None else None)
        enrolment.record_enrolment(conn, outcome, grant, body.device.hostname, body.device.machine_id,
                                         remote)
    replaced = outcome.replaced[0] if outcome.replaced else None
    return {"device_id": outcome.device_id, "server_key": ctx.server_public_key,
            "policy": _assigned_bundle(ctx, stored, outcome.device_id, counter),
            "intervals": dict(stored.policy.intervals), "replaced": replaced, "state": outcome.state}


@router.post("/enroll", response_model=EnrollResponse, responses={**ERRORS, 401: {"model": Problem},
                                                                   403: {"model": Problem}})
async def enroll(body: EnrollRequest, request: Request, ctx: ContextDep) -> dict[str, Any]:
    """Register a device with a one-org-unit enrolment token; answers its id, the server key and policy."""
    limit_ip(request, ctx)
    return await run_in_threadpool(_enrol, ctx, body, client_address(request))


async def _in_ingest_pool(ctx: AppContext, call: Callable[[], T]) -> T:
    """``call()`` on one of the ingest threads (AppContext.ingest_pool), without blocking the event loop.

    Not ``loop.run_in_executor``: chaining its concurrent Future to an asyncio one (callbacks, locks and
    state copies on both sides, a coroutine check of ``call``) cost the event loop more than this hand-back
    of the outcome with one ``call_soon_threadsafe``."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - raised again by the awaiting task, as run_in_executor does
            loop.call_soon_threadsafe(_set_exception, outcome, exc)
        else:
            loop.call_soon_threadsafe(_set_result, outcome, result)

    ctx.ingest_pool.submit(run)
    return await outcome


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.cancelled():  # the awaiting task was cancelled (shutdown): nobody wants the result
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)


def _limit_devices(ctx: AppContext, client: str, device_ids: list[str]) -> None:
    """Per-device rate limit, applied to devices whose signatures verified (see Ingestor.ingest). With
    shared buckets (PostgreSQL) the client address is counted here too: one statement for all."""
    if ctx.shared_buckets is not None:
        takes: list[tuple[Limiter, str]] = [(ctx.ip_limiter, client), *((ctx.device_limiter, d) for d in device_ids)]
        wait = take_together(takes)
        if wait:
            raise HTTPException(status_code=429, headers={"Retry-After": retry_after_header(wait)},
                                detail=f"too many requests from this address or device: retry in {wait:.0f} s")
        return
    for device_id in device_ids:
        wait = ctx.device_limiter.take(device_id)
        if wait:
            raise HTTPException(status_code=429, headers={"Retry-After": retry_after_header(wait)},
                                detail=f"device {device_id[:64]} sends too often: retry in {wait:.0f} s")


def _ingest_upload(ctx: AppContext, client: str, body: bytes, content_encoding: Optional[str]) -> bytes:
    """One report upload on an ingest thread: parse, ingest, count, access decisions; the 200's JSON body.

    All in one hop from the event loop: at one report per request, the gunzip and parse, the metrics
    (prometheus_client takes a lock per call) and the answer's serialisation were a third of the event
    loop's CPU per upload, and an evaluated report no longer hops back and forth for its decision."""
    document = parse_json(body, content_encoding, ctx.settings.max_decompressed_bytes)
    items = document.get("envelopes") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise HTTPException(status_code=400, detail='expected a JSON object {"envelopes": [...]}')
    if len(items) > ctx.settings.max_batch:
        raise HTTPException(status_code=413, detail=f"{len(items)} envelopes in one batch; at most "
                                                    f"{ctx.settings.max_batch} allowed: split the batch")
    stats = IngestStats()
    started = time.perf_counter()
    try:
        answers = ctx.ingestor.ingest(items, stats, partial(_limit_devices, ctx, client))
    except NoPolicyError as exc:
        ctx.metrics.batch_failed(503)
        raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": "60"}) from exc
    except DBAPIError as exc:
        ctx.metrics.batch_failed(503)
        log.warning("report batch not stored, database error: %s", exc.orig)
        raise HTTPException(status_code=503, headers={"Retry-After": "5"},
                            detail="the collector's database is unavailable; nothing was stored, retry later"
                            ) from exc
    except HTTPException as exc:  # 429 from the per-device limit
        ctx.metrics.batch_failed(exc.status_code)
        raise
    accepted = sum(1 for a in answers if a.status == ACCEPTED)
    duplicate = sum(1 for a in answers if a.status == DUPLICATE)
    rejected = len(answers) - accepted - duplicate
    ctx.metrics.batch_done(accepted, duplicate, rejected, time.perf_counter() - started)
    # Serialised here (orjson) rather than validated again against ReportResponse by FastAPI, which cost
    # more CPU than the ingest of an unchanged report; the OpenAPI schema still declares ReportResponse.
    # Every EnvelopeAnswer field present, as the model's serialisation gave them (null when not set).
    results = [{"reason": None, "compliance": None, **a.to_json()} for a in answers]
    # A report that changed nothing (the ingest shortcut) cannot have changed the decision the device holds;
    # the agent asks GET /api/v1/access when its decision nears expiry (docs/access.md).
    accepted_devices = [a.device_id for a in answers if a.status == ACCEPTED and a.evaluated and a.device_id]
    decisions: dict[str, Any] = {}
    if accepted_devices:  # most uploads change nothing
        try:
            decisions = access.decisions_for_upload(ctx, accepted_devices)
        except DBAPIError as exc:  # the reports are stored; the agent asks for its decision later
            log.warning("access decisions not issued, database error: %s", exc.orig)
    return orjson.dumps({"results": results, "accepted": accepted, "duplicate": duplicate,
                         "rejected": rejected, "server_time": time.time(), "access": decisions})


async def _upload(ctx: AppContext, scope: Scope, receive: Receive) -> bytes:
    """A report upload's answer (the 200's JSON body). HTTPException for a refusal; OverLimit (its detail)
    for a body over the limit, answered like BodyLimitMiddleware's 413."""
    declared: Optional[bytes] = None
    encoding: Optional[bytes] = None
    for name, value in scope["headers"]:  # lower-case names (ASGI); the first Content-Encoding, as Headers.get
        if name == b"content-length":
            declared = value
        elif name == b"content-encoding" and encoding is None:
            encoding = value
    limit = ctx.settings.max_body_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OverLimit(declared_over_limit(int(declared), limit))
    # A body without Content-Length is read (and refused when over the limit) before the address limit, as
    # BodyLimitMiddleware does; a declared one only after it.
    body = await receive_body(receive, limit) if declared is None else None
    client = address_of(scope)
    # PostgreSQL: this node's own address bucket first (no database round trip on the event loop); the
    # shared count is taken with the devices' once signatures verified (_limit_devices).
    limit_address(client, ctx, ctx.ip_flood_limiter if ctx.shared_buckets is not None else None)
    if body is None:
        body = await receive_body(receive, limit)
    return await _in_ingest_pool(ctx, partial(_ingest_upload, ctx, client, body,
                                              None if encoding is None else encoding.decode("latin-1")))


@router.post("/reports", response_model=ReportResponse, responses=ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": ReportBatch.model_json_schema()}}}})
async def post_reports(request: Request, ctx: ContextDep) -> Response:
    """Ingest a batch of signed report envelopes (gzip bodies accepted); one answer per envelope."""
    # The collector answers these POSTs in ReportsFastLane, ahead of this route; the route is what OpenAPI
    # and method matching (405) see, and answers the same way where an app has no lane in front.
    try:
        answer = await _upload(ctx, request.scope, request.receive)
    except OverLimit as exc:
        raise BodyTooLarge(str(exc)) from exc
    return Response(answer, media_type="application/json")


class ReportsFastLane:
    """``POST /api/v1/reports`` answered in front of the collector's FastAPI application
    (server.app.CollectorApp), which passes every other request, and the lifespan, to FastAPI.

    At one report per request, FastAPI's per-request work (its telemetry check, ServerErrorMiddleware, its
    telemetry and body-limit layers, BodyLimitMiddleware, exception middleware, exit stack, matching across
    every route, dependency solving, endpoint wrappers, a Request and a Response object) cost the event
    loop about as much CPU as the HTTP server itself. The lane answers what those layers answered for the
    route: the body limit's 413 (same text, connection closed), the app's exception handlers (HTTPException
    -> ``{"detail"}`` with its headers; DataError, OperationalError), and, through Starlette's own
    ServerErrorMiddleware, its plain-text 500 for anything else (the exception re-raised for the server's
    log). The route stays declared (OpenAPI, 405 for other methods)."""

    def __init__(self, ctx: AppContext, handlers: Mapping[Any, Callable[..., Any]], *, debug: bool) -> None:
        self.ctx = ctx
        self.handlers = handlers
        self.path = router.url_path_for("post_reports")
        # The 500 handler FastAPI would give its ServerErrorMiddleware (the collector registers none).
        error_handler = next((h for key, h in handlers.items() if key in (500, Exception)), None)
        self.lane = ServerErrorMiddleware(self._answer, handler=error_handler, debug=debug)

    def takes(self, scope: Scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "POST" and get_route_path(scope) == self.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.lane(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _upload(self.ctx, scope, receive)
        except OverLimit as exc:
            await refuse_too_large(send, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - answered by the app's handler for its type, else re-raised
            handler = _exception_handler(self.handlers, exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _exception_handler(handlers: Mapping[Any, Callable[..., Any]], exc: Exception) -> Optional[Callable[..., Any]]:
    """The handler the app registered for ``exc``'s class or its nearest base (as Starlette looks it up)."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _policy_for_device(ctx: AppContext, device_id: str, method: str, path: str, timestamp: str,
                       signature: str) -> tuple[policy_store.StoredPolicy, int, int]:
    """The device's policy, its last accepted seq and the policy assignment counter."""
    with ctx.db.read() as conn:
        row = conn.execute(sa.select(devices.c.public_key, devices.c.state, devices.c.org_unit_id,
                                     devices.c.last_seq).where(devices.c.id == device_id)).first()
        if row is None:
            raise HTTPException(status_code=401, detail="unknown device: enrol it first")
        try:
            protocol.check_request_signature(protocol.load_public_key(row.public_key), method, path, timestamp,
                                             signature)
        except protocol.ProtocolError as exc:
            raise HTTPException(status_code=401, detail=str(exc)) from exc
        if row.state != DEVICE_ACTIVE:
            raise HTTPException(status_code=403, detail=enrolment.PENDING_REASON if row.state == DEVICE_PENDING
                                else f"device is {row.state}: enrol it again with a new token")
        # Counted only once the signature verified, so nobody can spend another device's budget.
        wait = ctx.device_limiter.take(device_id)
        if wait:
            raise HTTPException(status_code=429, headers={"Retry-After": retry_after_header(wait)},
                                detail=f"this device asks too often: retry in {wait:.0f} s")
        # Not the per-process cache: the policy and the assignment counter must come from one snapshot.
        pk, counter = assignment.current(conn, int(row.org_unit_id))
        stored = None if pk is None else policy_store.get_policy(conn, pk)
    if stored is None:
        raise HTTPException(status_code=404, detail="no policy applies to this device yet")
    return stored, int(row.last_seq), counter


@router.get("/policy", response_model=PolicyBundle,
            responses={304: {"description": "the policy the agent holds (If-None-Match) is current"},
                       401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
                       429: {"model": Problem}})
async def get_policy(request: Request, ctx: ContextDep, response: Response) -> Any:
    """The device's policy as a bundle signed by the server key. Requests are signed by the device."""
    device_id, timestamp, signature = signed_headers(request, ctx)
    stored, last_seq, counter = await run_in_threadpool(_policy_for_device, ctx, device_id, request.method,
                                                        request.url.path, timestamp, signature)
    etag = f'"{stored.policy.digest()}"'
    # where the device's seq stands (an agent that lost its counter moves past it) and the collector's clock
    extra = {HEADER_LAST_SEQ: str(last_seq), HEADER_SERVER_TIME: f"{time.time():.3f}"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, **extra})
    response.headers.update(extra)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return _assigned_bundle(ctx, stored, device_id, counter)


def _etag_matches(header: Optional[str], etag: str) -> bool:
    if not header:
        return False
    candidates = [item.strip().removeprefix("W/") for item in header.split(",")]
    return etag in candidates or "*" in candidates


@router.get("/health", response_model=Ping, tags=["meta"], responses={503: {"model": Problem}})
def health(ctx: ContextDep) -> dict[str, bool]:
    """200 when the database answers."""
    try:
        with ctx.db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        raise HTTPException(status_code=503, detail="database unavailable") from exc
    return {"ok": True}
