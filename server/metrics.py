"""Prometheus metrics of one collector node (`GET /metrics`, or a separate listener on `metrics_address`).

Counters and histograms are this process's; gauges read at scrape time (devices by status, database
pool) describe the fleet or this process. Other parts register their own gauges with
``Metrics.gauge(name, help, read)``: ``read`` returns a number, or ``{label value: number}`` together
with ``label=...`` (e.g. the event outbox depth and delivery failures of issue 13).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

from server.store import fleet
from server.store.scope import Scope

if TYPE_CHECKING:
    from server.app import AppContext

log = logging.getLogger(__name__)

Reading = Union[float, int, Mapping[str, Union[float, int]]]
# Seconds per report batch: a batch of one takes ~1-5 ms, a batch of 500 up to a few hundred.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Fleet counts cost a few index scans; scrapes every few seconds from several servers share one reading.
FLEET_CACHE_SECONDS = 10.0


class _Gauges(Collector):
    """Gauges whose value is read when scraped."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, Callable[[], Reading], Optional[str]]] = []
        self._lock = threading.Lock()

    def add(self, name: str, documentation: str, read: Callable[[], Reading], label: Optional[str]) -> None:
        with self._lock:
            if any(existing == name for existing, *_ in self._gauges):
                raise ValueError(f"gauge {name} is registered already")
            self._gauges.append((name, documentation, read, label))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gauges = list(self._gauges)
        for name, documentation, read, label in gauges:
            try:
                value = read()
            except Exception:  # noqa: BLE001 (one unreadable gauge must not hide the others)
                log.exception("metric %s could not be read", name)
                continue
            if isinstance(value, Mapping):
                family = GaugeMetricFamily(name, documentation, labels=[label or "label"])
                for key, number in sorted(value.items()):
                    family.add_metric([str(key)], float(number))
            else:
                family = GaugeMetricFamily(name, documentation, value=float(value))
            yield family

    def describe(self) -> Iterable[Metric]:
        return []  # values are read at scrape time only


class Metrics:
    """The registry of one app (not the process-global one: tests run several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reports = Counter("teleposture_reports", "Report envelopes received, by outcome "
                               "(accepted, duplicate, rejected).", ["outcome"], registry=self.registry)
        # The labelled children, resolved once: a labels() lookup per report batch cost more than the increment.
        self._accepted, self._duplicate, self._rejected = (self.reports.labels(outcome)
                                                           for outcome in ("accepted", "duplicate", "rejected"))
        self.batches = Counter("teleposture_report_batches", "Report requests answered, by HTTP status class.",
                               ["status"], registry=self.registry)
        self.ingest_seconds = Histogram("teleposture_ingest_duration_seconds", "Time to verify, evaluate and "
                                        "store one report batch.", buckets=INGEST_BUCKETS, registry=self.registry)
        self._batches_ok = self.batches.labels("2xx")
        self._gauges = _Gauges()
        self.registry.register(self._gauges)

    def gauge(self, name: str, documentation: str, read: Callable[[], Reading], *,
              label: Optional[str] = None) -> None:
        """A gauge read at scrape time: ``read()`` gives a number, or ``{label value: number}``."""
        self._gauges.add(name, documentation, read, label)

    def batch_done(self, accepted: int, duplicate: int, rejected: int, seconds: float) -> None:
        for child, count in ((self._accepted, accepted), (self._duplicate, duplicate), (self._rejected, rejected)):
            if count:
                child.inc(count)
        self.ingest_seconds.observe(seconds)
        self._batches_ok.inc()

    def batch_failed(self, status: int) -> None:
        self.batches.labels(f"{status // 100}xx").inc()


def token_matches(expected: Optional[str], authorization: Optional[str]) -> bool:
    """Whether an ``Authorization: Bearer`` header carries the metrics token (constant-time)."""
    if not expected or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def install(ctx: AppContext) -> None:
    """The built-in gauges of a node: devices by status, database pool, singleton jobs, change notices."""
    metrics = ctx.metrics
    cache: dict[str, tuple[float, dict[str, int]]] = {}
    cache_lock = threading.Lock()

    def devices_by_status() -> dict[str, int]:
        now = time.monotonic()
        with cache_lock:
            cached = cache.get("devices")
            if cached and now - cached[0] < FLEET_CACHE_SECONDS:
                return cached[1]
        with ctx.db.read() as conn:
            summary = fleet.fleet_summary(conn, Scope.everything(), now=time.time(),
                                          stale_after=ctx.settings.stale_after, with_rules=False)
        counts = {**{str(k): int(v) for k, v in summary.by_compliance.items()}, "stale": summary.stale,
                  "revoked": summary.revoked}
        with cache_lock:
            cache["devices"] = (now, counts)
        return counts

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
