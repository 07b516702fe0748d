"""The noncompliance ladder per (device, rule): episodes, steps, deadlines, blocks and exceptions.

An episode starts when a rule starts failing (its ``failing_since``, which includes a failure still within
its grace period) and ends when the rule passes, is not applicable, leaves the policy, or is exempted. A
rule in ``error`` keeps its episode as it is (a broken probe must not be a way out of a block). Each step
fires once per episode: ``steps_fired`` only grows, and the row is deleted when the episode ends.

Everything here runs inside the caller's write transaction: ingest (a rule changed status), the
background worker (a deadline passed, an exception expired) and the admin API (an exception granted).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent.policy.loader import LineMap
from agent.policy.model import LadderStep, Policy, ladder_to_json
from agent.policy.validate import validate_actions
from server.actions.events import Event, emit_events
from server.ingest_diff import RuleChange
from server.store import policies as policy_store
from server.store.ingest_sql import Driver
from server.store.schema import (
    check_state,
    device_blocks,
    devices,
    ladder_state,
    org_unit_ladders,
    org_units,
    rule_exceptions,
)

MAX_EXCEPTION_SECONDS = 365 * 86400
# Plain driver SQL for what an evaluation reads (on_evaluation runs in ~5 % of batch-1 reports, where
# Core's per-execute set-up cost more CPU than these statements).
_HOSTNAME = "SELECT hostname FROM devices WHERE id = :device"
# What an evaluation's failing or passing rules need (on_evaluation): the device's running episodes (rule,
# severity), the rules exempted for it now, and its org unit's own ladder (as stored; no row: the policy's).
_EPISODE_INPUTS = (
    "SELECT 'running', rule_id, severity FROM ladder_state WHERE device_id = :device "
    "UNION ALL SELECT 'exempt', rule_id, NULL FROM rule_exceptions WHERE ended_at IS NULL AND expires_at > :now "
    "AND (device_id = :device OR (device_id IS NULL AND org_unit_id = :unit)) "
    "UNION ALL SELECT 'ladder', actions, NULL FROM org_unit_ladders WHERE org_unit_id = :unit")
Ladder = Mapping[str, tuple[LadderStep, ...]]


class LadderError(ValueError):
    """A ladder or exception an admin asked for that cannot be used; the message says why."""


# -- ladders ------------------------------------------------------------------------------------------

def parse_ladder(value: Any, source: str = "actions") -> dict[str, tuple[LadderStep, ...]]:
    """A ladder given as JSON ({severity: [{after, do}]}), validated like a policy's ``actions``."""
    problems, ladder = validate_actions(value, LineMap(source))
    if problems:
        raise LadderError("; ".join(problems))
    return ladder


def _steps_json(steps: Sequence[LadderStep]) -> str:
    return json.dumps([[step.after, step.action] for step in steps])


def _steps(text: str) -> list[tuple[int, str]]:
    return [(int(after), str(action)) for after, action in json.loads(text)]


def org_unit_ladder(conn: Connection, org_unit_id: int) -> Optional[dict[str, Any]]:
    row = conn.execute(sa.select(org_unit_ladders).where(org_unit_ladders.c.org_unit_id == org_unit_id)
                       ).mappings().first()
    if row is None:
        return None
    return {"actions": None if row["actions"] is None else json.loads(row["actions"]),
            "contacts": json.loads(row["contacts"]), "language": row["language"],
            "updated_at": row["updated_at"], "updated_by": row["updated_by"]}


