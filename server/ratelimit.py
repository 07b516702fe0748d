"""Token-bucket rate limits per device and per client address, and failed sign-ins.

SQLite (one node): each process keeps its buckets in memory (``RateLimiter``). PostgreSQL (any number of
nodes): the buckets live in the shared table ``rate_buckets`` (``SharedRateLimiter``), one atomic
statement per take, so N nodes behind a load balancer enforce the configured limit, not N times it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from server.store.db import Database, postgres_engine
from server.store.schema import rate_buckets

log = logging.getLogger(__name__)


class Limiter(Protocol):
    per_minute: int

    @property
    def enabled(self) -> bool: ...

    def take(self, key: str, cost: float = 1.0) -> float: ...

    def wait(self, key: str, cost: float = 1.0) -> float: ...


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 500_000) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when allowed (and the cost is taken); otherwise seconds until it would be allowed."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:
                self._evict(now)
            return (cost - tokens) / self.rate

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` could be taken (0: now), taking nothing."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def _evict(self, now: float) -> None:
        # Buckets that refilled completely carry no information: drop them.
        full_after = self.capacity / self.rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# One statement per take: refill by the time elapsed on the database's clock (the same for every node),
# take the cost when there is enough, and say which happened (``granted``). The row lock serialises
# concurrent takes of one key across nodes. (SET expressions read the row as it was before the update.)
_TAKE = """
INSERT INTO rate_buckets AS b (scope, key, tokens, updated_at, granted)
VALUES (%(scope)s, %(key)s, GREATEST(%(capacity)s - %(cost)s, 0), extract(epoch from statement_timestamp()),
        %(capacity)s >= %(cost)s)
ON CONFLICT (scope, key) DO UPDATE SET
    tokens = LEAST(%(capacity)s, b.tokens + (extract(epoch from statement_timestamp()) - b.updated_at) * %(rate)s)
             - CASE WHEN LEAST(%(capacity)s, b.tokens + (extract(epoch from statement_timestamp()) - b.updated_at)
                               * %(rate)s) >= %(cost)s THEN %(cost)s ELSE 0 END,
    granted = LEAST(%(capacity)s, b.tokens + (extract(epoch from statement_timestamp()) - b.updated_at) * %(rate)s)
              >= %(cost)s,
    updated_at = extract(epoch from statement_timestamp())
RETURNING granted, tokens
"""
_PEEK = """
SELECT LEAST(%(capacity)s, b.tokens + (extract(epoch from statement_timestamp()) - b.updated_at) * %(rate)s)
FROM rate_buckets AS b WHERE b.scope = %(scope)s AND b.key = %(key)s
"""


class SharedRateLimiter:
    """The token bucket of ``RateLimiter``, kept in the database's ``rate_buckets`` table (PostgreSQL)
    so every collector node counts against the same budget. ``scope`` separates the kinds of limit."""

    def __init__(self, db: Database, scope: str, per_minute: int, *, pool_size: int = 4) -> None:
        if not db.is_postgres:
            raise ValueError("SharedRateLimiter needs PostgreSQL; SQLite has one node: use RateLimiter")
        self.scope = scope
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        # Its own small autocommit pool: one round trip per take, no BEGIN/COMMIT, and no wait for
        # a connection behind ingest transactions.
        self._engine = postgres_engine(db.url, pool_size=pool_size, isolation_level="AUTOCOMMIT")

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _params(self, key: str, cost: float) -> dict[str, object]:
        return {"scope": self.scope, "key": key[:256], "capacity": self.capacity, "rate": self.rate,
                "cost": float(cost)}

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when allowed (and the cost is taken); otherwise seconds until it would be allowed."""
        if not self.enabled:
            return 0.0
        try:
            with self._engine.connect() as conn:
                granted, tokens = conn.exec_driver_sql(_TAKE, self._params(key, cost)).one()
        except sa.exc.DBAPIError as exc:
            # Fail open: with the database away the request fails anyway (503), and a limit must not
            # turn a database hiccup into refusals that outlast it.
            log.warning("rate limit %s not counted, database error: %s", self.scope, exc.orig)
            return 0.0
        return 0.0 if granted else (cost - float(tokens)) / self.rate

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` could be taken (0: now), taking nothing."""
        if not self.enabled:
            return 0.0
        try:
            with self._engine.connect() as conn:
                tokens = conn.exec_driver_sql(_PEEK, self._params(key, cost)).scalar()
        except sa.exc.DBAPIError as exc:
            log.warning("rate limit %s not read, database error: %s", self.scope, exc.orig)
            return 0.0
        if tokens is None or float(tokens) >= cost:
            return 0.0
        return (cost - float(tokens)) / self.rate

    def dispose(self) -> None:
        self._engine.dispose()


class SharedFailureLimiter:
    """Failed sign-ins per key, counted in ``rate_buckets`` (the interface of the dashboard's in-process
    FailureLimiter): ``per_minute`` failures in a burst, then one more per 60/per_minute seconds."""

    def __init__(self, db: Database, scope: str, per_minute: int) -> None:
        self.per_minute = per_minute
        self._bucket = SharedRateLimiter(db, scope, per_minute, pool_size=1)

    def wait(self, key: str) -> float:
        return self._bucket.wait(key)

    def failed(self, key: str) -> None:
        self._bucket.take(key)


def make_limiter(db: Database, scope: str, per_minute: int) -> Limiter:
    """Shared buckets on PostgreSQL (several nodes), in-process ones on SQLite (one node)."""
    if db.is_postgres and per_minute > 0:
        return SharedRateLimiter(db, scope, per_minute)
    return RateLimiter(per_minute)


def prune_buckets(db: Database, *, idle_seconds: float = 120.0, batch: int = 10_000) -> int:
    """Delete buckets untouched for ``idle_seconds`` (every limit here refills fully within a minute, so
    such a bucket is full: forgetting it changes nothing). Returns how many were deleted."""
    deleted = 0
    while True:
        with db.write() as conn:
            cutoff = sa.func.extract("epoch", sa.func.statement_timestamp()) - idle_seconds \
                if db.is_postgres else time.time() - idle_seconds
            keys = (sa.select(rate_buckets.c.scope, rate_buckets.c.key)
                    .where(rate_buckets.c.updated_at < cutoff).limit(batch))
            count = int(conn.execute(rate_buckets.delete().where(
                sa.tuple_(rate_buckets.c.scope, rate_buckets.c.key).in_(keys))).rowcount or 0)
        deleted += count
        if count < batch:
            return deleted
