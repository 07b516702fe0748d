"""All the SQL of report ingest (server.ingest), in the write transaction it is given.

The per-report statements run as plain driver SQL on the transaction's DBAPI cursor (``Driver``, on a
``Database.write_driver`` transaction): building Core expressions, and SQLAlchemy's result set-up per
execute, cost more CPU than the statements themselves (an evaluated report's writes through Core cost
~0.3 ms more). Column names are those of server/store/schema.py; ``:name`` placeholders (converted for
psycopg). Rarer reads (a refused claim, public keys) use Core, on the transaction's Connection.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.ingest_diff import Diff, RuleChange, StateRow
from server.store.schema import devices

# Taking a report's seq: dedupe (``last_seq < :seq``) and the row lock that serialises collectors.
_CLAIM = (
    "UPDATE devices SET last_seq = :seq, last_seen = :now, last_report_at = :created, last_report_id = :rid "
    "WHERE id = :id AND state = 'active' AND last_seq < :seq ")
CLAIM_SEQ = _CLAIM + (  # noqa: S608 (constant text only)
    "RETURNING org_unit_id, platform, compliance, fail_count, warn_count, error_count, disagreements, "
    "policy_ref, agent_policy_ref, agent_version, last_raw_report_at, eval_hash, eval_valid_until, machine_id, "
    # Whether a noncompliance ladder runs (most devices have none: then the batch skips _RUNNING_LADDERS). Read
    # in the claim's transaction, so a ladder another node started before it shows.
    "EXISTS (SELECT 1 FROM ladder_state WHERE ladder_state.device_id = devices.id)")
# The whole effect of an unchanged report, as one autocommit statement (server.ingest, a batch of one):
# CLAIM_SEQ's update, only when the report takes the ingest shortcut with nothing else to do, judged in the
# statement itself: same org unit (so the same policy) and evaluation inputs (eval_hash), results still
# valid, no raw payload due, no ladder running; ``{machine}``: the reported machine is the enrolled one.
# No row: the report goes the transaction's way (CLAIM_SEQ), which also finds what refused it.
_CLAIM_UNCHANGED = _CLAIM + (  # noqa: S608 (constant text only)
    "AND org_unit_id = :org_unit AND eval_hash = :eval_hash "
    "AND (eval_valid_until IS NULL OR :created < eval_valid_until) "
    "AND :now - last_raw_report_at < :raw_interval "
    "AND NOT EXISTS (SELECT 1 FROM ladder_state WHERE ladder_state.device_id = devices.id){machine} "
    "RETURNING compliance")
_ANY_MACHINE = _CLAIM_UNCHANGED.format(machine="")
_SAME_MACHINE = _CLAIM_UNCHANGED.format(machine=" AND (machine_id = :machine_id OR machine_id = '')")
_LOAD_STATE = (
    "SELECT rule_id, status, since, failing_since, reason, message, evidence, agent_status, check_id, severity "
    "FROM check_state WHERE device_id = :id")
_MARK_RAW_KEPT = "UPDATE devices SET last_raw_report_at = :now WHERE id = :id"
# The running noncompliance ladders of a batch's devices, with each episode's block (server.actions.ladder
# formats them); ``{ids}``: one placeholder per device.
_RUNNING_LADDERS = (
    "SELECT l.device_id, l.rule_id, l.severity, l.started_at, l.steps_fired, l.ladder, l.last_action, "
    "l.next_action, l.next_at, b.since FROM ladder_state l LEFT JOIN device_blocks b "
    "ON b.device_id = l.device_id AND b.rule_id = l.rule_id WHERE l.device_id IN ({ids}) "
    "ORDER BY l.device_id, l.next_at, l.rule_id")


class ClaimedDevice(NamedTuple):
    """The device row as CLAIM_SEQ returns it."""

    org_unit_id: int
    platform: str
    compliance: str
    fail_count: int
    warn_count: int
    error_count: int
    disagreements: int
    policy_ref: Optional[str]
    agent_policy_ref: Optional[str]
    agent_version: Optional[str]
    last_raw_report_at: Optional[float]
    eval_hash: Optional[str]
    eval_valid_until: Optional[float]
    machine_id: str
    has_ladder: bool  # SQLite gives 0 or 1


class RefusalRow(NamedTuple):
    state: str
    last_seq: int
    replaced_by: Optional[str]
    last_report_id: Optional[str]


class Driver:
    """A transaction's DBAPI cursor, with statements in the driver's placeholder style (``pyformat``:
    psycopg's %(name)s; else sqlite3's :name): the ingest transaction's
    (``Driver(transaction.cursor, transaction.pyformat)``), or a cursor of its own on a Core connection's
    transaction (``Driver.on(conn)``, for plain SQL beside Core statements, e.g. the access decision's inputs)."""

    def __init__(self, cursor: Any, pyformat: bool) -> None:
        self.cursor = cursor
        self.pyformat = pyformat

    @classmethod
    @contextlib.contextmanager
    def on(cls, conn: Connection) -> Iterator[Driver]:
        cursor = conn.connection.cursor()
        try:
            yield cls(cursor, conn.dialect.name == "postgresql")
        finally:
            cursor.close()

    def execute(self, sql: str, params: Mapping[str, Any]) -> None:
        self.cursor.execute(_pyformat(sql) if self.pyformat else sql, params)

    def execute_many(self, sql: str, params: Sequence[Mapping[str, Any]]) -> None:
        self.cursor.executemany(_pyformat(sql) if self.pyformat else sql, params)

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        return list(self.cursor.fetchall())

    def rows_each(self, sql: str, params: Sequence[Mapping[str, Any]]) -> list[list[tuple[Any, ...]]]:
        """The rows of ``sql`` run once per parameter set, in order. On PostgreSQL one pipelined round
        trip instead of one per statement (each statement still runs, and takes its locks, in order)."""
        if not self.pyformat or len(params) < 2:
            return [self.rows(sql, each) for each in params]
        cursor: Any = self.cursor  # psycopg's cursor: executemany(returning=True) and nextset()
        cursor.executemany(_pyformat(sql), params, returning=True)
        out = [list(cursor.fetchall())]
        while cursor.nextset():
            out.append(list(cursor.fetchall()))
        return out


def in_list(values: Sequence[Any], prefix: str) -> tuple[str, dict[str, Any]]:
    """Placeholders for ``IN (...)``, one per value (``:d0, :d1, ...`` for prefix ``d``), and their parameters."""
    names = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in names), names