def set_org_unit_ladder(conn: Connection, org_unit_id: int, *, actions: Optional[Any], contacts: Sequence[str],
                        language: str, actor: str, now: Optional[float] = None) -> None:
    """Store an org unit's ladder (None: the policy's) and its contacts; LadderError when invalid."""
    ladder = None if actions is None else ladder_to_json(parse_ladder(actions))
    for address in contacts:
        if "@" not in address or len(address) > 254 or any(c.isspace() for c in address):
            raise LadderError(f"contact {address!r} is not an e-mail address")
    if language not in ("en", "fr", "ar"):
        raise LadderError(f"language must be en, fr or ar, found {language!r}")
    values = {"actions": None if ladder is None else json.dumps(ladder, sort_keys=True),
              "contacts": json.dumps(list(contacts)), "language": language,
              "updated_at": time.time() if now is None else now, "updated_by": actor}
    updated = conn.execute(org_unit_ladders.update().where(org_unit_ladders.c.org_unit_id == org_unit_id)
                           .values(**values)).rowcount
    if not updated:
        conn.execute(org_unit_ladders.insert().values(org_unit_id=org_unit_id, **values))


def ladder_of(policy: Policy, unit_ladder: Optional[str]) -> Ladder:
    """The ladder that applies: the org unit's own (``org_unit_ladders.actions`` as stored) when it has one,
    else the policy's ``actions``."""
    return policy.actions if unit_ladder is None else _stored_ladder(unit_ladder)


@functools.lru_cache(maxsize=256)
def _stored_ladder(text: str) -> Ladder:
    # A function of the stored text alone (validated when it was set): parsing and validating it again
    # for each access decision cost more than the decision. Read-only, as it is shared.
    return MappingProxyType(parse_ladder(json.loads(text)))


# -- exceptions --------------------------------------------------------------------------------------

@dataclass
class EpisodeInputs:
    """What starting or ending a device's episodes depends on, read in one round trip (a statement each cost
    PostgreSQL ingest ~0.1 ms of CPU)."""

    running: dict[str, str] = field(default_factory=dict)  # rule id -> severity of its running episode
    exempt: set[str] = field(default_factory=set)  # rules an exception covers now
    unit_ladder: Optional[str] = None  # the org unit's own ladder as stored (None: the policy's)


def _episode_inputs(driver: Driver, device_id: str, org_unit_id: int, now: float) -> EpisodeInputs:
    inputs = EpisodeInputs()
    for kind, name, value in driver.rows(_EPISODE_INPUTS, {"device": device_id, "unit": org_unit_id, "now": now}):
        if kind == "running":
            inputs.running[str(name)] = str(value)
        elif kind == "exempt":
            inputs.exempt.add(str(name))
        else:
            inputs.unit_ladder = name
    return inputs


def active_exceptions(conn: Connection, device_id: str, org_unit_id: int,
                      now: Optional[float] = None) -> dict[str, dict[str, Any]]:
    """rule id -> the exception that covers this device now (device-specific first)."""
    current = time.time() if now is None else now
    rows = conn.execute(sa.select(rule_exceptions).where(
        rule_exceptions.c.ended_at.is_(None), rule_exceptions.c.expires_at > current,
        sa.or_(rule_exceptions.c.device_id == device_id,
               sa.and_(rule_exceptions.c.device_id.is_(None), rule_exceptions.c.org_unit_id == org_unit_id)))
        .order_by(rule_exceptions.c.device_id.is_(None), rule_exceptions.c.id)).mappings().all()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(str(row["rule_id"]), dict(row))
    return out


def list_exceptions(conn: Connection, org_unit_ids: Optional[Iterable[int]] = None, *,
                    include_ended: bool = False, limit: int = 500,
                    exception_id: Optional[int] = None) -> list[dict[str, Any]]:
    query = sa.select(rule_exceptions, org_units.c.name.label("org_unit")).join(
        org_units, org_units.c.id == rule_exceptions.c.org_unit_id)
    if exception_id is not None:
        query = query.where(rule_exceptions.c.id == exception_id)
    if org_unit_ids is not None:
        query = query.where(rule_exceptions.c.org_unit_id.in_(list(org_unit_ids)))
    if not include_ended:
        query = query.where(rule_exceptions.c.ended_at.is_(None))
    return [dict(row) for row in conn.execute(query.order_by(rule_exceptions.c.id.desc()).limit(limit)).mappings()]


