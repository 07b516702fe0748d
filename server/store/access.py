"""Storage of access decisions: inputs of ``server.access.decide``, its current result per device,
admin exceptions, network credentials, gate tokens and the decisions gates report back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server import security
from server.access import AccessDecision, AccessException, DeviceAccessInput, RuleState
from server.store.fleet import Page
from server.store.ingest_sql import Driver, in_list
from server.store.schema import (
    CREDENTIAL_KINDS,
    access_exceptions,
    access_state,
    devices,
    gate_decisions,
    gate_tokens,
    network_credentials,
)
from server.store.scope import Scope

GATE_TOKEN_PREFIX = "tpg_"  # noqa: S105 (a label, not a secret)
GATE_EVENTS = ("connect", "reauth", "disconnect", "request")


class AccessStoreError(ValueError):
    """Bad input for an access operation; the message says what was expected."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    org_unit_id: int
    key_id: str
    hostname: str
    state: str


def device_row(conn: Connection, device_id: str) -> Optional[DeviceRow]:
    row = conn.execute(sa.select(devices.c.id, devices.c.org_unit_id, devices.c.key_id, devices.c.hostname,
                                 devices.c.state).where(devices.c.id == device_id)).first()
    return None if row is None else DeviceRow(row.id, int(row.org_unit_id), row.key_id, row.hostname, row.state)


def device_public_key(conn: Connection, device_id: str) -> str:
    return str(conn.execute(sa.select(devices.c.public_key).where(devices.c.id == device_id)).scalar_one())


@dataclass
class DecisionInputs:
    """Everything ``decide`` and the token need for one device, read in a few queries for a whole batch."""

    device: DeviceRow
    facts: DeviceAccessInput
    exception: Optional[AccessException]
    fingerprints: list[str]
    previous: Optional[dict[str, Any]]
    blocked: bool  # a ladder step `block` holds (server.actions.ladder.device_blocked)
    unit_ladder: Optional[str]  # the org unit's own ladder, as stored (server.actions.ladder.ladder_of)


# The decision inputs of a batch of devices, as plain driver SQL on the transaction's cursor (``{ids}``: one
# placeholder per device): an access decision is issued in the answer of each upload that evaluated a
# report, and building Core statements and SQLAlchemy's result set-up cost more CPU than the queries (on
# PostgreSQL each statement is also a round trip: the device, its stored decision, its blocks and its org
# unit's ladder come in one).
_DEVICES = (
    "SELECT d.id, d.org_unit_id, d.key_id, d.hostname, d.state, d.last_seen, "
    "EXISTS (SELECT 1 FROM device_blocks b WHERE b.device_id = d.id), l.actions, "
    "s.device_id, s.decision, s.since, s.causes, s.warnings, s.updated_at, s.org_unit_id "
    "FROM devices d LEFT JOIN org_unit_ladders l ON l.org_unit_id = d.org_unit_id "
    "LEFT JOIN access_state s ON s.device_id = d.id WHERE d.id IN ({ids}) ORDER BY d.id")
_STATE_COLUMNS = ("device_id", "decision", "since", "causes", "warnings", "updated_at", "org_unit_id")
# By primary key, inactive rows skipped here: with ``AND active IS 1`` (Core's ``active.is_(True)``) SQLite,
# which has no statistics, chose the index that starts with ``active`` and walked every active rule row of
# the fleet for one device (3.5 ms at 1,000 devices).
_RULES = ("SELECT device_id, rule_id, severity, status, since, failing_since, active FROM check_state "
          "WHERE device_id IN ({ids})")
# Ordered by expiry: the one lasting longest wins.
_EXCEPTIONS = ("SELECT device_id, reason, expires_at, created_by FROM access_exceptions "
               "WHERE device_id IN ({ids}) AND expires_at > :now AND revoked_at IS NULL ORDER BY expires_at")
_CREDENTIALS = "SELECT device_id, fingerprint FROM network_credentials WHERE device_id IN ({ids})"
_UPDATE_STATE = ("UPDATE access_state SET decision = :decision, since = :since, causes = :causes, "
                 "warnings = :warnings, updated_at = :now WHERE device_id = :id")
