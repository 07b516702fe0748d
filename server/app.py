"""The collector's FastAPI application: settings, database, server key and shared state in one place.

`create_app(settings)` builds it; `server.web` (the dashboard) is included when that package exists:
it must expose ``router`` (an APIRouter) and may use ``server.api.deps`` for the context and sign-in.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.types import Receive, Scope, Send

from agent import protocol
from server import jobs
from server.actions import delivery as actions_delivery
from server.actions import worker as actions_worker
from server.api import access as access_api
from server.api import actions as actions_api
from server.api import admin as admin_api
from server.api import agent as agent_api
from server.api import metrics
from server.api.validation import validation_error
from server.bodies import BodyLimitMiddleware
from server.cluster import POLICY_CHANNEL, Cluster
from server.context import AppContext, load_server_key
from server.ingest import Ingestor
from server.ratelimit import RateLimiter, SharedBuckets, make_limiter
from server.settings import Settings
from server.store.db import Database

log = logging.getLogger(__name__)

API_VERSION = "1"


class CollectorApp(FastAPI):
    """The collector's FastAPI application with ``POST /api/v1/reports`` answered in front of it
    (server.api.agent.ReportsFastLane); every other request, and the lifespan, goes through FastAPI."""

    def __init__(self, ctx: AppContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.ctx = ctx
        # The handlers' own dict: handlers added later (below in create_app) answer the lane's errors too.
        self.reports_lane = agent_api.ReportsFastLane(ctx, self.exception_handlers, debug=self.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.reports_lane.takes(scope):
            scope["app"] = self  # as Starlette sets it, for the exception handlers' Request
            await self.reports_lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# `serve --benchmark-routes` tells its uvicorn worker processes through this variable (see app_from_environment).
BENCHMARK_ROUTES_ENV = "TELEPOSTURE_BENCHMARK_ROUTES"


def create_app(settings: Settings, *, db: Database | None = None, benchmark_routes: bool = False) -> FastAPI:
    """The collector's application; ``benchmark_routes`` adds the load benchmark's trivial reference
    endpoint (server/api/benchmark.py), which a production collector does not serve."""
    db = db or Database(settings.resolved_database_url)
    key = load_server_key(settings)
    buckets = SharedBuckets(db) if db.is_postgres else None
    ctx = AppContext(
        settings=settings, db=db, server_key=key, server_public_key=protocol.public_key_b64(key),
        ingestor=Ingestor(db, raw_report_interval=settings.raw_report_interval,
                          policy_cache_ttl=settings.policy_cache_seconds),
        device_limiter=make_limiter(buckets, "device", settings.rate_limit_device_per_minute),
        ip_limiter=make_limiter(buckets, "ip", settings.rate_limit_ip_per_minute),
        ip_flood_limiter=RateLimiter(settings.rate_limit_ip_per_minute), shared_buckets=buckets,
        cluster=Cluster(db))
    # Another node changed a policy assignment: forget cached resolutions (within the listener's poll).
    ctx.cluster.on(POLICY_CHANNEL, lambda _payload: ctx.ingestor.policies.clear())
    jobs.register(ctx)
    metrics.install(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built at start (routes, models, SQL metadata) lives for the whole process: keep it out
        # of the cyclic GC's scans, which otherwise grow with every report batch's parse.
        gc.freeze()
        ctx.cluster.start()
        stop_metrics = metrics.serve_separately(ctx)
        # the ladder's due steps and event delivery (claims are safe across processes: server.actions.delivery)
        stop = threading.Event()
        actions_worker.start(db, key, actions_delivery.DeliveryPolicy(
            backoff_max=settings.delivery_backoff_max, dead_after=settings.event_dead_after,
            lease=settings.delivery_lease),
            settings.actions_interval, stop)
        try:
            yield
        finally:
            stop.set()
            if stop_metrics is not None:
                stop_metrics()
            ctx.cluster.stop()
            ctx.ingest_pool.shutdown(wait=True)
            if buckets is not None:
                buckets.dispose()
            db.dispose()

    app = CollectorApp(ctx, title="Teleposture collector", version=API_VERSION, lifespan=lifespan,
                       description="Signed posture reports in, fleet compliance out. Agent endpoints are signed "
                                   "with the device's Ed25519 key; admin endpoints take `Authorization: Bearer`.")
    app.include_router(agent_api.router)
    app.include_router(admin_api.router)
    app.include_router(actions_api.router)
    for access_router in (access_api.gate_router, access_api.agent_router, access_api.admin_router):
        app.include_router(access_router)
    app.include_router(metrics.router)
    if benchmark_routes:
        import server.api.benchmark

        app.include_router(server.api.benchmark.router)
    if importlib.util.find_spec("server.web") is not None:
        web: Any = importlib.import_module("server.web")
        if hasattr(web, "router"):
            app.include_router(web.router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)

    app.add_exception_handler(RequestValidationError, validation_error)

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

    from server import workers

    master = os.environ.get(workers.MASTER_PID_ENV)
    if master and master.isdigit():
        workers.exit_with_master(int(master))
    raw = os.environ.get("TELEPOSTURE_SETTINGS_JSON")
    settings = Settings.model_validate_json(raw) if raw else Settings()
    return create_app(settings, benchmark_routes=os.environ.get(BENCHMARK_ROUTES_ENV) == "1")
