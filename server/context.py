"""The collector's application context: what every route, page and job of one process shares.

Its own module (not server.app) so that the route modules (server.api.*, server.web.*) and the jobs can
import it while server.app imports them to build the application.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import protocol
from server.cluster import Cluster
from server.ingest import Ingestor
from server.metrics import Metrics
from server.ratelimit import Limiter, RateLimiter, SharedBuckets
from server.settings import Settings
from server.store.db import Database


class ServerKeyError(RuntimeError):
    """The server signing key is missing or unreadable."""


# Ingest threads per process. PostgreSQL: one per concurrent upload that waits on the network (more than
# database connections would only queue on the pool). SQLite: one, since a process writes one transaction
# at a time (Database's write lock) and the GIL runs one thread's Python at a time: with 16, the threads
# queued on that lock, each hand-over a context switch, and at one report per request that cost
# 0.2-0.3 ms of CPU per report (benchmarks/collector_load.py, batch 1).
INGEST_THREADS = {"postgresql": 16, "sqlite": 1}


@dataclass
class AppContext:
    settings: Settings
    db: Database
    server_key: Ed25519PrivateKey
    server_public_key: str
    ingestor: Ingestor
    device_limiter: Limiter
    ip_limiter: Limiter
    # This node's own copy of the address limit, checked before a report batch is read (PostgreSQL:
    # the shared count is taken later, together with the devices', in one statement).
    ip_flood_limiter: RateLimiter
    shared_buckets: Optional[SharedBuckets]  # PostgreSQL: the rate_buckets table; None on SQLite
    cluster: Cluster  # change notices and once-per-cluster jobs shared with the other nodes
    metrics: Metrics = field(default_factory=Metrics)
    bundles: dict[int, dict[str, str]] = field(default_factory=dict)  # policy pk -> signed bundle
    bundle_lock: threading.Lock = field(default_factory=threading.Lock)
    # The threads report ingest runs in (server.api.agent): a plain executor costs the event loop a fraction
    # of what anyio's thread hop (run_in_threadpool) does, which at one report per request was a large
    # share of the request's CPU. More threads than database connections would only queue on the pool.
    ingest_pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.ingest_pool = ThreadPoolExecutor(max_workers=INGEST_THREADS[self.db.backend],
                                              thread_name_prefix="ingest")

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
