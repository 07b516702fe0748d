"""The collector's background jobs, each run once cluster-wide (server.cluster singleton jobs).

Registered by the app at start. Other branches' jobs (event delivery, ladder deadlines) register the
same way: ``cluster.singleton(name, interval, callable)``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from server import device_notices, ratelimit
from server.actions import delivery
from server.settings import Settings
from server.store import change_counts, maintenance, retention
from server.store.db import Database

if TYPE_CHECKING:
    from server.context import AppContext

log = logging.getLogger(__name__)
SLOW_PLANNER_STATS_SECONDS = 1.0


def daily_snapshot(ctx: AppContext) -> None:
    now = time.time()
    with ctx.db.write() as conn:
        maintenance.snapshot_daily_stats(conn, now=now, stale_after=ctx.settings.stale_after)
        change_counts.roll_up(conn, now=now)


def run_retention(db: Database, settings: Settings, *,
                  now: Optional[float] = None) -> tuple[retention.RetentionRun, delivery.OutboxPruned]:
    """Raw reports, history and rollups (server.store.retention), events and dead letters
    (server.actions.delivery) past their retention; ``now`` for simulated clocks (benchmarks)."""
    run = retention.enforce(db, settings, now=now)
    pruned = delivery.prune_outbox(db, event_retention=settings.event_retention,
                                   dead_letter_retention=settings.dead_letter_retention,
                                   batch=settings.retention_batch, now=now)
    return run, pruned


def enforce_retention(ctx: AppContext) -> None:
    run_retention(ctx.db, ctx.settings)


def flag_stale_devices(ctx: AppContext, batch: int = 500) -> None:
    """Devices silent for ``stale_after``: a notice on the device page and a ``device.stale`` event."""
    while True:
        with ctx.db.write() as conn:
            flagged = device_notices.flag_stale_devices(conn, now=time.time(), stale_after=ctx.settings.stale_after,
                                                        limit=batch)
        if flagged < batch:
            return


def refresh_planner_stats(ctx: AppContext) -> None:
    """SQLite's planner statistics (server.store.maintenance.refresh_planner_stats); nothing on PostgreSQL."""
    run = maintenance.refresh_planner_stats(ctx.db)
    if run is None:
        return
    # Ingest waits for SQLite's one write lock meanwhile: say so when that was long.
    level = logging.WARNING if run.seconds > SLOW_PLANNER_STATS_SECONDS else logging.DEBUG
    log.log(level, "planner statistics: %d tables analyzed in %.3f s (write lock held)", run.tables, run.seconds)


def prune_rate_buckets(ctx: AppContext) -> None:
    if ctx.db.is_postgres:
        ratelimit.prune_buckets(ctx.db)


def register(ctx: AppContext) -> None:
    interval = ctx.settings.maintenance_interval
    cluster = ctx.cluster
    cluster.singleton("daily-snapshot", interval, lambda: daily_snapshot(ctx))
    cluster.singleton("retention", interval, lambda: enforce_retention(ctx))
    cluster.singleton("prune-rate-buckets", interval, lambda: prune_rate_buckets(ctx))
    cluster.singleton("stale-devices", interval, lambda: flag_stale_devices(ctx))
    if not ctx.db.is_postgres:
        # At start too: a collector opened on a database without statistics (an upgrade, a restored file)
        # plans with guesses until the first run. PostgreSQL's autovacuum analyzes; no job, no lock connection.
        cluster.singleton("planner-stats", interval, lambda: refresh_planner_stats(ctx), at_start=True)
