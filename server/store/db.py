"""Engines for the collector database: SQLite (WAL, busy timeout) or PostgreSQL (psycopg 3).

`Database.read()` gives a connection for queries; `Database.write()` a transaction for changes;
`Database.write_driver()` the same transaction on the pooled DBAPI connection itself, for a hot path whose
statements are driver SQL (report ingest). On SQLite a write transaction starts with BEGIN IMMEDIATE (it
takes the write lock up front, so two writers never deadlock upgrading a read lock) and writers of one
process queue on a lock instead of polling the database file; other processes wait up to busy_timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIModule

SQLITE_BUSY_TIMEOUT_MS = 15000
PING_AFTER_IDLE_SECONDS = 5.0


class DatabaseURLError(ValueError):
    """The database URL names a backend the collector does not support."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+pysqlite:///{(Path(data_dir) / 'teleposture.db').resolve()}"


def backend_of(url: str) -> str:
    name = sa.engine.make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise DatabaseURLError(
            f"unsupported database URL {sa.engine.make_url(url).render_as_string(hide_password=True)!r}: "
            "expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB")
    return name


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    sa_url = sa.engine.make_url(url)
    if sa_url.database and sa_url.database != ":memory:":
        Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_size=8, max_overflow=8,
                              connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite would BEGIN lazily).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL in WAL mode: a commit is durable against application crashes; an OS crash may lose
        # the last transactions but never corrupts the database.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A DriverTransaction began it already when its Core connection starts its first statement.
        if not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def ping_when_idle(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Check a pooled connection with a round trip only when it sat idle for ``idle_seconds``: a busy
    collector checks connections out hundreds of times a second, and SQLAlchemy's pool_pre_ping would
    add a round trip to each (a third of a batch-of-one report's CPU). A connection in use a moment ago
    is alive; one that idled may have been closed by the server, a proxy or a restart."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("checked_in_at")
        if last is None or time.monotonic() - last < idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except psycopg.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


def postgres_engine(url: str, *, pool_size: int = 8, **options: Any) -> Engine:
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, **options)
    ping_when_idle(engine)
    return engine


class DriverTransaction:
    """One write transaction on a pooled DBAPI connection (``Database.write_driver``).

    ``cursor`` runs driver SQL (the placeholder style of ``pyformat``); ``conn`` is a SQLAlchemy Connection
    on the same DBAPI connection, so the rarer Core writes join the same transaction. SQLAlchemy's own
    transaction (a Connection from the pool, the "begin" event's BEGIN through the dialect, COMMIT and the
    reset on return) cost a batch-of-one report more CPU than its seq claim. ``conn`` is built when first
    asked for (5 us that a transaction of driver SQL alone does not spend).

    ``autocommit``: each statement commits by itself (no BEGIN, no COMMIT: on PostgreSQL two round trips
    fewer), for a single statement that is the whole change; ``conn`` is not available then.
    """

    def __init__(self, engine: Engine, *, autocommit: bool = False) -> None:
        self.engine = engine
        self.pyformat = engine.dialect.name == "postgresql"  # psycopg: %(name)s; sqlite3: :name
        self.autocommit = autocommit
        self._conn: Connection | None = None
        self._dbapi = engine.raw_connection()  # the pool's checkout, with its events (ping_when_idle)
        try:
            if autocommit and self.pyformat:
                self._dbapi.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self.cursor = self._dbapi.cursor()
            if not self.pyformat and not autocommit:
                # As the write engine's "begin" event does; psycopg begins by itself at the first statement.
                # (sqlite3 with isolation_level None commits each statement outside BEGIN by itself.)
                self.cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._close_dbapi()
            raise

    @property
    def conn(self) -> Connection:
        if self.autocommit:
            raise RuntimeError("an autocommit driver transaction has no SQLAlchemy Connection")
        if self._conn is None:
            self._conn = Connection(self.engine, self._dbapi)
        return self._conn

    def _core_began(self) -> bool:
        return self._conn is not None and self._conn.in_transaction()

    def commit(self) -> None:
        if self._core_began():  # Core statements ran: SQLAlchemy's COMMIT ends the one transaction
            self.conn.commit()
        elif not self.autocommit:
            self._dbapi.commit()

    def rollback(self) -> None:
        if self._core_began():
            self.conn.rollback()
        elif not self.autocommit:
            self._dbapi.rollback()

    def close(self) -> None:
        """Return the DBAPI connection to the pool (or drop it when it broke: ``invalidate``)."""
        self.cursor.close()
        if self._conn is not None:
            self._conn.close()
        else:
            self._close_dbapi()

    def _close_dbapi(self) -> None:
        raw: Any = self._dbapi.dbapi_connection  # None once invalidated
        if self.autocommit and self.pyformat and raw is not None and not raw.closed:
            try:
                raw.autocommit = False  # as the pool lends it out
            except self.engine.dialect.loaded_dbapi.Error as exc:  # broken: not for the pool again
                self._dbapi.invalidate(exc)
        self._dbapi.close()

    def abandon(self, error: DBAPIModule.Error) -> bool:
        """Roll back after the driver raised ``error``; True when the connection is dead and was dropped from
        the pool instead (as SQLAlchemy does for its own Connection)."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        if not self.engine.dialect.is_disconnect(error, self._dbapi.dbapi_connection, self.cursor):
            try:
                self.rollback()
                return False
            except dbapi_error:
                pass
        self._dbapi.invalidate(error)
        return True


class Database:
    """The two engines (read and write) of one database URL."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.backend = backend_of(url)
        self._write_lock: threading.Lock | None
        if self.backend == "sqlite":
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
            self._write_lock = threading.Lock()
        else:
            self.read_engine = postgres_engine(url, pool_size=pool_size)
            self.write_engine = self.read_engine
            self._write_lock = None

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock or contextlib.nullcontext(), self.write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def write_driver(self, *, autocommit: bool = False) -> Iterator[DriverTransaction]:
        """``write()``'s transaction (same lock, BEGIN IMMEDIATE with its busy timeout, pool and idle ping)
        on the pooled DBAPI connection. Commits when the block ends, rolls back when it raises; the driver's
        errors are raised as ``sqlalchemy.exc.DBAPIError``, as ``write()`` raises them. ``autocommit``: each
        statement is a transaction of its own (DriverTransaction)."""
        with self._write_lock or contextlib.nullcontext():
            dbapi_error = self.write_engine.dialect.loaded_dbapi.Error
            try:
                transaction = DriverTransaction(self.write_engine, autocommit=autocommit)
            except dbapi_error as exc:
                raise sa.exc.DBAPIError.instance(None, None, exc, dbapi_error) from exc
            try:
                yield transaction
                transaction.commit()
            except dbapi_error as exc:
                dead = transaction.abandon(exc)
                raise sa.exc.DBAPIError.instance(None, None, exc, dbapi_error, connection_invalidated=dead) from exc
            except BaseException:
                transaction.rollback()
                raise
            finally:
                transaction.close()

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()

    def display_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)
