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
   stored check state already is its result: that conditional UPDATE was the whole cost. A batch of one
   (what agents send) tries that first as one autocommit statement that checks the shortcut's conditions
   itself (``Ingestor._claim_unchanged``), and takes the transaction only when it updated nothing;
4. otherwise the facts are evaluated with the device's assigned policy (agent.policy.evaluate,
   failing_since from check_state): only rules whose status, reason or evidence changed are written,
   and a transition row only when a status changed.

A raw payload is kept when something changed, for the first report, and otherwise at most once per
``raw_report_interval`` per device, so retention stays bounded with a large fleet.

The parts: what an evaluation changes is the pure ``server.ingest_diff.diff_states``; every statement is
in ``server.store.ingest_sql``; this module orders them (and holds the per-process caches).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection

from agent import protocol
from agent.policy import evaluate
from common.ttlcache import TTLCache
from server import bounds, device_notices
from server.actions import ladder
from server.ingest_diff import StateRow, diff_states
from server.store import ingest_sql
from server.store import policies as policy_store
from server.store.db import Database
from server.store.enrolment import PENDING_REASON
from server.store.ingest_sql import ClaimedDevice, Driver
from server.store.schema import DEVICE_ACTIVE, DEVICE_PENDING

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
    # Whether that evaluation started a noncompliance ladder episode (then the answer reads the device's
    # ladders even though none ran at the claim).
    ladder_started: bool = field(default=False, compare=False)

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

    def peek(self, org_unit_id: int) -> Optional[policy_store.StoredPolicy]:
        """What ``get`` would give when it needs no database read, else None (as when no policy applies)."""
        hit, pk = self._assigned.lookup(org_unit_id)
        return None if not hit or pk is None else policy_store.cached_policy(pk)


class KeyCache:
    """device id -> public key. Safe to keep: a device id names one key for ever (re-enrolment makes a
    new device). Revocation is not cached: the ingest transaction checks the device state each time.

    Beside each key, the device's org unit as last read (with the key, then from each claim): only a hint
    of which policy, so which eval_hash, the one-statement claim of an unchanged report tries
    (``Ingestor._claim_unchanged``); that statement checks the org unit again, so a moved device takes the
    transaction. Read with the key, the hint is there whenever the key is, in whichever process or node
    the report lands (agents report hourly: a hint only from this process's own earlier claims was missing
    for most reports once a fleet had several workers or nodes)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._org_units: dict[str, int] = {}
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
                rows = ingest_sql.public_keys(conn, missing)
            loaded = {}
            units = {}
            for device_id, pem, org_unit_id in rows:
                try:
                    loaded[device_id] = protocol.load_public_key(pem)
                except protocol.ProtocolError:
                    log.error("device %s has an unreadable public key in the database", device_id)
                    continue
                units[device_id] = org_unit_id
            with self._lock:
                if len(self._keys) + len(loaded) > self.max_entries:
                    self._keys.clear()
                    self._org_units.clear()
                self._keys.update(loaded)
                self._org_units.update(units)
            found.update(loaded)
        return found

    def org_unit(self, device_id: str) -> Optional[int]:
        """The device's org unit as last read or claimed here (a hint: see the class), None if unknown."""
        return self._org_units.get(device_id)

    def remember_org_units(self, claims: Iterable[tuple[str, Optional[ClaimedDevice]]]) -> None:
        """The org units the claims found (a device an admin moved is then tried in its new unit)."""
        for device_id, device in claims:
            if device is not None and device_id in self._keys:
                self._org_units[device_id] = int(device.org_unit_id)


def _eval_hash(inputs: list[Any]) -> str:
    # Keys in the order they were parsed: the facts come from canonical (sorted) payload text, and another
    # key order would only cost a re-evaluation, never a wrong shortcut.
    return hashlib.sha256(orjson.dumps(inputs)).hexdigest()