@functools.cache
def _pyformat(sql: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", sql)


def public_keys(conn: Connection, device_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """(device id, PEM public key, org unit) of the known devices among ``device_ids``."""
    rows = conn.execute(sa.select(devices.c.id, devices.c.public_key, devices.c.org_unit_id)
                        .where(devices.c.id.in_(list(device_ids))))
    return [(str(row.id), str(row.public_key), int(row.org_unit_id)) for row in rows]


def claim_params(device_id: str, seq: int, created_at: float, report_id: str, now: float) -> dict[str, Any]:
    return {"seq": seq, "now": now, "created": created_at, "id": device_id, "rid": report_id}


def claim_many(driver: Driver, params: Sequence[Mapping[str, Any]]) -> list[Optional[ClaimedDevice]]:
    """Take each seq (dedupe + row lock, in the order given): the device row, or None when refused."""
    return [ClaimedDevice(*rows[0]) if rows else None for rows in driver.rows_each(CLAIM_SEQ, params)]


def claim_unchanged(driver: Driver, params: Mapping[str, Any], machine_id: Optional[str]) -> Optional[str]:
    """_CLAIM_UNCHANGED (``params``: claim_params and org_unit, eval_hash, raw_interval; ``machine_id``: the
    reported one, if any): the device's compliance when it took the seq, else None (nothing changed)."""
    if machine_id:
        rows = driver.rows(_SAME_MACHINE, {**params, "machine_id": machine_id})
    else:
        rows = driver.rows(_ANY_MACHINE, params)
    return str(rows[0][0]) if rows else None


def refusal(conn: Connection, device_id: str) -> Optional[RefusalRow]:
    """Why a claim was refused: the device's state and last seq (None: unknown device)."""
    row = conn.execute(sa.select(devices.c.state, devices.c.last_seq, devices.c.replaced_by,
                                 devices.c.last_report_id).where(devices.c.id == device_id)).first()
    return None if row is None else RefusalRow(str(row.state), int(row.last_seq), row.replaced_by, row.last_report_id)


def load_states(driver: Driver, device_id: str) -> dict[str, StateRow]:
    return {str(r[0]): StateRow(*r[1:]) for r in driver.rows(_LOAD_STATE, {"id": device_id})}


_INSERT_STATE = (
    "INSERT INTO check_state (device_id, rule_id, org_unit_id, active, status, since, failing_since, reason, message, "
    "evidence, agent_status, check_id, severity, updated_at) VALUES (:device_id, :rule_id, :org_unit_id, :active, "
    ":status, :since, :failing_since, :reason, :message, :evidence, :agent_status, :check_id, :severity, :updated_at)")
_UPDATE_STATE = (
    "UPDATE check_state SET status = :status, since = :since, failing_since = :failing_since, reason = :reason, "
    "message = :message, evidence = :evidence, agent_status = :agent_status, check_id = :check_id, "
    "severity = :severity, updated_at = :updated_at WHERE device_id = :device_id AND rule_id = :rule_id")
_INSERT_TRANSITION = (
    "INSERT INTO transitions (device_id, rule_id, check_id, old_status, new_status, at, recorded_at, seq, reason, "
    "message, org_unit_id) VALUES (:device_id, :rule_id, :check_id, :old_status, :new_status, :at, :recorded_at, "
    ":seq, :reason, :message, :org_unit_id)")
# ``{rules}``: one placeholder per rule.
_DELETE_GONE = "DELETE FROM check_state WHERE device_id = :device_id AND rule_id IN ({rules})"
_INSERT_RAW = (
    "INSERT INTO reports (device_id, seq, report_id, created_at, received_at, compliance, policy_ref, payload, "
    "signature) VALUES (:device_id, :seq, :report_id, :created_at, :received_at, :compliance, :policy_ref, :payload, "
    ":signature)")
# The device columns an evaluation may set (server.ingest._apply): update_device names no other.
_DEVICE_COLUMNS = frozenset(("compliance", "compliance_since", "fail_count", "warn_count", "error_count",
                             "disagreements", "policy_ref", "agent_policy_ref", "agent_version", "eval_hash",
                             "eval_valid_until", "last_raw_report_at"))


def _state_values(row: StateRow, now: float) -> dict[str, Any]:
    return {"status": row.status, "since": row.since, "failing_since": row.failing_since, "reason": row.reason,
            "message": row.message, "evidence": row.evidence, "agent_status": row.agent_status,
            "check_id": row.check_id, "severity": row.severity, "updated_at": now}


def write_diff(driver: Driver, device_id: str, org_unit_id: int, seq: int, at: float, now: float,
               diff: Diff) -> None:
    """Store an evaluation's state writes, transitions and removed rules: one executemany per kind of row
    (a first report writes ~2 rows per rule)."""
    inserts = [{"device_id": device_id, "rule_id": w.rule_id, "org_unit_id": org_unit_id, "active": True,
                **_state_values(w.row, now)} for w in diff.writes if w.insert]
    updates = [{"device_id": device_id, "rule_id": w.rule_id, **_state_values(w.row, now)}
               for w in diff.writes if not w.insert]
    if inserts:
        driver.execute_many(_INSERT_STATE, inserts)
    if updates:
        driver.execute_many(_UPDATE_STATE, updates)
    if diff.changes:
        driver.execute_many(_INSERT_TRANSITION, [_transition(c, device_id, org_unit_id, seq, at, now)
                                                 for c in diff.changes])
    if diff.gone:
        # The policy no longer has these rules: their state is no longer current.
        placeholders, names = in_list(diff.gone, "r")
        driver.execute(_DELETE_GONE.format(rules=placeholders), {"device_id": device_id, **names})


def _transition(change: RuleChange, device_id: str, org_unit_id: int, seq: int, at: float,
                now: float) -> dict[str, Any]:
    return {"device_id": device_id, "rule_id": change.rule_id, "check_id": change.check_id,
            "old_status": change.old_status, "new_status": change.new_status, "at": at, "recorded_at": now,
            "seq": seq, "reason": change.reason, "message": change.message, "org_unit_id": org_unit_id}


def update_device(driver: Driver, device_id: str, values: Mapping[str, Any]) -> None:
    """Set ``values`` (columns of _DEVICE_COLUMNS) on the device row."""
    sql = _update_device_sql(tuple(sorted(values)))
    driver.execute(sql, {**values, "id": device_id})


@functools.cache
def _update_device_sql(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - _DEVICE_COLUMNS
    if unknown:
        raise ValueError(f"not a device column an evaluation sets: {sorted(unknown)}")
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    return f"UPDATE devices SET {assignments} WHERE id = :id"  # noqa: S608 (names from _DEVICE_COLUMNS)


def mark_raw_kept(driver: Driver, device_id: str, now: float) -> None:
    driver.execute(_MARK_RAW_KEPT, {"id": device_id, "now": now})


def keep_raw(driver: Driver, *, device_id: str, seq: int, report_id: str, created_at: float, now: float,
             compliance: str, policy_ref: str, payload: str, signature: str) -> None:
    driver.execute(_INSERT_RAW, {"device_id": device_id, "seq": seq, "report_id": report_id,
                                 "created_at": created_at, "received_at": now, "compliance": compliance,
                                 "policy_ref": policy_ref, "payload": payload, "signature": signature})


def running_ladders(driver: Driver, device_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of every running ladder episode of ``device_ids`` (see _RUNNING_LADDERS for the columns)."""
    if not device_ids:
        return []
    placeholders, names = in_list(device_ids, "d")
    return driver.rows(_RUNNING_LADDERS.format(ids=placeholders), names)
