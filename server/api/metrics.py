"""`GET /metrics`, the separate listener on `metrics_address`, and the node's built-in gauges."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from sqlalchemy.pool import QueuePool

from common.ttlcache import TTLCache
from server.context import AppContext
from server.metrics import token_matches
from server.store import counts
from server.store.schema import COMPLIANCE_STATES
from server.store.scope import Scope

log = logging.getLogger(__name__)

# Fleet counts cost a few index scans; scrapes every few seconds from several servers share one reading.
FLEET_CACHE_SECONDS = 10.0


def install(ctx: AppContext) -> None:
    """The built-in gauges of a node: devices by status, database pool, singleton jobs, change notices."""
    metrics = ctx.metrics
    cache: TTLCache[str, dict[str, int]] = TTLCache(FLEET_CACHE_SECONDS)

    def count_devices() -> dict[str, int]:
        # The overview's counts: stored by the snapshot job for a large fleet (a live count of 1,000,000
        # devices takes seconds, on every scrape of every node), counted live for a small one.
        with ctx.db.read() as conn:
            units, _ = counts.stored_or_live(
                conn, Scope.everything(), now=time.time(), stale_after=ctx.settings.stale_after,
                max_age=counts.stored_max_age(ctx.settings.maintenance_interval),
                live_limit=ctx.settings.overview_live_limit)
        by_status = {state: sum(e[state] for e in units.values()) for state in COMPLIANCE_STATES}
        return {**by_status, "stale": sum(counts.stale(e) for e in units.values()),
                "revoked": sum(e["revoked"] for e in units.values())}

    def devices_by_status() -> dict[str, int]:
        return cache.get_or_load("devices", count_devices)

    metrics.gauge("teleposture_devices", "Enrolled devices by compliance status (active devices), plus the "
                  "stale (not seen within stale_after) and revoked ones.", devices_by_status, label="status")

    def pool(kind: str) -> dict[str, int]:
        engine = ctx.db.write_engine if kind == "write" else ctx.db.read_engine
        state = engine.pool
        if not isinstance(state, QueuePool):
            return {}
        return {"size": state.size(), "checked_out": state.checkedout(), "idle": state.checkedin(),
                "overflow": max(0, state.overflow())}

    metrics.gauge("teleposture_db_pool_connections", "Database connections of this process's request pool "
                  "(size, checked_out, idle, overflow).", lambda: pool("write"), label="state")
    metrics.gauge("teleposture_job_leader", "1 when this node runs the singleton job (one node per cluster).",
                  lambda: {name: int(ctx.cluster.leads(name)) for name in ctx.cluster.job_names()}, label="job")
    metrics.gauge("teleposture_cluster_listening", "1 when this node receives the other nodes' change "
                  "notices (PostgreSQL LISTEN); 1 on SQLite (one node).",
                  lambda: 1 if not ctx.db.is_postgres else int(ctx.cluster.listening.is_set()))


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format, for a scraper holding the metrics token (``metrics_token``)."""
    ctx: AppContext = request.app.state.ctx
    if not ctx.settings.metrics_token:
        return PlainTextResponse("metrics are off on this port: set metrics_token (then scrape with "
                                 "Authorization: Bearer) or metrics_address (a separate listener)\n",
                                 status_code=404)
    if not token_matches(ctx.settings.metrics_token, request.headers.get("authorization")):
        return PlainTextResponse("metrics need Authorization: Bearer <metrics_token>\n", status_code=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def serve_separately(ctx: AppContext) -> Optional[Callable[[], None]]:
    """Start the plain listener of ``metrics_address`` (no token: the address restricts who reaches it);
    returns how to stop it, or None when no address is set."""
    if not ctx.settings.metrics_address:
        return None
    host, _, port = ctx.settings.metrics_address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1",
                                       registry=ctx.metrics.registry)
    log.info("metrics on http://%s/metrics", ctx.settings.metrics_address)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