def grant_exception(conn: Connection, *, rule_id: str, org_unit_id: int, device_id: Optional[str], reason: str,
                    expires_at: float, actor: str, now: Optional[float] = None) -> int:
    """Exempt a device (or every device of an org unit) from a rule until ``expires_at``; its id.

    Running episodes of the rule end at once (their blocks lift) and ``exception.granted`` is emitted."""
    current = time.time() if now is None else now
    reason = reason.strip()
    if not reason:
        raise LadderError("an exception needs a reason (who asked, why, what compensates)")
    if expires_at <= current:
        raise LadderError("the expiry of an exception must be in the future")
    if expires_at > current + MAX_EXCEPTION_SECONDS:
        raise LadderError("an exception lasts at most a year: give an earlier expiry and renew it if needed")
    inserted = conn.execute(rule_exceptions.insert().values(
        rule_id=rule_id, device_id=device_id, org_unit_id=org_unit_id, reason=reason[:2000],
        expires_at=expires_at, created_at=current, created_by=actor[:200])).inserted_primary_key
    exception_id = int(inserted[0]) if inserted is not None else 0
    where = [ladder_state.c.rule_id == rule_id]
    where.append(ladder_state.c.device_id == device_id if device_id is not None
                 else ladder_state.c.org_unit_id == org_unit_id)
    pending: list[Event] = [Event("exception.granted", device_id, org_unit_id, None,
                                  {"rule_id": rule_id, "reason": reason, "expires_at": expires_at,
                                   "exception_id": exception_id, "by": actor})]
    for row in conn.execute(sa.select(ladder_state.c.device_id, ladder_state.c.severity).where(*where)).all():
        pending += _end_episode(conn, str(row.device_id), org_unit_id, rule_id, str(row.severity),
                                reason="exempted")
    emit_events(conn, pending, now=current)
    return exception_id


def end_exception(conn: Connection, exception_id: int, *, why: str, now: Optional[float] = None) -> bool:
    """End an exception (revoked by an admin, or expired); failing rules it covered restart their ladder."""
    current = time.time() if now is None else now
    row = conn.execute(sa.select(rule_exceptions).where(rule_exceptions.c.id == exception_id,
                                                        rule_exceptions.c.ended_at.is_(None))).mappings().first()
    if row is None:
        return False
    conn.execute(rule_exceptions.update().where(rule_exceptions.c.id == exception_id).values(ended_at=current))
    pending = [Event("exception.ended", row["device_id"], row["org_unit_id"], None,
                     {"rule_id": row["rule_id"], "exception_id": exception_id, "why": why})]
    # Rules still failing restart their ladder from now: the employee is told again before any block.
    # failing_since is set only on fail and warn (a failure within grace: Result.failing); saying so lets an
    # org unit's exception read its failing rows through (active, rule_id, status, org_unit_id) instead of
    # every row of the rule in the org unit (10.6 -> 0.3 ms at 5,000 devices per unit, with or without
    # planner statistics: docs/collector.md, "Planner statistics").
    where = [check_state.c.active.is_(True), check_state.c.rule_id == row["rule_id"],
             check_state.c.status.in_(("fail", "warn")), check_state.c.failing_since.is_not(None)]
    where.append(check_state.c.device_id == row["device_id"] if row["device_id"] is not None
                 else check_state.c.org_unit_id == row["org_unit_id"])
    failing = conn.execute(sa.select(check_state.c.device_id, check_state.c.org_unit_id, check_state.c.severity,
                                     devices.c.policy_ref).join(devices, devices.c.id == check_state.c.device_id)
                           .where(*where)).all()
    if failing:
        with Driver.on(conn) as driver:
            for item in failing:
                inputs = _episode_inputs(driver, str(item.device_id), int(item.org_unit_id), current)
                if row["rule_id"] in inputs.exempt:
                    continue  # another exception still covers it
                policy_pk = policy_store.policy_pk_for_org_unit(conn, int(item.org_unit_id))
                stored = None if policy_pk is None else policy_store.get_policy(conn, policy_pk)
                if stored is None:
                    continue
                ladder = ladder_of(stored.policy, inputs.unit_ladder)
                pending += _start_episode(conn, str(item.device_id), int(item.org_unit_id), str(row["rule_id"]),
                                          str(item.severity), current, ladder, current)
    emit_events(conn, pending, now=current)
    return True