_INSERT_STATE = ("INSERT INTO access_state (device_id, decision, since, causes, warnings, updated_at, org_unit_id) "
                 "VALUES (:id, :decision, :now, :causes, :warnings, :now, :unit)")


def load_inputs(driver: Driver, device_ids: Sequence[str], now: float) -> dict[str, DecisionInputs]:
    """Decision inputs of each known device among ``device_ids`` (4 queries, whatever the count), read on the
    transaction's ``driver`` cursor."""
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    placeholders, names = in_list(ids, "d")
    rows = driver.rows(_DEVICES.format(ids=placeholders), names)
    rules: dict[str, list[RuleState]] = {row[0]: [] for row in rows}
    for device_id, rule_id, severity, status, since, failing_since, active in driver.rows(
            _RULES.format(ids=placeholders), names):
        if active:
            # A warn whose facts fail (failing_since is kept for fail and for warn within grace: Result.failing).
            rules[device_id].append(RuleState(rule_id, severity, status, float(since),
                                              within_grace=status == "warn" and failing_since is not None))
    exceptions = {device_id: AccessException(reason, float(expires_at), created_by)
                  for device_id, reason, expires_at, created_by
                  in driver.rows(_EXCEPTIONS.format(ids=placeholders), {**names, "now": now})}
    prints: dict[str, list[str]] = {row[0]: [] for row in rows}
    for device_id, fingerprint in driver.rows(_CREDENTIALS.format(ids=placeholders), names):
        prints[device_id].append(fingerprint)
    out: dict[str, DecisionInputs] = {}
    for device_id, org_unit_id, key_id, hostname, state, last_seen, blocked, unit_ladder, *stored in rows:
        previous = None if stored[0] is None else _state_item(dict(zip(_STATE_COLUMNS, stored)))
        out[device_id] = DecisionInputs(
            DeviceRow(device_id, int(org_unit_id), key_id, hostname, state),
            DeviceAccessInput(device_id, state, last_seen, rules[device_id]), exceptions.get(device_id),
            prints[device_id], previous, bool(blocked), unit_ladder)
    return out


def _state_item(row: Any) -> dict[str, Any]:
    item = dict(row)
    item["causes"], item["warnings"] = json.loads(item["causes"]), json.loads(item["warnings"])
    return item


def add_exception(conn: Connection, device_id: str, reason: str, expires_at: float, actor: str,
                  now: float) -> int:
    if not reason.strip() or len(reason) > 2000:
        raise AccessStoreError("an exception needs a reason of 1-2000 characters (why this device may connect)")
    if expires_at <= now:
        raise AccessStoreError("an exception's expires_at must be in the future")
    if expires_at - now > 90 * 86400:
        raise AccessStoreError("an exception may last at most 90 days; renew it when it ends")
    return int(conn.execute(access_exceptions.insert().values(
        device_id=device_id, reason=reason.strip(), expires_at=expires_at, created_at=now, created_by=actor[:200])
        .returning(access_exceptions.c.id)).scalar_one())


def revoke_exceptions(conn: Connection, device_id: str, now: float) -> int:
    return int(conn.execute(access_exceptions.update()
                            .where(access_exceptions.c.device_id == device_id,
                                   access_exceptions.c.revoked_at.is_(None), access_exceptions.c.expires_at > now)
                            .values(revoked_at=now)).rowcount or 0)


def fingerprints(conn: Connection, device_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(network_credentials).where(network_credentials.c.device_id == device_id)
                        .order_by(network_credentials.c.created_at)).mappings().all()
    return [dict(r) for r in rows]


def device_for_fingerprint(conn: Connection, fingerprint: str) -> Optional[str]:
    return conn.execute(sa.select(network_credentials.c.device_id)
                        .where(network_credentials.c.fingerprint == fingerprint)).scalar_one_or_none()