def _eval_inputs(policy_pk: int, platform: Optional[str], payload: Mapping[str, Any]
                 ) -> tuple[str, dict[str, str], Optional[str], str]:
    """The evaluation inputs' hash (``devices.eval_hash``), the agent's own statuses, its version and its
    policy reference."""
    agent = payload.get("agent") or {}
    agent_version = agent.get("version") if isinstance(agent.get("version"), str) else None
    claimed = payload.get("policy") or {}
    agent_policy_ref = f"{claimed.get('id')}@{claimed.get('version')}"[:300]
    agent_statuses = _agent_statuses(payload)
    eval_hash = _eval_hash([policy_pk, platform, payload["facts"], agent_statuses, agent_version, agent_policy_ref])
    return eval_hash, agent_statuses, agent_version, agent_policy_ref


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
                bounds.check_payload(payload, envelope.payload)
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
        if len(candidates) == 1 and len(items) == 1:
            unchanged = self._claim_unchanged(candidates[0], now)
            if unchanged is not None:
                answers[candidates[0].index] = unchanged
                candidates = []
        if candidates:
            with self.db.write_driver() as transaction:
                conn = transaction.conn
                driver = Driver(transaction.cursor, transaction.pyformat)
                # Claim each device's first envelope of the batch at once (device order, as the
                # locks must be taken); a device's later envelopes are claimed after the first is applied.
                firsts = [c for i, c in enumerate(candidates)
                          if i == 0 or candidates[i - 1].envelope.device_id != c.envelope.device_id]
                claimed = ingest_sql.claim_many(driver, [self._claim_params(c, now) for c in firsts])
                claims = {c.index: device for c, device in zip(firsts, claimed)}
                self.keys.remember_org_units((c.envelope.device_id, device) for c, device in zip(firsts, claimed))
                states: dict[str, dict[str, StateRow]] = {}
                # Devices that may have a running ladder: one ran at the claim, or an evaluation in this
                # transaction started one. The others have none to show.
                laddered: set[str] = set()
                for candidate in candidates:
                    if candidate.index in claims:
                        claim = claims[candidate.index]
                    else:
                        claim = ingest_sql.claim_many(driver, [self._claim_params(candidate, now)])[0]
                        self.keys.remember_org_units([(candidate.envelope.device_id, claim)])
                    answer = answers[candidate.index] = self._apply(conn, driver, candidate, claim, now, states,
                                                                    stats)
                    if answer.status == ACCEPTED and claim is not None and (claim.has_ladder or answer.ladder_started):
                        laddered.add(candidate.envelope.device_id)
                ids = sorted(laddered)
                running = ladder.ladders_from_rows(ids, ingest_sql.running_ladders(driver, ids)) if ids else {}
                for answer in answers:
                    if answer.status == ACCEPTED:
                        answer.actions = running.get(str(answer.device_id), [])
        for answer in answers:
            if answer.status == ACCEPTED:
                stats.accepted += 1
            elif answer.status == DUPLICATE:
                stats.duplicate += 1
            else:
                stats.rejected += 1
        return answers

    def _claim_unchanged(self, cand: _Candidate, now: float) -> Optional[Answer]:
        """A batch of one whose report changes nothing, in one autocommit statement (_CLAIM_UNCHANGED)
        instead of a transaction: the claim and the shortcut of ``_apply``, judged by the database at once
        (no BEGIN and COMMIT: on PostgreSQL two round trips fewer). None: ``ingest`` goes on its usual way,
        e.g. for an org unit whose policy this process has not looked up lately, or a report with notices."""
        device_id = cand.envelope.device_id
        payload = cand.payload
        org_unit_id = self.keys.org_unit(device_id)
        stored = None if org_unit_id is None else self.policies.peek(org_unit_id)
        platform = payload["agent"].get("platform")
        if stored is None or not isinstance(platform, str) or device_notices.carries_notices(payload):
            return None
        eval_hash = _eval_inputs(stored.pk, platform, payload)[0]
        params = {**self._claim_params(cand, now), "org_unit": org_unit_id, "eval_hash": eval_hash,
                  "raw_interval": float(self.raw_report_interval)}
        with self.db.write_driver(autocommit=True) as transaction:
            compliance = ingest_sql.claim_unchanged(Driver(transaction.cursor, transaction.pyformat), params,
                                                    device_notices.reported_machine_id(payload))
        if compliance is None:
            return None
        return Answer(ACCEPTED, device_id, cand.seq, compliance=compliance, last_seq=cand.seq, actions=[])

    @staticmethod
    def _refusal(conn: Connection, device_id: str, seq: int) -> Answer:
        row = ingest_sql.refusal(conn, device_id)
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
                      last_seq=row.last_seq, last_report_id=row.last_report_id)

    @staticmethod
    def _claim_params(cand: _Candidate, now: float) -> dict[str, Any]:
        return ingest_sql.claim_params(cand.envelope.device_id, cand.seq, cand.created_at,
                                       str(cand.payload["report_id"])[:64], now)

    def _apply(self, conn: Connection, driver: Driver, cand: _Candidate, device: Optional[ClaimedDevice],
               now: float, states: dict[str, dict[str, StateRow]], stats: IngestStats) -> Answer:
        """Judge and store one envelope whose seq claim ran (``device``: the claimed row, None if refused)."""
        device_id = cand.envelope.device_id
        payload = cand.payload
        if device is None:
            return self._refusal(conn, device_id, cand.seq)
        clone = device_notices.cloned_identity(conn, device_id, device.machine_id, payload, cand.seq, now)
        if clone is not None:
            return Answer(REJECTED, device_id, cand.seq, reason=clone)
        device_notices.record_report_notices(conn, device_id, cand.seq, payload, now)
        stored = self.policies.get(conn, int(device.org_unit_id))
        if stored is None:
            # Nothing to judge with: undo the seq bump so the agent's retry is accepted once a policy exists.
            raise NoPolicyError("the collector has no policy for this device's org unit: "
                                "run `teleposture-server policy push` and assign a default")
        agent = payload.get("agent") or {}
        platform = agent.get("platform") if isinstance(agent.get("platform"), str) else device.platform
        eval_hash, agent_statuses, agent_version, agent_policy_ref = _eval_inputs(stored.pk, platform, payload)
        raw_due = device.last_raw_report_at is None or now - device.last_raw_report_at >= self.raw_report_interval
        if device.eval_hash == eval_hash and (device.eval_valid_until is None
                                              or cand.created_at < device.eval_valid_until):
            # Same inputs as the evaluation whose results check_state holds, at a time those results still
            # hold (no failing rule has left its grace period since): nothing to evaluate or write.
            if raw_due:
                self._keep_raw(driver, cand, now, str(device.compliance), stored.ref)
                ingest_sql.mark_raw_kept(driver, device_id, now)
                stats.raw_kept += 1
            return Answer(ACCEPTED, device_id, cand.seq, compliance=str(device.compliance), last_seq=cand.seq)
        old = states.get(device_id)
        if old is None:
            old = ingest_sql.load_states(driver, device_id)
        failing_since = {rule: row.failing_since for rule, row in old.items() if row.failing_since is not None}
        results = evaluate(stored.policy, payload["facts"], str(platform), cand.created_at, failing_since)
        diff = diff_states(old, results, agent_statuses, cand.created_at)
        states[device_id] = diff.states
        org_unit_id = int(device.org_unit_id)
        ingest_sql.write_diff(driver, device_id, org_unit_id, cand.seq, cand.created_at, now, diff)
        stats.state_writes += len(diff.writes)
        stats.transitions += len(diff.changes)
        summary = diff.summary
        ladder_started = False
        if diff.changes or diff.gone or summary.compliance != device.compliance:
            # The ladder, blocks and events of this change, in this transaction (server.actions).
            ladder_started = ladder.on_evaluation(
                conn, driver, device_id=device_id, org_unit_id=org_unit_id, policy=stored.policy, changes=diff.changes,
                gone_rules=diff.gone, old_compliance=str(device.compliance), new_compliance=summary.compliance,
                at=cand.created_at, now=now)
        wanted = {"compliance": summary.compliance, "fail_count": summary.fail_count,
                  "warn_count": summary.warn_count, "error_count": summary.error_count,
                  "disagreements": summary.disagreements, "policy_ref": stored.ref,
                  "agent_policy_ref": agent_policy_ref, "agent_version": agent_version,
                  "eval_hash": eval_hash, "eval_valid_until": summary.eval_valid_until}
        current = device._asdict()
        updates = {name: value for name, value in wanted.items() if current[name] != value}
        if "compliance" in updates:
            updates["compliance_since"] = cand.created_at
        if diff.changed or bool(set(updates) - {"eval_hash", "eval_valid_until"}) or raw_due:
            self._keep_raw(driver, cand, now, summary.compliance, stored.ref)
            updates["last_raw_report_at"] = now
            stats.raw_kept += 1
        if updates:
            ingest_sql.update_device(driver, device_id, updates)
        return Answer(ACCEPTED, device_id, cand.seq, compliance=summary.compliance, last_seq=cand.seq,
                      evaluated=True, ladder_started=ladder_started)

    @staticmethod
    def _keep_raw(driver: Driver, cand: _Candidate, now: float, compliance: str, policy_ref: str) -> None:
        ingest_sql.keep_raw(driver, device_id=cand.envelope.device_id, seq=cand.seq,
                            report_id=str(cand.payload["report_id"])[:64], created_at=cand.created_at, now=now,
                            compliance=compliance, policy_ref=policy_ref, payload=cand.envelope.payload,
                            signature=cand.envelope.signature[:100])


class NoPolicyError(RuntimeError):
    """No policy applies to a device (no default policy was pushed): the batch cannot be judged."""