def expire_exceptions(conn: Connection, now: Optional[float] = None, limit: int = 200) -> int:
    current = time.time() if now is None else now
    ids = [int(r.id) for r in conn.execute(sa.select(rule_exceptions.c.id).where(
        rule_exceptions.c.ended_at.is_(None), rule_exceptions.c.expires_at <= current).limit(limit))]
    for exception_id in ids:
        end_exception(conn, exception_id, why="expired", now=current)
    return len(ids)


# -- episodes ----------------------------------------------------------------------------------------

def _start_episode(conn: Connection, device_id: str, org_unit_id: int, rule_id: str, severity: str,
                   started: float, ladder: Ladder, now: float) -> list[Event]:
    steps = ladder.get(severity, ())
    if not steps:
        return []
    row = {"device_id": device_id, "rule_id": rule_id, "org_unit_id": org_unit_id, "severity": severity,
           "started_at": started, "steps_fired": 0, "last_action": None, "next_action": steps[0].action,
           "next_at": started + steps[0].after, "ladder": _steps_json(steps), "updated_at": now}
    conn.execute(ladder_state.insert().values(**row))
    return _fire_due(conn, row, now)


def _end_episode(conn: Connection, device_id: str, org_unit_id: int, rule_id: str, severity: str,
                 reason: str) -> list[Event]:
    out: list[Event] = []
    conn.execute(ladder_state.delete().where(ladder_state.c.device_id == device_id,
                                             ladder_state.c.rule_id == rule_id))
    lifted = conn.execute(device_blocks.delete().where(device_blocks.c.device_id == device_id,
                                                       device_blocks.c.rule_id == rule_id)).rowcount
    if lifted and not device_blocked(conn, device_id):
        out.append(Event("device.unblocked", device_id, org_unit_id, severity,
                         {"rule_id": rule_id, "why": reason}))
    return out


def _fire_due(conn: Connection, row: dict[str, Any], now: float) -> list[Event]:
    """Fire every step of ``row``'s episode whose deadline passed, update the row; the events."""
    steps = _steps(row["ladder"])
    fired = int(row["steps_fired"])
    started = float(row["started_at"])
    device_id, rule_id, org_unit_id, severity = row["device_id"], row["rule_id"], row["org_unit_id"], row["severity"]
    out: list[Event] = []
    last_action = row["last_action"]
    while fired < len(steps) and started + steps[fired][0] <= now:
        after, action = steps[fired]
        fired += 1
        last_action = action
        data: dict[str, Any] = {"rule_id": rule_id, "step": fired, "action": action, "started_at": started,
                                "due_at": started + after, "status": "fail"}
        if fired < len(steps):
            data["next_action"], data["next_at"] = steps[fired][1], started + steps[fired][0]
        if action == "notify_manager":
            unit = org_unit_ladder(conn, org_unit_id)
            data["recipients"] = unit["contacts"] if unit else []
            data["language"] = unit["language"] if unit else "en"
        out.append(Event("step.reached", device_id, org_unit_id, severity, data))
        if action == "block":
            already = device_blocked(conn, device_id)
            exists = conn.execute(sa.select(device_blocks.c.since).where(
                device_blocks.c.device_id == device_id, device_blocks.c.rule_id == rule_id)).first()
            if exists is None:
                conn.execute(device_blocks.insert().values(device_id=device_id, rule_id=rule_id,
                                                           org_unit_id=org_unit_id, since=now))
            if not already:
                out.append(Event("device.blocked", device_id, org_unit_id, severity,
                                 {"rule_id": rule_id, "started_at": started, "status": "fail"}))
    next_action = steps[fired][1] if fired < len(steps) else None
    next_at = started + steps[fired][0] if fired < len(steps) else None
    if fired != int(row["steps_fired"]) or next_at != row["next_at"]:
        conn.execute(ladder_state.update().where(ladder_state.c.device_id == device_id,
                                                 ladder_state.c.rule_id == rule_id)
                     .values(steps_fired=fired, last_action=last_action, next_action=next_action,
                             next_at=next_at, updated_at=now))
    row.update(steps_fired=fired, last_action=last_action, next_action=next_action, next_at=next_at)
    return out