def link_credential(conn: Connection, device_id: str, fingerprint: str, kind: str, label: str, actor: str,
                    now: float) -> None:
    """Link a certificate to a device. A certificate names one device: linking it elsewhere is refused."""
    if kind not in CREDENTIAL_KINDS:
        raise AccessStoreError(f"kind must be one of {', '.join(CREDENTIAL_KINDS)}, found {kind!r}")
    owner = device_for_fingerprint(conn, fingerprint)
    if owner == device_id:
        return
    if owner is not None:
        raise AccessStoreError(f"this certificate is already linked to device {owner}; unlink it there first",
                               status=409)
    conn.execute(network_credentials.insert().values(fingerprint=fingerprint, device_id=device_id, kind=kind,
                                                     label=label[:300], created_at=now, created_by=actor[:200]))


def replace_device_certificate(conn: Connection, device_id: str, fingerprint: str, not_after: float,
                               now: float) -> None:
    """Record a device TLS certificate just issued; forget this device's expired ones."""
    conn.execute(network_credentials.delete().where(
        network_credentials.c.device_id == device_id, network_credentials.c.kind == "device_tls",
        network_credentials.c.not_after < now))
    conn.execute(network_credentials.insert().values(
        fingerprint=fingerprint, device_id=device_id, kind="device_tls", label="device TLS certificate",
        created_at=now, created_by=f"device:{device_id}", not_after=not_after))


def unlink_credential(conn: Connection, device_id: str, fingerprint: str) -> bool:
    return bool(conn.execute(network_credentials.delete().where(
        network_credentials.c.device_id == device_id, network_credentials.c.fingerprint == fingerprint)).rowcount)


def record_state(driver: Driver, device: DeviceRow, result: AccessDecision, previous: Optional[dict[str, Any]],
                 now: float) -> float:
    """Keep the device's current decision (``previous``: its stored one); answer since when it holds. An
    unchanged outcome and set of causes keeps its ``since``; nothing is written when nothing changed."""
    causes, warnings = json.dumps(list(result.causes), sort_keys=True), json.dumps(list(result.warnings),
                                                                                   sort_keys=True)
    values = {"id": device.device_id, "decision": result.decision, "causes": causes, "warnings": warnings,
              "now": now}
    if previous is not None:
        same = (previous["decision"], tuple(sorted(f"{c['code']}:{c.get('rule_id', '')}"
                                                   for c in previous["causes"]))) == result.key()
        if same and previous["warnings"] == json.loads(warnings):
            return float(previous["since"])
        since = float(previous["since"]) if same else now
        driver.execute(_UPDATE_STATE, {**values, "since": since})
        return since
    driver.execute(_INSERT_STATE, {**values, "unit": device.org_unit_id})
    return now


