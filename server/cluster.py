"""What several collector nodes on one PostgreSQL share besides the data: change notices and singleton jobs.

* Change notices: ``notify(conn, channel)`` inside the transaction that made a change (PostgreSQL sends
  it at commit, to every node, or not at all); each node's listener thread runs the callbacks registered
  with ``Cluster.on(channel, ...)``, typically to drop a cache. After the listener reconnects it runs
  every callback once, since notices sent while it was away are lost.
* Singleton jobs: ``Cluster.singleton(name, interval, job)`` runs ``job`` every ``interval`` seconds on
  exactly one node of the cluster: the node that holds the PostgreSQL advisory lock of ``name`` on a
  connection of its own. The others try to take the lock every ``takeover`` seconds, so when the holder
  dies (its connection closes and PostgreSQL releases the lock) another node takes the job over.

On SQLite there is one node: notices are delivered in-process and every singleton job runs here.
"""

from __future__ import annotations

import logging
import random
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from server.store.db import Database

log = logging.getLogger(__name__)

# Channels (PostgreSQL identifiers): what changed.
POLICY_CHANNEL = "teleposture_policy"
# First key of every advisory lock taken here, so they cannot collide with other users of the database.
LOCK_NAMESPACE = 0x7465_6C65  # "tele"
RECONNECT_SECONDS = 2.0


def lock_key(name: str) -> int:
    """The second advisory-lock key of a singleton job: a stable 32-bit signed hash of its name."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def notify(conn: Connection, channel: str, payload: str = "") -> None:
    """Tell every node, when this transaction commits, that ``channel`` changed (no-op on SQLite: the
    one process calls its own callbacks through Cluster.changed)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def _session_engine(db: Database) -> Engine:
    """Connections held for a long time (LISTEN, advisory locks), outside the request pool. TCP
    keepalives make a dead peer (node or server) show within about a minute on another host."""
    return sa.create_engine(db.url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                            connect_args={"keepalives": 1, "keepalives_idle": 20, "keepalives_interval": 5,
                                          "keepalives_count": 4, "connect_timeout": 10})


@dataclass
class _Job:
    name: str
    interval: float
    run: Callable[[], None]
    takeover: float
    at_start: bool = False
    leading: threading.Event = field(default_factory=threading.Event)
    runs: int = 0


class Cluster:
    """This node's share of the cluster: listener thread and singleton-job threads (``start``/``stop``)."""

    def __init__(self, db: Database, *, listen_poll: float = 0.5) -> None:
        self.db = db
        self.listen_poll = listen_poll
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._jobs: list[_Job] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._engine: Optional[Engine] = _session_engine(db) if db.is_postgres else None
        self.listening = threading.Event()

    # --- change notices -------------------------------------------------------------------------------
    def on(self, channel: str, callback: Callable[[str], None]) -> None:
        """Run ``callback(payload)`` on this node whenever any node commits a change notice on ``channel``."""
        self._callbacks.setdefault(channel, []).append(callback)

    def changed(self, channel: str, payload: str = "") -> None:
        """Run this node's callbacks now (the change was made here; other nodes learn it by NOTIFY)."""
        for callback in self._callbacks.get(channel, []):
            try:
                callback(payload)
            except Exception:  # noqa: BLE001 (one failing callback must not stop the others or the listener)
                log.exception("callback for %s failed", channel)

    def _listen(self) -> None:
        assert self._engine is not None
        first = True
        while not self._stop.is_set():
            try:
                with self._engine.connect() as conn:
                    for channel in self._callbacks:
                        conn.exec_driver_sql(f'LISTEN "{channel}"')
                    if not first:
                        # Notices sent while this node was not listening are lost: assume everything changed.
                        for channel in self._callbacks:
                            self.changed(channel)
                    first = False
                    self.listening.set()
                    driver: Any = conn.connection.driver_connection
                    while not self._stop.is_set():
                        for notice in driver.notifies(timeout=self.listen_poll):
                            self.changed(notice.channel, notice.payload)
            except (sa.exc.DBAPIError, OSError) as exc:
                self.listening.clear()
                log.warning("change notices: connection lost (%s); reconnecting in %.0f s", exc, RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)
            except psycopg.Error as exc:  # notifies() is the driver's own call: its errors are not wrapped
                self.listening.clear()
                log.warning("change notices: %s; reconnecting in %.0f s", exc, RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)

    # --- singleton jobs -------------------------------------------------------------------------------
    def singleton(self, name: str, interval: float, job: Callable[[], None], *, takeover: float = 5.0,
                  at_start: bool = False) -> None:
        """Run ``job`` every ``interval`` seconds on one node of the cluster (register before ``start``).

        The node that takes a job over runs it at once; on SQLite (one node, no lock to take) the first run
        waits an interval, unless ``at_start``."""
        self._jobs.append(_Job(name, interval, job, takeover, at_start))

    def leads(self, name: str) -> bool:
        """Whether this node runs the singleton job ``name`` now."""
        return any(j.leading.is_set() for j in self._jobs if j.name == name)

    def runs(self, name: str) -> int:
        """How many times this node has run the singleton job ``name``."""
        return sum(j.runs for j in self._jobs if j.name == name)

    def job_names(self) -> list[str]:
        return [job.name for job in self._jobs]

    def _run_once(self, job: _Job) -> None:
        try:
            job.run()
            job.runs += 1
        except Exception:  # noqa: BLE001 (a failed run is logged and retried next interval, never fatal)
            log.exception("job %s failed; retrying in %.0f s", job.name, job.interval)

    def _wait(self, seconds: float) -> bool:
        # Jitter so nodes started together do not retry in lockstep.
        return self._stop.wait(seconds * random.uniform(0.8, 1.0))  # noqa: S311 (timing jitter)

    def _run_local(self, job: _Job) -> None:
        job.leading.set()
        if job.at_start:
            self._run_once(job)
        while not self._wait(job.interval):
            self._run_once(job)

    def _run_singleton(self, job: _Job) -> None:
        assert self._engine is not None
        key = lock_key(job.name)
        while not self._stop.is_set():
            try:
                with self._engine.connect() as conn:
                    while not self._stop.is_set():
                        taken = conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, :key)"),
                                             {"ns": LOCK_NAMESPACE, "key": key}).scalar()
                        if taken:
                            break
                        self._wait(job.takeover)
                    if self._stop.is_set():
                        return
                    job.leading.set()
                    log.info("job %s: this node runs it now", job.name)
                    self._run_once(job)
                    while not self._wait(job.interval):
                        # Still holding the lock? The connection may have dropped (server restart).
                        conn.exec_driver_sql("SELECT 1")
                        self._run_once(job)
            except (sa.exc.DBAPIError, OSError) as exc:
                log.warning("job %s: lock connection lost (%s); retrying in %.0f s", job.name, exc,
                            RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)
            finally:
                job.leading.clear()

    # --- life cycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._engine is not None and self._callbacks:
            self._spawn(self._listen, "cluster-listen")
        for job in self._jobs:
            target = self._run_singleton if self._engine is not None else self._run_local
            self._spawn(lambda job=job, target=target: target(job), f"job-{job.name}")  # type: ignore[misc]

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; a held lock is released when its connection closes."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._engine is not None:
            self._engine.dispose()