def on_evaluation(conn: Connection, driver: Driver, *, device_id: str, org_unit_id: int, policy: Policy,
                  changes: Sequence[RuleChange], gone_rules: Sequence[str], old_compliance: str,
                  new_compliance: str, at: float, now: float) -> bool:
    """Consequences of one evaluation that changed something (called by ingest in its transaction, whose
    driver cursor ``driver`` reads what this needs: the episode inputs only when a change can start or end an
    episode, the device's hostname only when there are events to write). True when an episode started."""
    if not changes and not gone_rules and old_compliance == new_compliance:
        return False
    pending: list[Event] = []
    inputs = EpisodeInputs()
    if gone_rules or any(change.failing or change.new_status in ("pass", "not_applicable") for change in changes):
        inputs = _episode_inputs(driver, device_id, org_unit_id, now)
    running = inputs.running
    ladder: Optional[Ladder] = None
    started = False
    for change in changes:
        data = {"rule_id": change.rule_id, "status": change.new_status, "old_status": change.old_status,
                "reason": change.reason}
        if change.new_status == "fail":
            pending.append(Event("rule.failing", device_id, org_unit_id, change.severity,
                                 {**data, "started_at": change.failing_since}, at))
        elif change.old_status == "fail" and change.new_status in ("pass", "not_applicable", "warn"):
            pending.append(Event("rule.passing", device_id, org_unit_id, change.severity, data, at))
        if change.failing:
            if change.rule_id in running or change.rule_id in inputs.exempt:
                continue
            if ladder is None:
                ladder = ladder_of(policy, inputs.unit_ladder)
            started = started or bool(ladder.get(change.severity))
            pending += _start_episode(conn, device_id, org_unit_id, change.rule_id, change.severity,
                                      change.failing_since if change.failing_since is not None else at, ladder, now)
        elif change.new_status in ("pass", "not_applicable") and change.rule_id in running:
            pending += _end_episode(conn, device_id, org_unit_id, change.rule_id, change.severity,
                                    reason=change.new_status)
    for rule_id in gone_rules:
        if rule_id in running:
            pending += _end_episode(conn, device_id, org_unit_id, rule_id, running[rule_id],
                                    reason="rule removed from the policy")
    if old_compliance != new_compliance and new_compliance in ("compliant", "not_compliant"):
        pending.append(Event("device.compliant" if new_compliance == "compliant" else "device.noncompliant",
                             device_id, org_unit_id, None, {"compliance": new_compliance,
                                                            "old_compliance": old_compliance}, at))
    if not pending:
        return started
    # Every event of this evaluation is the device's and names its hostname.
    hostnames = driver.rows(_HOSTNAME, {"device": device_id})
    hostname = hostnames[0][0] if hostnames else None
    for event in pending:
        if event.device_id == device_id and "hostname" not in event.data:
            event.data["hostname"] = hostname
    emit_events(conn, pending, now=now)
    return started


