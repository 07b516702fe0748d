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
from collections.abc import Callable, Sequence
from typing import Optional, Protocol

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
            tokens = self._tokens(key, now)
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
            tokens = self._tokens(key, now)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def _tokens(self, key: str, now: float) -> float:
        """The key's bucket refilled up to ``now`` (a new key starts full); the caller holds the lock."""
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def _evict(self, now: float) -> None:
        # Buckets that refilled completely carry no information: drop them.
        full_after = self.capacity / self.rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# One statement for any number of buckets: refill each by the time elapsed on the database's clock (the
# same for every node), take its cost when there is enough, and say which happened (``granted``). The
# row locks serialise concurrent takes of a key across nodes; SET expressions read the row as it was,
# EXCLUDED the proposed row (its capacity, rate and cost). Constant text: prepared once per connection.
_TAKE = """
INSERT INTO rate_buckets AS b (scope, key, capacity, rate, cost, tokens, granted, updated_at)
SELECT v.scope, v.key, v.capacity, v.rate, v.cost, GREATEST(v.capacity - v.cost, 0), v.capacity >= v.cost,
       extract(epoch from statement_timestamp())
FROM unnest(%(scopes)s::text[], %(keys)s::text[], %(capacities)s::float8[], %(rates)s::float8[],
            %(costs)s::float8[]) AS v(scope, key, capacity, rate, cost)
ON CONFLICT (scope, key) DO UPDATE SET
    tokens = LEAST(EXCLUDED.capacity, b.tokens + (EXCLUDED.updated_at - b.updated_at) * EXCLUDED.rate)
             - CASE WHEN LEAST(EXCLUDED.capacity, b.tokens + (EXCLUDED.updated_at - b.updated_at) * EXCLUDED.rate)
                         >= EXCLUDED.cost THEN EXCLUDED.cost ELSE 0 END,
    granted = LEAST(EXCLUDED.capacity, b.tokens + (EXCLUDED.updated_at - b.updated_at) * EXCLUDED.rate)
              >= EXCLUDED.cost,
    capacity = EXCLUDED.capacity, rate = EXCLUDED.rate, cost = EXCLUDED.cost, updated_at = EXCLUDED.updated_at
RETURNING b.scope, b.key, b.granted, b.tokens
"""
_PEEK = """
SELECT LEAST(%(capacity)s, b.tokens + (extract(epoch from statement_timestamp()) - b.updated_at) * %(rate)s)
FROM rate_buckets AS b WHERE b.scope = %(scope)s AND b.key = %(key)s
"""


class SharedBuckets:
    """The connection pool of the shared buckets of one database: its own small autocommit pool, so a
    take is one round trip (no BEGIN/COMMIT) and never waits behind ingest transactions."""

    def __init__(self, db: Database, pool_size: int = 4) -> None:
        if not db.is_postgres:
            raise ValueError("shared rate limits need PostgreSQL; SQLite has one node: use RateLimiter")
        self.engine = postgres_engine(db.url, pool_size=pool_size, isolation_level="AUTOCOMMIT")

    def take(self, takes: Sequence[tuple[SharedRateLimiter, str, float]]) -> float:
        """Take every (limiter, key, cost) in one statement: 0 when all were granted, else the longest
        wait of the refused ones. (Granted ones stay taken: the request is refused anyway.)"""
        merged: dict[tuple[str, str], tuple[SharedRateLimiter, float]] = {}
        for limiter, key, cost in takes:
            if limiter.enabled:
                # One row per bucket: ON CONFLICT cannot update a row twice in one statement.
                previous = merged.get((limiter.scope, key[:256]))
                merged[(limiter.scope, key[:256])] = (limiter, cost + (previous[1] if previous else 0.0))
        if not merged:
            return 0.0
        params = {"scopes": [scope for scope, _ in merged], "keys": [key for _, key in merged],
                  "capacities": [lim.capacity for lim, _ in merged.values()],
                  "rates": [lim.rate for lim, _ in merged.values()],
                  "costs": [cost for _, cost in merged.values()]}
        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql(_TAKE, params).all()
        except sa.exc.DBAPIError as exc:
            # Fail open: with the database away the request fails anyway (503), and a limit must not
            # turn a database hiccup into refusals that outlast it.
            log.warning("rate limits not counted, database error: %s", exc.orig)
            return 0.0
        wait = 0.0
        for scope, key, granted, tokens in rows:
            if not granted:
                limiter, cost = merged[(scope, key)]
                wait = max(wait, (cost - float(tokens)) / limiter.rate)
        return wait

    def dispose(self) -> None:
        self.engine.dispose()


class SharedRateLimiter:
    """The token bucket of ``RateLimiter``, kept in the database's ``rate_buckets`` table (PostgreSQL)
    so every collector node counts against the same budget. ``scope`` separates the kinds of limit."""

    def __init__(self, buckets: SharedBuckets, scope: str, per_minute: int) -> None:
        self.buckets = buckets
        self.scope = scope
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when allowed (and the cost is taken); otherwise seconds until it would be allowed."""
        return self.buckets.take([(self, key, cost)])

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` could be taken (0: now), taking nothing."""
        if not self.enabled:
            return 0.0
        try:
            with self.buckets.engine.connect() as conn:
                tokens = conn.exec_driver_sql(_PEEK, {"scope": self.scope, "key": key[:256],
                                                      "capacity": self.capacity, "rate": self.rate}).scalar()
        except sa.exc.DBAPIError as exc:
            log.warning("rate limit %s not read, database error: %s", self.scope, exc.orig)
            return 0.0
        if tokens is None or float(tokens) >= cost:
            return 0.0
        return (cost - float(tokens)) / self.rate


def take_together(takes: Sequence[tuple[Limiter, str]]) -> float:
    """Take one token from each (limiter, key): shared buckets of one database in a single statement.
    0 when all were granted, else the longest wait."""
    shared: dict[int, list[tuple[SharedRateLimiter, str, float]]] = {}
    wait = 0.0
    for limiter, key in takes:
        if isinstance(limiter, SharedRateLimiter):
            shared.setdefault(id(limiter.buckets), []).append((limiter, key, 1.0))
        else:
            wait = max(wait, limiter.take(key))
    for group in shared.values():
        wait = max(wait, group[0][0].buckets.take(group))
    return wait


class SharedFailureLimiter:
    """Failed sign-ins per key, counted in ``rate_buckets`` (the interface of the dashboard's in-process
    FailureLimiter): ``per_minute`` failures in a burst, then one more per 60/per_minute seconds."""

    def __init__(self, buckets: SharedBuckets, scope: str, per_minute: int) -> None:
        self.per_minute = per_minute
        self._bucket = SharedRateLimiter(buckets, scope, per_minute)

    def wait(self, key: str) -> float:
        return self._bucket.wait(key)

    def failed(self, key: str) -> None:
        self._bucket.take(key)


def make_limiter(buckets: Optional[SharedBuckets], scope: str, per_minute: int) -> Limiter:
    """Shared buckets on PostgreSQL (several nodes), in-process ones on SQLite (one node)."""
    if buckets is not None and per_minute > 0:
        return SharedRateLimiter(buckets, scope, per_minute)
    return RateLimiter(per_minute)


def prune_buckets(db: Database, *, idle_seconds: float = 120.0, batch: int = 10_000) -> int:
    """Delete buckets untouched for ``idle_seconds`` (every limit here is per minute and refills fully
    within one, so such a bucket is full: forgetting it changes nothing). Returns how many were deleted."""
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
