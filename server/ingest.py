"""Report ingest: verify -> dedupe -> re-evaluate -> update state and history, in one transaction.

Order per batch:
1. every envelope's signature is checked with its device's key BEFORE the payload is parsed
   (agent.protocol.open_envelope), outside any database transaction;
2. one write transaction: per device (sorted, so processes lock devices in the same order) and per
   seq, an atomic conditional UPDATE of the device row (``last_seq < :seq AND state = 'active'``) both
   dedupes and takes the row lock that serialises concurrent collectors on PostgreSQL;
3. when the report's evaluation inputs (policy version, platform, facts, the agent's own statuses and
   version) hash the same as the last evaluation's (``devices.eval_hash``) and the report is older than
   that evaluation's ``eval_valid_until`` (the first moment a failing rule leaves its grace period), the
   stored check state already is its result: that conditional UPDATE was the whole cost;
4. otherwise the facts are evaluated with the device's assigned policy (agent.policy.evaluate,
   failing_since from check_state): only rules whose status, reason or evidence changed are written,
   and a transition row only when a status changed.

A raw payload is kept when something changed, for the first report, and otherwise at most once per
``raw_report_interval`` per device, so retention stays bounded with a large fleet.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from agent import protocol
from agent.policy import Result, evaluate, summarize
from common.ttlcache import TTLCache
from server import bounds, device_notices
from server.actions import ladder
from server.store import policies as policy_store
from server.store.db import Database
from server.store.enrolment import PENDING_REASON
from server.store.schema import DEVICE_ACTIVE, DEVICE_PENDING, check_state, devices, reports, transitions

log = logging.getLogger(__name__)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass
class Answer:
    status: str
    device_id: Optional[str] = None
    seq: Optional[int] = None
    reason: Optional[str] = None
    compliance: Optional[str] = None
    last_seq: Optional[int] = None
    last_report_id: Optional[str] = None
    # The device's running noncompliance ladders (server.actions.ladder.device_ladders), for the agent.
    actions: Optional[list[dict[str, Any]]] = None
    # Whether the report was evaluated (its inputs differ from the last evaluation's): only then can the
    # device's access decision have changed, so only then does the upload answer carry a new one.
    evaluated: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status if self.reason is None or self.status != REJECTED
                               else f"{REJECTED}: {self.reason}",
                               "device_id": self.device_id, "seq": self.seq}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.compliance is not None:
            out["compliance"] = self.compliance
        if self.last_seq is not None:
            out["last_seq"] = self.last_seq
        if self.last_report_id is not None:
            out["last_report_id"] = self.last_report_id
        if self.actions is not None:
            out["actions"] = self.actions
        return out


@dataclass
class _Candidate:
    index: int
    envelope: protocol.Envelope
    payload: dict[str, Any]
    seq: int
    created_at: float


@dataclass
class _StateRow:
    status: str
    since: float
    failing_since: Optional[float]
    reason: str
    message: str
    evidence: str
    agent_status: Optional[str]
    check_id: str
    severity: str


@dataclass
class IngestStats:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    transitions: int = 0
    state_writes: int = 0
    raw_kept: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class PolicyCache:
    """org unit -> the policy version that applies, cached for ``ttl`` seconds per process.

    Policy versions are immutable (cached forever by the store); only the assignment can change, and
    admin actions in this process clear the cache at once. Other collector processes pick a change
    up within ``ttl`` seconds.
    """

    def __init__(self, ttl: float) -> None:
        self._assigned: TTLCache[int, Optional[int]] = TTLCache(ttl)  # org unit -> policy pk (None: none)

    def clear(self) -> None:
        self._assigned.clear()

    def get(self, conn: Connection, org_unit_id: int) -> Optional[policy_store.StoredPolicy]:
        pk = self._assigned.get_or_load(org_unit_id, lambda: policy_store.policy_pk_for_org_unit(conn, org_unit_id))
        return None if pk is None else policy_store.get_policy(conn, pk)


class KeyCache:
    """device id -> public key. Safe to keep: a device id names one key for ever (re-enrolment makes a
    new device). Revocation is not cached: the ingest transaction checks the device state each time."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def lookup(self, db: Database, device_ids: Sequence[str]) -> dict[str, Ed25519PublicKey]:
        found: dict[str, Ed25519PublicKey] = {}
        missing = []
        with self._lock:
            for device_id in device_ids:
                key = self._keys.get(device_id)
                if key is None:
                    missing.append(device_id)
                else:
                    found[device_id] = key
        if missing:
            with db.read() as conn:
                rows = conn.execute(sa.select(devices.c.id, devices.c.public_key)
                                    .where(devices.c.id.in_(missing))).all()
            loaded = {}
            for row in rows:
                try:
                    loaded[str(row.id)] = protocol.load_public_key(row.public_key)
                except protocol.ProtocolError:
                    log.error("device %s has an unreadable public key in the database", row.id)
            with self._lock:
                if len(self._keys) + len(loaded) > self.max_entries:
                    self._keys.clear()
                self._keys.update(loaded)
            found.update(loaded)
        return found


