"""The background loop of server.actions: due ladder steps, expired exceptions, delivery to sinks.

Started by server.app beside the maintenance loop, in every collector process: each job is safe to run
in several processes at once (see server.actions.ladder.fire_due_steps and server.actions.delivery).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.actions import delivery, ladder
from server.store.db import Database

log = logging.getLogger(__name__)


# Sinks are independent: each gets its own thread per pass, so a slow or unreachable one (waiting for its
# timeout) does not hold back the others.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="deliver")


def run_once(db: Database, server_key: Ed25519PrivateKey, policy: delivery.DeliveryPolicy) -> int:
    """One pass of every job; how much work it did (0: nothing was due)."""
    work = 0
    now = time.time()
    with db.write() as conn:
        work += ladder.fire_due_steps(conn, now)
        work += ladder.expire_exceptions(conn, now)
    with db.read() as conn:
        targets = delivery.load_sinks(conn, server_key)
    for result in _POOL.map(lambda sink: delivery.deliver_sink(db, sink, policy=policy), targets):
        work += result.delivered
    return work


def loop(db: Database, server_key: Ed25519PrivateKey, policy: delivery.DeliveryPolicy, interval: float,
         stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            busy = run_once(db, server_key, policy)
        except Exception:  # noqa: BLE001 (a failed pass is logged and retried, never fatal to the collector)
            log.exception("actions pass failed; retrying in %.0f s", interval)
            busy = 0
        if not busy:
            stop.wait(interval)


def start(db: Database, server_key: Ed25519PrivateKey, policy: delivery.DeliveryPolicy, interval: float,
          stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=loop, args=(db, server_key, policy, interval, stop), name="actions",
                              daemon=True)
    thread.start()
    return thread
