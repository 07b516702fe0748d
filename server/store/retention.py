"""Bounded storage: retention of raw reports and history (the events outbox: server.actions.delivery).

On PostgreSQL the time-ordered history tables are partitioned by month (native declarative range
partitioning on their epoch-seconds time column, plus a DEFAULT partition so an insert never fails
for a time no partition covers). Retention drops whole partitions, which frees their space at once
and leaves no dead rows for VACUUM. On SQLite, and for the few rows a DEFAULT partition may hold,
retention deletes in batches, each batch its own short transaction, so ingest is never blocked long.

Partition management is generic: a table joins by adding one `Partitioned` entry to `PARTITIONED`
and by being created ``PARTITION BY RANGE (<time column>)`` in its migration (see
`create_partitioned_copy`). The events outbox does not: deliveries reference events by id alone, and
an event still owed to a sink must outlive its month (``delivery.prune_outbox`` deletes in batches).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.settings import Settings
from server.store import maintenance
from server.store.db import Database
from server.store.schema import reports

log = logging.getLogger(__name__)

# Months created ahead of the current one, so inserts land in a real partition, not DEFAULT.
MONTHS_AHEAD = 2


@dataclass(frozen=True)
class Partitioned:
    """A table partitioned by month on PostgreSQL (and pruned by batched deletes on SQLite)."""

    table: str
    time_column: str  # epoch seconds (schema.Time)
    retention_setting: str  # the Settings field holding how long rows are kept (seconds)
    id_column: str = "id"  # what the batched deletes select by


PARTITIONED: tuple[Partitioned, ...] = (
    Partitioned("transitions", "at", "history_retention"),
)

# Tables pruned by batched deletes on every backend (not partitioned): table, time column, setting.
DELETED_IN_BATCHES: tuple[Partitioned, ...] = (
    Partitioned("reports", "received_at", "report_retention"),
)

_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})(?P<month>\d{2})$")


def month_start(ts: float) -> tuple[int, int]:
    """(year, month) of the UTC month holding ``ts``."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.year, moment.month


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_bounds(year: int, month: int) -> tuple[float, float]:
    """Epoch seconds of the first instant of the month and of the next one (UTC)."""
    start = datetime(year, month, 1, tzinfo=timezone.utc).timestamp()
    end = datetime(*next_month(year, month), 1, tzinfo=timezone.utc).timestamp()
    return start, end


def partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}{month:02d}"


def default_partition_name(table: str) -> str:
    return f"{table}_default"


def is_partition_name(name: str) -> bool:
    """True for the child tables this module creates (schema comparisons leave them out)."""
    match = _PARTITION_NAME.match(name)
    if match is not None and any(match.group("table") == spec.table for spec in PARTITIONED):
        return True
    return any(name == default_partition_name(spec.table) for spec in PARTITIONED)


def is_partitioned(conn: Connection, table: str) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()
    return kind == "p"