# The hot path (every report) runs plain driver SQL on the transaction's DBAPI cursor: building Core
# expressions, and SQLAlchemy's result set-up per execute, cost more CPU than the statements themselves.
# Column names are the ones of server/store/schema.py; ``:name`` placeholders (converted for psycopg).
_CLAIM_SEQ = (
    "UPDATE devices SET last_seq = :seq, last_seen = :now, last_report_at = :created, last_report_id = :rid "
    "WHERE id = :id AND state = 'active' AND last_seq < :seq "
    "RETURNING org_unit_id, platform, compliance, fail_count, warn_count, error_count, disagreements, "
    "policy_ref, agent_policy_ref, agent_version, last_raw_report_at, eval_hash, eval_valid_until, machine_id")
_LOAD_STATE = (
    "SELECT rule_id, status, since, failing_since, reason, message, evidence, agent_status, check_id, severity "
    "FROM check_state WHERE device_id = :id")


class _ClaimedDevice(NamedTuple):
    """The device row as _CLAIM_SEQ returns it."""

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


class _Driver:
    """The write transaction's DBAPI cursor, with statements in the driver's placeholder style."""

    def __init__(self, conn: Connection) -> None:
        self.cursor = conn.connection.cursor()
        self.pyformat = conn.dialect.name == "postgresql"  # psycopg: %(name)s; sqlite3: :name

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        self.cursor.execute(_pyformat(sql) if self.pyformat else sql, params)
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

    def close(self) -> None:
        self.cursor.close()