def denied_now(conn: Connection, scope: Scope, *, page: int = 1, per_page: int = 50) -> Page:
    where = sa.and_(access_state.c.decision == "deny", scope.clause(access_state.c.org_unit_id))
    total = conn.execute(sa.select(sa.func.count()).select_from(access_state).where(where)).scalar_one()
    rows = conn.execute(sa.select(access_state, devices.c.hostname, devices.c.state)
                        .join(devices, devices.c.id == access_state.c.device_id).where(where)
                        .order_by(access_state.c.since.desc(), access_state.c.device_id)
                        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    return Page([_state_item(row) for row in rows], int(total), page, per_page)


# -- gate tokens ------------------------------------------------------------------------------

def create_gate_token(conn: Connection, name: str, now: Optional[float] = None) -> tuple[int, str]:
    if not name or len(name) > 200:
        raise AccessStoreError("a gate token needs a name of 1-200 characters (which gate uses it)")
    if conn.execute(sa.select(gate_tokens.c.id).where(gate_tokens.c.name == name)).first() is not None:
        raise AccessStoreError(f"a gate token named {name!r} exists already", status=409)
    token = security.new_token(GATE_TOKEN_PREFIX)
    token_id = int(conn.execute(gate_tokens.insert().values(
        name=name, token_hash=security.token_hash(token), prefix=security.token_display_prefix(token),
        created_at=time.time() if now is None else now).returning(gate_tokens.c.id)).scalar_one())
    return token_id, token


def authenticate_gate(conn: Connection, token: str) -> Optional[str]:
    """The gate's name for a valid, unrevoked gate token; None otherwise."""
    if not token.startswith(GATE_TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(sa.select(gate_tokens.c.name, gate_tokens.c.revoked_at)
                       .where(gate_tokens.c.token_hash == security.token_hash(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return str(row.name)


def revoke_gate_token(conn: Connection, name: str, now: float) -> bool:
    return bool(conn.execute(gate_tokens.update().where(gate_tokens.c.name == name,
                                                        gate_tokens.c.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount)


# -- what gates decided -----------------------------------------------------------------------

def record_gate_decisions(conn: Connection, gate: str, events: Sequence[dict[str, Any]], now: float) -> int:
    rows = []
    for event in events:
        fingerprint = event["fingerprint"]
        device_id = device_for_fingerprint(conn, fingerprint)
        unit = None
        if device_id is not None:
            unit = conn.execute(sa.select(devices.c.org_unit_id).where(devices.c.id == device_id)).scalar_one()
        rows.append({"at": event["at"], "received_at": now, "gate": gate, "device_id": device_id,
                     "fingerprint": fingerprint, "event": event["event"], "outcome": event["outcome"],
                     "reason": event["reason"], "detail": event.get("detail", ""), "org_unit_id": unit})
    if rows:
        conn.execute(gate_decisions.insert(), rows)
    return len(rows)


def last_gate_decision(conn: Connection, device_id: str) -> Optional[dict[str, Any]]:
    row = conn.execute(sa.select(gate_decisions).where(gate_decisions.c.device_id == device_id)
                       .order_by(gate_decisions.c.at.desc(), gate_decisions.c.id.desc()).limit(1)).mappings().first()
    return None if row is None else dict(row)


def _gate_where(scope: Scope, device_id: Optional[str], outcome: Optional[str],
                since: Optional[float]) -> sa.ColumnElement[bool]:
    conditions: list[sa.ColumnElement[bool]] = []
    if not scope.unrestricted:
        conditions.append(scope.clause(gate_decisions.c.org_unit_id))
    if device_id:
        conditions.append(gate_decisions.c.device_id == device_id)
    if outcome:
        conditions.append(gate_decisions.c.outcome == outcome)
    if since is not None:
        conditions.append(gate_decisions.c.at >= since)
    return sa.and_(sa.true(), *conditions)


def list_gate_decisions(conn: Connection, scope: Scope, *, device_id: Optional[str] = None,
                        outcome: Optional[str] = None, since: Optional[float] = None, page: int = 1,
                        per_page: int = 50) -> Page:
    where = _gate_where(scope, device_id, outcome, since)
    total = conn.execute(sa.select(sa.func.count()).select_from(gate_decisions).where(where)).scalar_one()
    rows = conn.execute(sa.select(gate_decisions).where(where)
                        .order_by(gate_decisions.c.at.desc(), gate_decisions.c.id.desc())
                        .limit(per_page).offset((page - 1) * per_page)).mappings().all()
    return Page([dict(r) for r in rows], int(total), page, per_page)


def iter_gate_decisions(conn: Connection, scope: Scope, *, device_id: Optional[str] = None,
                        outcome: Optional[str] = None, since: Optional[float] = None,
                        batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching gate decision, newest first, read in keyset batches (exports)."""
    where = _gate_where(scope, device_id, outcome, since)
    last: Optional[tuple[float, int]] = None
    while True:
        query = sa.select(gate_decisions).where(where)
        if last is not None:
            query = query.where(sa.or_(gate_decisions.c.at < last[0],
                                       sa.and_(gate_decisions.c.at == last[0], gate_decisions.c.id < last[1])))
        rows = conn.execute(query.order_by(gate_decisions.c.at.desc(), gate_decisions.c.id.desc())
                            .limit(batch)).mappings().all()
        if not rows:
            return
        for row in rows:
            yield dict(row)
        last = (float(rows[-1]["at"]), int(rows[-1]["id"]))
