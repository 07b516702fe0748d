"""The collector's FastAPI application: settings, database, server key and shared state in one place.

`create_app(settings)` builds it; `server.web` (the dashboard) is included when that package exists:
it must expose ``router`` (an APIRouter) and may use ``server.api.deps`` for the context and sign-in.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import logging
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import protocol
from server.ingest import Ingestor
from server.ratelimit import RateLimiter
from server.settings import Settings
from server.store import maintenance, retention
from server.store.db import Database

log = logging.getLogger(__name__)

API_VERSION = "1"


class ServerKeyError(RuntimeError):
    """The server signing key is missing or unreadable."""


@dataclass
class AppContext:
    settings: Settings
    db: Database
    server_key: Ed25519PrivateKey
    server_public_key: str
    ingestor: Ingestor
    device_limiter: RateLimiter
    ip_limiter: RateLimiter
    bundles: dict[int, dict[str, str]] = field(default_factory=dict)  # policy pk -> signed bundle
    bundle_lock: threading.Lock = field(default_factory=threading.Lock)

    def policy_changed(self) -> None:
        """An admin changed a policy assignment in this process: forget cached resolutions now."""
        self.ingestor.policies.clear()


def load_server_key(settings: Settings) -> Ed25519PrivateKey:
    path = settings.server_key_path
    if not path.exists():
        raise ServerKeyError(f"server signing key {path} not found: run `teleposture-server init` "
                             f"with the same --data-dir first")
    try:
        return protocol.load_private_key(path)
    except (OSError, ValueError) as exc:
        raise ServerKeyError(f"cannot read the server signing key {path}: {exc}") from exc


class BodyLimitMiddleware:
    """413 for any request body over the limit, before a route (or FastAPI's body parsing) sees it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, f"request body of {int(declared)} bytes is over the limit of {self.limit} "
                                     "bytes: send smaller batches")
            return
        if declared is not None:
            # The server enforces Content-Length itself; the size is already known to be in bounds.
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send, f"request body is over the limit of {self.limit} bytes: "
                                         "send smaller batches")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _maintenance_loop(ctx: AppContext, stop: threading.Event) -> None:
    """Daily trend snapshot and rollups, then retention, in every process (both jobs are idempotent)."""
    interval = ctx.settings.maintenance_interval
    # Jitter so several processes started together do not run the jobs in lockstep.
    while not stop.wait(interval * random.uniform(0.5, 1.0)):  # noqa: S311 (timing jitter, not security)
        try:
            with ctx.db.write() as conn:
                maintenance.snapshot_daily_stats(conn, stale_after=ctx.settings.stale_after)
            retention.enforce(ctx.db, ctx.settings, should_stop=stop.is_set)
        except Exception:  # noqa: BLE001 (a failed run is logged and retried next interval, never fatal)
            log.exception("maintenance run failed; retrying in %.0f s", interval)


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    db = db or Database(settings.resolved_database_url)
    key = load_server_key(settings)
    ctx = AppContext(
        settings=settings, db=db, server_key=key, server_public_key=protocol.public_key_b64(key),
        ingestor=Ingestor(db, raw_report_interval=settings.raw_report_interval,
                          policy_cache_ttl=settings.policy_cache_seconds),
        device_limiter=RateLimiter(settings.rate_limit_device_per_minute),
        ip_limiter=RateLimiter(settings.rate_limit_ip_per_minute))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built at start (routes, models, SQL metadata) lives for the whole process: keep it out
        # of the cyclic GC's scans, which otherwise grow with every report batch's parse.
        gc.freeze()
        stop = threading.Event()
        worker = threading.Thread(target=_maintenance_loop, args=(ctx, stop), name="maintenance", daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            db.dispose()

    app = FastAPI(title="Teleposture collector", version=API_VERSION, lifespan=lifespan,
                  description="Signed posture reports in, fleet compliance out. Agent endpoints are signed "
                              "with the device's Ed25519 key; admin endpoints take `Authorization: Bearer`.")
    app.state.ctx = ctx
    # Imported here: the route modules import this one (AppContext).
    import server.api.admin
    import server.api.agent

    app.include_router(server.api.agent.router)
    app.include_router(server.api.admin.router)
    if importlib.util.find_spec("server.web") is not None:
        web: Any = importlib.import_module("server.web")
        if hasattr(web, "router"):
            app.include_router(web.router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)

    @app.exception_handler(DataError)
    async def _bad_value(_request: Request, _exc: DataError) -> JSONResponse:
        # e.g. a NUL character PostgreSQL cannot store: the input is at fault, nothing was changed.
        return JSONResponse(status_code=400, content={"detail": "a value in the request cannot be stored or "
                                                                "compared (control characters?): fix the input"})

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse(status_code=503, headers={"Retry-After": "5"},
                            content={"detail": "the collector's database is unavailable; retry later"})

    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for `serve --workers N`: each worker process rebuilds the settings from the
    environment the CLI prepared (TELEPOSTURE_SETTINGS_JSON)."""
    import os

    raw = os.environ.get("TELEPOSTURE_SETTINGS_JSON")
    settings = Settings.model_validate_json(raw) if raw else Settings()
    return create_app(settings)