@functools.cache
def _pyformat(sql: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", sql)


_STATE_COLUMNS = ("status", "since", "failing_since", "reason", "message", "evidence", "agent_status", "check_id",
                  "severity", "updated_at")
_UPDATE_STATE = (check_state.update()
                 .where(check_state.c.device_id == sa.bindparam("b_device_id"),
                        check_state.c.rule_id == sa.bindparam("b_rule_id"))
                 .values({name: sa.bindparam(f"v_{name}") for name in _STATE_COLUMNS}))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _eval_hash(inputs: list[Any]) -> str:
    # Keys in the order they were parsed: the facts come from canonical (sorted) payload text, and another
    # key order would only cost a re-evaluation, never a wrong shortcut.
    return hashlib.sha256(orjson.dumps(inputs)).hexdigest()


def _raw_failing(result: Result) -> bool:
    """True when the rule's facts fail, including a failure still inside its grace period."""
    return result.status == "fail" or (result.status == "warn" and result.message.get("key") == "within_grace")


def _agent_statuses(payload: Mapping[str, Any]) -> dict[str, str]:
    """The agent's own status per rule, ignoring malformed entries (they are the agent's opinion only)."""
    statuses: dict[str, str] = {}
    for item in payload.get("results") or []:
        if isinstance(item, dict) and isinstance(item.get("rule_id"), str) and isinstance(item.get("status"), str):
            statuses[item["rule_id"][:200]] = item["status"][:16]
    return statuses


class Ingestor:
    def __init__(self, db: Database, *, raw_report_interval: float = 3600.0, policy_cache_ttl: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.raw_report_interval = raw_report_interval
        self.policies = PolicyCache(policy_cache_ttl)
        self.keys = KeyCache()
        self.clock = clock

    # -- phase 1: signatures, outside the transaction ------------------------------------------

    def _open_all(self, items: Sequence[Any], now: float) -> tuple[list[Answer], list[_Candidate]]:
        answers: list[Answer] = [Answer(REJECTED) for _ in items]
        envelopes: list[Optional[protocol.Envelope]] = []
        for index, item in enumerate(items):
            try:
                opened = protocol.Envelope.from_json(item)
                bounds.check_envelope(opened)
                envelopes.append(opened)
            except protocol.ProtocolError as exc:
                envelopes.append(None)
                device = item.get("device_id") if isinstance(item, dict) else None
                answers[index] = Answer(REJECTED, device_id=device if bounds.echoable(device) else None,
                                        reason=str(exc))
        ids = sorted({e.device_id for e in envelopes if e is not None and len(e.device_id) <= 36})
        keys = self.keys.lookup(self.db, ids) if ids else {}
        candidates: list[_Candidate] = []
        for index, envelope in enumerate(envelopes):
            if envelope is None:
                continue
            answer = answers[index] = Answer(REJECTED, device_id=envelope.device_id)
            key = keys.get(envelope.device_id)
            if key is None:
                answer.reason = "unknown device: enrol it first (teleposture-agent enroll)"
                continue
            try:
                payload = protocol.open_envelope(envelope, key, now=now, loads=orjson.loads)
                bounds.check_payload(payload)
            except protocol.ProtocolError as exc:
                answer.reason = str(exc)
                continue
            answer.seq = payload["seq"]
            candidates.append(_Candidate(index, envelope, payload, int(payload["seq"]),
                                         protocol.parse_rfc3339(payload["created_at"])))
        return answers, candidates

    # -- phase 2: one transaction -------------------------------------------------------------

    def ingest(self, items: Sequence[Any], stats: Optional[IngestStats] = None,
               admit: Optional[Callable[[list[str]], None]] = None) -> list[Answer]:
        """Answers in the order of ``items``. Raises sqlalchemy.exc.DBAPIError when the database fails
        (nothing of the batch is then committed: the caller answers 503 and the agent retries).

        ``admit`` sees the ids of the devices whose envelopes verified, before anything is written; it may
        raise to refuse the whole batch (per-device rate limits: counting only verified envelopes means
        nobody can use up another device's budget by sending garbage in its name)."""
        now = self.clock()
        stats = stats if stats is not None else IngestStats()
        answers, candidates = self._open_all(items, now)
        if admit is not None and candidates:
            admit(sorted({c.envelope.device_id for c in candidates}))
        candidates.sort(key=lambda c: (c.envelope.device_id, c.seq))
        if candidates:
            with self.db.write() as conn:
                driver = _Driver(conn)
                try:
                    # Claim each device's first envelope of the batch at once (device order, as the
                    # locks must be taken); a device's later envelopes are claimed after the first is applied.
                    firsts = [c for i, c in enumerate(candidates)
                              if i == 0 or candidates[i - 1].envelope.device_id != c.envelope.device_id]
                    claimed = driver.rows_each(_CLAIM_SEQ, [self._claim_params(c, now) for c in firsts])
                    claims = {c.index: rows for c, rows in zip(firsts, claimed)}
                    states: dict[str, dict[str, _StateRow]] = {}
                    for candidate in candidates:
                        claim = claims.get(candidate.index)
                        if claim is None:
                            claim = driver.rows(_CLAIM_SEQ, self._claim_params(candidate, now))
                        answers[candidate.index] = self._apply(conn, driver, candidate, claim, now, states, stats)
                    accepted = sorted({str(a.device_id) for a in answers if a.status == ACCEPTED})
                    for device_id, running in ladder.device_ladders(conn, accepted).items():
                        for answer in answers:
                            if answer.device_id == device_id and answer.status == ACCEPTED:
                                answer.actions = running
                finally:
                    driver.close()
        for answer in answers:
            if answer.status == ACCEPTED:
                stats.accepted += 1
            elif answer.status == DUPLICATE:
                stats.duplicate += 1
            else:
                stats.rejected += 1
        return answers

    def _refusal(self, conn: Connection, device_id: str, seq: int) -> Answer:
        row = conn.execute(sa.select(devices.c.state, devices.c.last_seq, devices.c.replaced_by,
                                     devices.c.last_report_id).where(devices.c.id == device_id)).first()
        if row is None:
            return Answer(REJECTED, device_id, seq, reason="unknown device: enrol it first")
        if row.state != DEVICE_ACTIVE:
            if row.replaced_by:
                return Answer(REJECTED, device_id, seq,
                              reason=f"device was replaced by a newer enrolment ({row.replaced_by})")
            if row.state == DEVICE_PENDING:
                return Answer(REJECTED, device_id, seq, reason=PENDING_REASON)
            return Answer(REJECTED, device_id, seq, reason=f"device is {row.state}: enrol it again with a new token")
        return Answer(DUPLICATE, device_id, seq, reason=f"seq {seq} <= last accepted seq {row.last_seq}",
                      last_seq=int(row.last_seq), last_report_id=row.last_report_id)

    @staticmethod
    def _claim_params(cand: _Candidate, now: float) -> dict[str, Any]:
        return {"seq": cand.seq, "now": now, "created": cand.created_at, "id": cand.envelope.device_id,
                "rid": str(cand.payload["report_id"])[:64]}

    def _apply(self, conn: Connection, driver: _Driver, cand: _Candidate, claim: list[tuple[Any, ...]],
               now: float, states: dict[str, dict[str, _StateRow]], stats: IngestStats) -> Answer:
        """Judge and store one envelope whose _CLAIM_SEQ ran (``claim``: its returned row, none if refused)."""
        device_id = cand.envelope.device_id
        payload = cand.payload
        agent = payload.get("agent") or {}
        agent_version = agent.get("version") if isinstance(agent.get("version"), str) else None
        claimed = payload.get("policy") or {}
        agent_policy_ref = f"{claimed.get('id')}@{claimed.get('version')}"[:300]
        if not claim:
            return self._refusal(conn, device_id, cand.seq)
        device = _ClaimedDevice(*claim[0])
        clone = device_notices.cloned_identity(conn, device_id, device.machine_id, payload, cand.seq, now)
        if clone is not None:
            return Answer(REJECTED, device_id, cand.seq, reason=clone)
        device_notices.record_report_notices(conn, device_id, cand.seq, payload, now)
        stored = self.policies.get(conn, int(device.org_unit_id))
        if stored is None:
            # Nothing to judge with: undo the seq bump so the agent's retry is accepted once a policy exists.
            raise NoPolicyError("the collector has no policy for this device's org unit: "
                                "run `teleposture-server policy push` and assign a default")
        platform = agent.get("platform") if isinstance(agent.get("platform"), str) else device.platform
        agent_statuses = _agent_statuses(payload)
        eval_hash = _eval_hash([stored.pk, platform, payload["facts"], agent_statuses, agent_version,
                                agent_policy_ref])
        if device.eval_hash == eval_hash and (device.eval_valid_until is None
                                              or cand.created_at < device.eval_valid_until):
            # Same inputs as the evaluation whose results check_state holds, at a time those results still
            # hold (no failing rule has left its grace period since): nothing to evaluate or write.
            if device.last_raw_report_at is None or now - device.last_raw_report_at >= self.raw_report_interval:
                self._keep_raw(conn, cand, now, str(device.compliance), stored.ref)
                conn.execute(devices.update().where(devices.c.id == device_id).values(last_raw_report_at=now))
                stats.raw_kept += 1
            return Answer(ACCEPTED, device_id, cand.seq, compliance=str(device.compliance), last_seq=cand.seq)
        state = states.get(device_id)
        if state is None:
            state = states[device_id] = {str(r[0]): _StateRow(*r[1:])
                                         for r in driver.rows(_LOAD_STATE, {"id": device_id})}
        failing_since = {rule: row.failing_since for rule, row in state.items() if row.failing_since is not None}
        results = evaluate(stored.policy, payload["facts"], str(platform), cand.created_at, failing_since)
        grace = {rule.id: rule.grace_seconds for rule in stored.policy.rules if rule.grace_seconds > 0}
        valid_until: Optional[float] = None
        org_unit_id = int(device.org_unit_id)
        changed = False
        inserts: list[dict[str, Any]] = []
        updates_state: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        counts = {"fail": 0, "warn": 0, "error": 0}
        disagreements = 0
        seen_rules = set()
        for result in results:
            seen_rules.add(result.rule_id)
            if result.status in counts:
                counts[result.status] += 1
            agent_status = agent_statuses.get(result.rule_id)
            if agent_status is not None and agent_status != result.status:
                disagreements += 1
            old = state.get(result.rule_id)
            raw_failing = _raw_failing(result)
            if raw_failing:
                started = old.failing_since if old is not None and old.failing_since is not None else cand.created_at
                if result.status == "warn" and result.rule_id in grace:
                    # evaluate turned this failure into a warn until its grace ends; then the result changes
                    ends = started + grace[result.rule_id]
                    valid_until = ends if valid_until is None else min(valid_until, ends)
            else:
                started = None
            message = _dumps({"key": result.message.get("key"), "params": result.message.get("params") or {}})
            new = _StateRow(result.status, cand.created_at, started, result.reason, message,
                            _dumps(list(result.evidence)), agent_status, result.check, result.severity)
            if old is not None and old.status == new.status:
                new.since = old.since
                if (old.failing_since, old.reason, old.message, old.evidence, old.agent_status, old.check_id,
                        old.severity) == (new.failing_since, new.reason, new.message, new.evidence,
                                          new.agent_status, new.check_id, new.severity):
                    continue
            values = {"status": new.status, "since": new.since, "failing_since": new.failing_since,
                      "reason": new.reason, "message": new.message, "evidence": new.evidence,
                      "agent_status": new.agent_status, "check_id": new.check_id, "severity": new.severity,
                      "updated_at": now}
            if old is None:
                inserts.append({"device_id": device_id, "rule_id": result.rule_id, "org_unit_id": org_unit_id,
                                "active": True, **values})
            else:
                updates_state.append({"b_device_id": device_id, "b_rule_id": result.rule_id,
                                      **{f"v_{k}": v for k, v in values.items()}})
            stats.state_writes += 1
            if old is None or old.status != new.status:
                history.append({"device_id": device_id, "rule_id": result.rule_id, "check_id": result.check,
                                "old_status": None if old is None else old.status, "new_status": new.status,
                                "at": cand.created_at, "recorded_at": now, "seq": cand.seq, "reason": new.reason,
                                "message": new.message, "org_unit_id": org_unit_id})
                stats.transitions += 1
            state[result.rule_id] = new
            changed = True
        # One executemany per kind of row: a first report writes ~2 rows per rule.
        if inserts:
            conn.execute(check_state.insert(), inserts)
        if updates_state:
            conn.execute(_UPDATE_STATE, updates_state)
        if history:
            conn.execute(transitions.insert(), history)
        gone = [rule for rule in state if rule not in seen_rules]
        if gone:
            # The policy no longer has these rules: their state is no longer current.
            conn.execute(check_state.delete().where(check_state.c.device_id == device_id,
                                                    check_state.c.rule_id.in_(gone)))
            for rule in gone:
                del state[rule]
            changed = True
        compliance = summarize(results)
        if history or gone or compliance != device.compliance:
            # The ladder, blocks and events of this change, in this transaction (server.actions).
            ladder.on_evaluation(conn, device_id=device_id, org_unit_id=org_unit_id, policy=stored.policy,
                                 changes=[ladder.RuleChange(h["rule_id"], state[h["rule_id"]].severity,
                                                            h["old_status"], h["new_status"],
                                                            state[h["rule_id"]].failing_since, h["reason"])
                                          for h in history],
                                 gone_rules=gone, old_compliance=str(device.compliance),
                                 new_compliance=compliance, at=cand.created_at, now=now)
        summary = {"compliance": compliance, "fail_count": counts["fail"], "warn_count": counts["warn"],
                   "error_count": counts["error"], "disagreements": disagreements, "policy_ref": stored.ref,
                   "agent_policy_ref": agent_policy_ref, "agent_version": agent_version,
                   "eval_hash": eval_hash, "eval_valid_until": valid_until}
        current = device._asdict()
        updates = {name: value for name, value in summary.items() if current[name] != value}
        if "compliance" in updates:
            updates["compliance_since"] = cand.created_at
        keep_raw = changed or bool(set(updates) - {"eval_hash", "eval_valid_until"}) \
            or device.last_raw_report_at is None or now - device.last_raw_report_at >= self.raw_report_interval
        if keep_raw:
            self._keep_raw(conn, cand, now, compliance, stored.ref)
            updates["last_raw_report_at"] = now
            stats.raw_kept += 1
        if updates:
            conn.execute(devices.update().where(devices.c.id == device_id).values(**updates))
        return Answer(ACCEPTED, device_id, cand.seq, compliance=compliance, last_seq=cand.seq, evaluated=True)

    @staticmethod
    def _keep_raw(conn: Connection, cand: _Candidate, now: float, compliance: str, policy_ref: str) -> None:
        conn.execute(reports.insert().values(
            device_id=cand.envelope.device_id, seq=cand.seq, report_id=str(cand.payload["report_id"])[:64],
            created_at=cand.created_at, received_at=now, compliance=compliance, policy_ref=policy_ref,
            payload=cand.envelope.payload, signature=cand.envelope.signature[:100]))


class NoPolicyError(RuntimeError):
    """No policy applies to a device (no default policy was pushed): the batch cannot be judged."""