def fire_due_steps(conn: Connection, now: Optional[float] = None, limit: int = 500) -> int:
    """Fire the steps whose deadline passed (the background worker); how many episodes advanced.

    PostgreSQL: the rows are locked with SKIP LOCKED, so several collector processes share the work."""
    current = time.time() if now is None else now
    query = (sa.select(ladder_state).where(ladder_state.c.next_at <= current)
             .order_by(ladder_state.c.next_at).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    pending: list[Event] = []
    hostnames = dict(conn.execute(sa.select(devices.c.id, devices.c.hostname).where(
        devices.c.id.in_({r["device_id"] for r in rows}))).all()) if rows else {}
    for row in rows:
        for event in _fire_due(conn, row, current):
            event.data.setdefault("hostname", hostnames.get(row["device_id"]))
            pending.append(event)
    emit_events(conn, pending, now=current)
    return len(rows)


# -- what others read --------------------------------------------------------------------------------

def device_blocked(conn: Connection, device_id: str) -> bool:
    """True while a ladder step `block` holds for the device (the access decision denies it)."""
    return conn.execute(sa.select(device_blocks.c.rule_id).where(device_blocks.c.device_id == device_id)
                        .limit(1)).first() is not None


def block_severities(ladder: Ladder) -> frozenset[str]:
    """The severities whose ladder ends in a `block` step: their failures are the ladder's to judge."""
    return frozenset(severity for severity, steps in ladder.items()
                     if any(step.action == "block" for step in steps))


def blocked_since(conn: Connection, device_id: str) -> Optional[float]:
    value = conn.execute(sa.select(sa.func.min(device_blocks.c.since))
                         .where(device_blocks.c.device_id == device_id)).scalar()
    return None if value is None else float(value)


def device_ladders(conn: Connection, device_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """device id -> its running episodes: rule, step reached, next step and its deadline, block deadline."""
    if not device_ids:
        return {}
    rows = conn.execute(
        sa.select(ladder_state.c.device_id, ladder_state.c.rule_id, ladder_state.c.severity,
                  ladder_state.c.started_at, ladder_state.c.steps_fired, ladder_state.c.ladder,
                  ladder_state.c.last_action, ladder_state.c.next_action, ladder_state.c.next_at,
                  device_blocks.c.since)
        .select_from(ladder_state.outerjoin(device_blocks, sa.and_(
            device_blocks.c.device_id == ladder_state.c.device_id, device_blocks.c.rule_id == ladder_state.c.rule_id)))
        .where(ladder_state.c.device_id.in_(list(device_ids)))
        .order_by(ladder_state.c.device_id, ladder_state.c.next_at, ladder_state.c.rule_id)).all()
    return ladders_from_rows(device_ids, [tuple(row) for row in rows])


def ladders_from_rows(device_ids: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """device_ladders from rows of (device_id, rule_id, severity, started_at, steps_fired, ladder, last_action,
    next_action, next_at, the block's since or None), in the order to show (ingest reads them on its cursor)."""
    out: dict[str, list[dict[str, Any]]] = {device_id: [] for device_id in device_ids}
    for (device_id, rule_id, severity, started_at, steps_fired, ladder_text, last_action, next_action, next_at,
         blocked) in rows:
        steps = _steps(ladder_text)
        started = float(started_at)
        block_at = next((started + after for after, action in steps if action == "block"), None)
        out[str(device_id)].append({
            "rule_id": rule_id, "severity": severity, "started_at": started, "step": int(steps_fired),
            "steps": len(steps), "last_action": last_action, "next_action": next_action, "next_at": next_at,
            "block_at": block_at, "blocked_since": None if blocked is None else float(blocked)})
    return out


def due_counts(conn: Connection, org_unit_ids: Optional[Sequence[int]], now: float,
               within: float = 86400.0) -> dict[str, int]:
    """Devices blocked, and devices whose `block` step is due within ``within`` seconds (the overview)."""
    blocked_q = sa.select(sa.func.count(sa.distinct(device_blocks.c.device_id)))
    due_q = sa.select(sa.func.count(sa.distinct(ladder_state.c.device_id))).where(
        ladder_state.c.next_action == "block", ladder_state.c.next_at <= now + within)
    if org_unit_ids is not None:
        blocked_q = blocked_q.where(device_blocks.c.org_unit_id.in_(list(org_unit_ids)))
        due_q = due_q.where(ladder_state.c.org_unit_id.in_(list(org_unit_ids)))
    return {"blocked": int(conn.execute(blocked_q).scalar() or 0),
            "due_within_24h": int(conn.execute(due_q).scalar() or 0)}