def month_partitions(conn: Connection, table: str) -> dict[tuple[int, int], str]:
    """The monthly partitions attached to ``table``: (year, month) -> partition name."""
    names = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:t)"), {"t": table}).scalars()
    found: dict[tuple[int, int], str] = {}
    for name in names:
        match = _PARTITION_NAME.match(name)
        if match is not None and match.group("table") == table:
            found[(int(match.group("year")), int(match.group("month")))] = name
    return found


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def create_month_partition(conn: Connection, spec: Partitioned, year: int, month: int) -> str:
    """Attach the partition for one month, first moving into it any rows the DEFAULT partition holds
    for that month (PostgreSQL refuses to attach a range that DEFAULT already has rows for)."""
    name = partition_name(spec.table, year, month)
    low, high = month_bounds(year, month)
    table, child = _quote(conn, spec.table), _quote(conn, name)
    default = _quote(conn, default_partition_name(spec.table))
    column = _quote(conn, spec.time_column)
    conn.execute(sa.text(f"CREATE TABLE {child} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    move = (f"WITH moved AS (DELETE FROM {default} WHERE {column} >= :low AND {column} < :high RETURNING *) "  # noqa: S608
            f"INSERT INTO {child} SELECT * FROM moved")
    conn.execute(sa.text(move), {"low": low, "high": high})
    conn.execute(sa.text(f"ALTER TABLE {table} ATTACH PARTITION {child} FOR VALUES FROM ({low!r}) TO ({high!r})"))
    return name


def create_partitioned_copy(conn: Connection, spec: Partitioned, *, now: Optional[float] = None) -> int:
    """Rebuild an existing plain PostgreSQL table as a partitioned one with the same columns,
    constraints, indexes, sequence and rows (for migrations). Returns the number of rows copied.

    The primary key and unique constraints gain the time column (PostgreSQL requires the partition
    key in every unique constraint of a partitioned table); a unique constraint's name gains it too.
    """
    current = time.time() if now is None else now
    q = lambda name: _quote(conn, name)  # noqa: E731 (local shorthand)
    old = f"{spec.table}_before_partitioning"
    table = q(spec.table)
    uniques = conn.execute(sa.text(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(:t) AND contype IN ('p', 'u') ORDER BY contype"), {"t": spec.table}).all()
    indexes = conn.execute(sa.text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t))"), {"t": spec.table}).all()
    conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {q(old)}"))
    # Constraint and index names are schema-wide on PostgreSQL: free them for the new table.
    for name, _kind, _definition in uniques:
        conn.execute(sa.text(f"ALTER TABLE {q(old)} DROP CONSTRAINT {q(name)}"))
    for name, _definition in indexes:
        conn.execute(sa.text(f"DROP INDEX {q(name)}"))
    conn.execute(sa.text(f"CREATE TABLE {table} (LIKE {q(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
                         f"PARTITION BY RANGE ({q(spec.time_column)})"))
    for name, kind, definition in uniques:
        columns = definition[definition.index("(") + 1:definition.rindex(")")]
        # The schema's naming convention lists a unique constraint's columns, and it gains one.
        new_name = name if kind == "p" else f"{name}_{spec.time_column}"
        conn.execute(sa.text(f"ALTER TABLE {table} ADD CONSTRAINT {q(new_name)} "
                             f"{'PRIMARY KEY' if kind == 'p' else 'UNIQUE'} ({columns}, {q(spec.time_column)})"))
    for _name, definition in indexes:
        # Read before the rename, so each definition names the new (partitioned) table.
        conn.execute(sa.text(definition))
    # Foreign keys are not copied by LIKE.
    for name, definition in conn.execute(sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype = 'f'"), {"t": old}).all():
        conn.execute(sa.text(f"ALTER TABLE {q(old)} DROP CONSTRAINT {q(name)}"))
        conn.execute(sa.text(f"ALTER TABLE {table} ADD CONSTRAINT {q(name)} {definition}"))
    conn.execute(sa.text(f"CREATE TABLE {q(default_partition_name(spec.table))} PARTITION OF {table} DEFAULT"))
    oldest = conn.execute(sa.text(f"SELECT min({q(spec.time_column)}) FROM {q(old)}")).scalar()  # noqa: S608
    first = month_start(min(float(oldest), current) if oldest is not None else current)
    ensure_partitions(conn, spec, first=first, now=current)
    copied = conn.execute(sa.text(f"INSERT INTO {table} SELECT * FROM {q(old)}")).rowcount or 0  # noqa: S608
    # The id sequence moves to the new table so ids keep counting up.
    for (sequence,) in conn.execute(sa.text(
            "SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "WHERE d.refobjid = to_regclass(:t) AND d.deptype = 'a'"), {"t": old}).all():
        column = conn.execute(sa.text(
            "SELECT a.attname FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid "
            "AND a.attnum = d.refobjsubid WHERE d.objid = to_regclass(:s) AND d.deptype = 'a'"),
            {"s": sequence}).scalar_one()
        conn.execute(sa.text(f"ALTER SEQUENCE {q(sequence)} OWNED BY {table}.{q(column)}"))
    conn.execute(sa.text(f"DROP TABLE {q(old)}"))
    return int(copied)


def ensure_partitions(conn: Connection, spec: Partitioned, *, first: tuple[int, int],
                      now: Optional[float] = None) -> list[str]:
    """Create the missing monthly partitions from month ``first`` to MONTHS_AHEAD months after now."""
    current = time.time() if now is None else now
    last = month_start(current)
    for _ in range(MONTHS_AHEAD):
        last = next_month(*last)
    existing = month_partitions(conn, spec.table)
    created = []
    month = first
    while month <= last:
        if month not in existing:
            created.append(create_month_partition(conn, spec, *month))
        month = next_month(*month)
    return created


def drop_expired_partitions(conn: Connection, spec: Partitioned, *, cutoff: float) -> list[str]:
    """Drop the monthly partitions whose every row is older than ``cutoff``."""
    dropped = []
    for (year, month), name in sorted(month_partitions(conn, spec.table).items()):
        if month_bounds(year, month)[1] <= cutoff:
            conn.execute(sa.text(f"ALTER TABLE {_quote(conn, spec.table)} DETACH PARTITION {_quote(conn, name)}"))
            conn.execute(sa.text(f"DROP TABLE {_quote(conn, name)}"))
            dropped.append(name)
    return dropped


def delete_expired_batch(conn: Connection, table: str, time_column: str, id_column: str, *, cutoff: float,
                         batch: int) -> int:
    """Delete at most ``batch`` rows older than ``cutoff`` (oldest first, along the time index)."""
    target = sa.table(table, sa.column(id_column), sa.column(time_column))
    ids = (sa.select(target.c[id_column]).where(target.c[time_column] < cutoff)
           .order_by(target.c[time_column]).limit(batch))
    if conn.dialect.name == "postgresql":
        # PostgreSQL cannot LIMIT a DELETE; a scalar subquery list keeps it one statement.
        ids = ids.scalar_subquery()  # type: ignore[assignment]
    return int(conn.execute(target.delete().where(target.c[id_column].in_(ids))).rowcount or 0)


def prune_reports(conn: Connection, *, retention: float, now: Optional[float] = None,
                  batch: int = 5000) -> int:
    """Delete raw reports received more than ``retention`` seconds ago, at most ``batch`` rows per call."""
    cutoff = (time.time() if now is None else now) - retention
    return delete_expired_batch(conn, reports.name, "received_at", "id", cutoff=cutoff, batch=batch)


@dataclass
class RetentionRun:
    """What one retention run did, per table."""

    deleted: dict[str, int] = field(default_factory=dict)
    dropped_partitions: list[str] = field(default_factory=list)
    created_partitions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "dropped_partitions": self.dropped_partitions,
                "created_partitions": self.created_partitions}


def run_retention(db: Database, retention: dict[str, float], *, now: Optional[float] = None, batch: int = 5000,
                  should_stop: Optional[Callable[[], bool]] = None) -> RetentionRun:
    """Enforce every retention setting once (``retention`` maps Settings field names to seconds).

    Each batch and each partition change is its own transaction. Idempotent: any node may run it;
    two runs at once only race to delete the same rows (PostgreSQL DDL takes its own locks)."""
    current = time.time() if now is None else now
    run = RetentionRun()
    stop = should_stop or (lambda: False)
    for spec in PARTITIONED:
        cutoff = current - retention[spec.retention_setting]
        with db.write() as conn:
            partitioned = is_partitioned(conn, spec.table)
        if partitioned:
            with db.write() as conn:
                _lock_partitions(conn, spec)
                run.created_partitions += ensure_partitions(conn, spec, first=month_start(cutoff), now=current)
            with db.write() as conn:
                _lock_partitions(conn, spec)
                run.dropped_partitions += drop_expired_partitions(conn, spec, cutoff=cutoff)
        # Without partitions (SQLite), or the rows a DEFAULT partition holds for old times.
        target = default_partition_name(spec.table) if partitioned else spec.table
        run.deleted[spec.table] = _delete_all(db, target, spec, cutoff=cutoff, batch=batch, stop=stop)
    for spec in DELETED_IN_BATCHES:
        cutoff = current - retention[spec.retention_setting]
        run.deleted[spec.table] = _delete_all(db, spec.table, spec, cutoff=cutoff, batch=batch, stop=stop)
    return run


def _lock_partitions(conn: Connection, spec: Partitioned) -> None:
    """Serialise partition changes of one table across processes and nodes (every one runs the job):
    held until the transaction ends, and the partitions are read again after it is granted."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                 {"name": f"teleposture.partitions.{spec.table}"})


def _delete_all(db: Database, target: str, spec: Partitioned, *, cutoff: float, batch: int,
                stop: Callable[[], bool]) -> int:
    total = 0
    while not stop():
        with db.write() as conn:
            deleted = delete_expired_batch(conn, target, spec.time_column, spec.id_column, cutoff=cutoff,
                                           batch=batch)
        total += deleted
        if deleted < batch:
            break
    return total


def enforce(db: Database, settings: Settings, *, now: Optional[float] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> RetentionRun:
    """The maintenance job's retention step: history, raw reports and rollups, per the settings."""
    limits = {name: float(getattr(settings, name))
              for name in {spec.retention_setting for spec in (*PARTITIONED, *DELETED_IN_BATCHES)}}
    run = run_retention(db, limits, now=now, batch=settings.retention_batch, should_stop=should_stop)
    with db.write() as conn:
        run.deleted["rollups"] = maintenance.prune_rollups(conn, retention=settings.rollup_retention, now=now)
    if run.dropped_partitions or any(run.deleted.values()):
        log.info("retention: %s", run.as_dict())
    return run
