"""Enrolment tokens, device registration (and re-registration) and revocation.

Re-enrolment: a machine that enrols again (same machine_id) gets a NEW device id and key. A device id
therefore always names exactly one key pair, so signatures never become ambiguous and old history stays
attached to the key that produced it. The earlier active device with that machine_id is marked
`replaced` (replaced_by = the new id) and refused from then on, but only when one of these holds:

* the request carries the old device key's signature over the new key (`agent.protocol.reenrol_proof`:
  the agent re-enrolling itself), or
* the token's org unit allows replacement within itself (`enrolment_settings.replace_within_org_unit`)
  and the old device is in that same org unit.

Otherwise the new device is `pending` (its reports and policy requests are refused) until an admin
approves it (`approve_pending`: the old device is replaced then) or rejects it (`reject_pending`).
Anyone holding some enrolment token and a machine id could otherwise push a laptop out of the fleet.
Every replacement and conflict is audited by the callers with the `EnrolmentOutcome` this module returns;
all replacement and conflict decisions live here (issue 13's event outbox hooks in at the same places).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agent import protocol
from server import security
from server.actions.events import Event, emit_events
from server.store import audit
from server.store.schema import (
    DEVICE_ACTIVE,
    DEVICE_PENDING,
    DEVICE_REPLACED,
    DEVICE_REVOKED,
    audit_log,
    check_state,
    devices,
    enroll_tokens,
    enrolment_settings,
)
from server.store.scope import Scope

MAX_TOKEN_LIFETIME = 365 * 86400.0
PENDING_REASON = ("device is pending: this machine already has an active device, and an admin must approve "
                  "this enrolment (dashboard or POST /api/v1/admin/devices/{id}/approve)")


class EnrolmentError(Exception):
    """An enrolment that must be refused. ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TokenGrant:
    token_id: int
    org_unit_id: int


def create_enroll_token(conn: Connection, org_unit_id: int, *, uses_allowed: Optional[int],
                        lifetime: float, created_by: Optional[str], now: Optional[float] = None,
                        ) -> tuple[int, str, float]:
    """Store a new enrolment token (hashed); returns (id, token, expires_at)."""
    if uses_allowed is not None and uses_allowed < 1:
        raise ValueError(f"uses must be at least 1 (or omitted for unlimited), found {uses_allowed}")
    if not 0 < lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"expiry must be between 1 second and 365 days, found {lifetime:.0f} seconds")
    current = time.time() if now is None else now
    token = security.new_token(security.ENROLL_TOKEN_PREFIX)
    expires_at = current + lifetime
    token_id = int(conn.execute(enroll_tokens.insert().values(
        token_hash=security.token_hash(token), prefix=security.token_display_prefix(token),
        org_unit_id=org_unit_id, uses_allowed=uses_allowed, uses=0, expires_at=expires_at,
        created_at=current, created_by=created_by).returning(enroll_tokens.c.id)).scalar_one())
    return token_id, token, expires_at


def list_enroll_tokens(conn: Connection, scope: Scope, *, include_inactive: bool = False,
                       now: Optional[float] = None) -> list[dict[str, Any]]:
    current = time.time() if now is None else now
    where: list[Any] = [scope.clause(enroll_tokens.c.org_unit_id)]
    if not include_inactive:
        where += [enroll_tokens.c.revoked_at.is_(None), enroll_tokens.c.expires_at > current]
    rows = conn.execute(sa.select(enroll_tokens.c.id, enroll_tokens.c.prefix, enroll_tokens.c.org_unit_id,
                                  enroll_tokens.c.uses_allowed, enroll_tokens.c.uses, enroll_tokens.c.expires_at,
                                  enroll_tokens.c.created_at, enroll_tokens.c.created_by, enroll_tokens.c.revoked_at)
                        .where(*where).order_by(enroll_tokens.c.created_at.desc()).limit(1000)).mappings().all()
    return [dict(r) for r in rows]


def get_enroll_token(conn: Connection, token_id: int) -> Optional[dict[str, Any]]:
    row = conn.execute(sa.select(enroll_tokens).where(enroll_tokens.c.id == token_id)).mappings().first()
    return None if row is None else dict(row)


def revoke_enroll_token(conn: Connection, token_id: int, now: Optional[float] = None) -> bool:
    return bool(conn.execute(enroll_tokens.update().where(enroll_tokens.c.id == token_id,
                                                          enroll_tokens.c.revoked_at.is_(None))
                             .values(revoked_at=time.time() if now is None else now)).rowcount)


def consume_enroll_token(conn: Connection, token: str, now: float) -> TokenGrant:
    """Count one use of ``token`` atomically (safe against concurrent enrolments) or raise EnrolmentError."""
    if not isinstance(token, str) or not token.startswith(security.ENROLL_TOKEN_PREFIX) or len(token) > 200:
        raise EnrolmentError(401, "enrolment token not recognised: expected the tpe_... token from "
                                  "`teleposture-server token create`")
    digest = security.token_hash(token)
    granted = conn.execute(
        enroll_tokens.update()
        .where(enroll_tokens.c.token_hash == digest, enroll_tokens.c.revoked_at.is_(None),
               enroll_tokens.c.expires_at > now,
               sa.or_(enroll_tokens.c.uses_allowed.is_(None), enroll_tokens.c.uses < enroll_tokens.c.uses_allowed))
        .values(uses=enroll_tokens.c.uses + 1)
        .returning(enroll_tokens.c.id, enroll_tokens.c.org_unit_id)).first()
    if granted is not None:
        return TokenGrant(int(granted.id), int(granted.org_unit_id))
    row = conn.execute(sa.select(enroll_tokens).where(enroll_tokens.c.token_hash == digest)).mappings().first()
    if row is None:
        raise EnrolmentError(401, "enrolment token not recognised: check it was copied whole, or create a new one")
    if row["revoked_at"] is not None:
        raise EnrolmentError(403, "enrolment token was revoked: ask the collector operator for a new one")
    if row["expires_at"] <= now:
        raise EnrolmentError(403, "enrolment token has expired: ask the collector operator for a new one")
    raise EnrolmentError(403, f"enrolment token is used up ({row['uses']} of {row['uses_allowed']} uses): "
                              "ask the collector operator for a new one")


def _text(identity: Mapping[str, Any], name: str, limit: int) -> str:
    value = identity.get(name)
    return "" if value is None else str(value)[:limit]


@dataclass(frozen=True)
class EnrolmentOutcome:
    """What registering a device did: ``state`` is active or pending; ``replaced`` the devices it
    replaced; ``conflicts_with`` the active devices of the same machine a pending device waits against;
    ``how`` says why a replacement was allowed (``previous_key`` or ``org_unit_setting``), or None."""

    device_id: str
    state: str
    replaced: tuple[str, ...] = ()
    conflicts_with: tuple[str, ...] = ()
    how: Optional[str] = None
    proof_problem: Optional[str] = None  # a proof was sent but did not verify: said in the audit entry


def replace_within_org_unit(conn: Connection, org_unit_id: int) -> bool:
    value = conn.execute(sa.select(enrolment_settings.c.replace_within_org_unit)
                         .where(enrolment_settings.c.org_unit_id == org_unit_id)).scalar_one_or_none()
    return bool(value)


def set_replace_within_org_unit(conn: Connection, org_unit_id: int, allowed: bool, now: float) -> None:
    updated = conn.execute(enrolment_settings.update().where(enrolment_settings.c.org_unit_id == org_unit_id)
                           .values(replace_within_org_unit=allowed, updated_at=now)).rowcount
    if not updated:
        conn.execute(enrolment_settings.insert().values(org_unit_id=org_unit_id, replace_within_org_unit=allowed,
                                                        updated_at=now))


def _proof_device(previous: Sequence[Any], proof: Optional[Mapping[str, str]], public_key: str,
                  now: float) -> tuple[Optional[str], Optional[str]]:
    """(id of the active device whose key signed ``proof``, None) or (None, why the proof does not count)."""
    if proof is None:
        return None, None
    named = next((row for row in previous if row.id == proof.get("device_id")), None)
    if named is None:
        return None, "the re-enrolment proof names no active device of this machine"
    try:
        protocol.check_reenrol_proof(protocol.load_public_key(named.public_key), proof, public_key, now=now)
    except protocol.ProtocolError as exc:
        return None, str(exc)
    return str(named.id), None


def register_device(conn: Connection, grant: TokenGrant, public_key: str, key_id: str,
                    identity: Mapping[str, Any], now: float,
                    proof: Optional[Mapping[str, str]] = None) -> EnrolmentOutcome:
    """Insert the device, active or pending (see the module docstring), and replace what it may replace."""
    device_id = str(uuid.uuid4())
    machine_id = _text(identity, "machine_id", 200)
    previous = conn.execute(sa.select(devices.c.id, devices.c.public_key, devices.c.org_unit_id)
                            .where(devices.c.machine_id == machine_id, devices.c.state == DEVICE_ACTIVE)
                            .order_by(devices.c.enrolled_at.desc())).all()
    how: Optional[str] = None
    proven, proof_problem = _proof_device(previous, proof, public_key, now)
    if previous:
        if proven is not None:
            how = "previous_key"
        elif all(int(row.org_unit_id) == grant.org_unit_id for row in previous) \
                and replace_within_org_unit(conn, grant.org_unit_id):
            how = "org_unit_setting"
    state = DEVICE_ACTIVE if not previous or how is not None else DEVICE_PENDING
    previous_ids = tuple(str(row.id) for row in previous)
    hostname, serial, user = _text(identity, "hostname", 255), _text(identity, "serial", 200), _text(identity, "user", 200)
    conn.execute(devices.insert().values(
        id=device_id, org_unit_id=grant.org_unit_id, state=state, public_key=public_key, key_id=key_id,
        machine_id=machine_id, hostname=hostname, hostname_lc=hostname.lower(), serial=serial,
        serial_lc=serial.lower(), username=user, username_lc=user.lower(),
        platform=_text(identity, "platform", 16), os_name=_text(identity, "os_name", 200),
        os_version=_text(identity, "os_version", 100), enrolled_at=now, enroll_token_id=grant.token_id,
        replaces=previous_ids[0] if previous_ids else None, last_seq=0, compliance="unknown"))
    emit_events(conn, [Event("device.enrolled", device_id, grant.org_unit_id, None,
                             {"hostname": hostname, "state": state,
                              "replaces": previous_ids[0] if previous_ids and state != DEVICE_PENDING else None},
                             now)], now=now)
    if state == DEVICE_PENDING:
        emit_events(conn, [Event("enrolment.conflict", device_id, grant.org_unit_id, None,
                                 {"hostname": hostname, "machine_id": machine_id,
                                  "active_devices": list(previous_ids), "waiting_for": "an admin's approval"},
                                 now)], now=now)
        return EnrolmentOutcome(device_id, state, conflicts_with=previous_ids, proof_problem=proof_problem)
    _replace(conn, previous_ids, device_id, now)
    return EnrolmentOutcome(device_id, state, replaced=previous_ids, how=how, proof_problem=proof_problem)


def _replace(conn: Connection, old_ids: tuple[str, ...], new_id: str, now: float) -> None:
    for old_id in old_ids:
        row = conn.execute(devices.update().where(devices.c.id == old_id)
                           .values(state=DEVICE_REPLACED, replaced_by=new_id, revoked_at=now)
                           .returning(devices.c.org_unit_id, devices.c.hostname)).first()
        conn.execute(check_state.update().where(check_state.c.device_id == old_id).values(active=False))
        # the events of this change, in its transaction (server.actions, docs/actions.md)
        emit_events(conn, [Event("device.replaced", old_id, int(row.org_unit_id) if row else None, None,
                                 {"hostname": row.hostname if row else "", "replaced_by": new_id}, now)], now=now)


def record_enrolment(conn: Connection, outcome: EnrolmentOutcome, grant: TokenGrant, hostname: str,
                     machine_id: str, remote_addr: Optional[str]) -> None:
    """Audit an enrolment: ``device.enroll``, plus ``device.replace`` for each device it replaced or
    ``device.enroll_conflict`` when it waits for approval (the device page lists both)."""
    actor = f"enroll-token:{grant.token_id}"
    details: dict[str, Any] = {"hostname": hostname, "machine_id": machine_id, "state": outcome.state,
                               "replaced": outcome.replaced[0] if outcome.replaced else None}
    if outcome.proof_problem:
        details["proof_problem"] = outcome.proof_problem
    audit.record(conn, actor=actor, action="device.enroll", target=outcome.device_id, org_unit_id=grant.org_unit_id,
                 remote_addr=remote_addr, details=details)
    for old_id in outcome.replaced:
        audit.record(conn, actor=actor, action="device.replace", target=old_id, org_unit_id=grant.org_unit_id,
                     remote_addr=remote_addr, details={"replaced_by": outcome.device_id, "how": outcome.how})
    if outcome.conflicts_with:
        audit.record(conn, actor=actor, action="device.enroll_conflict", target=outcome.device_id,
                     org_unit_id=grant.org_unit_id, outcome="denied", remote_addr=remote_addr,
                     details={"machine_id": machine_id, "active_devices": list(outcome.conflicts_with),
                              "waiting_for": "an admin's approval"})


def record_decision(conn: Connection, actor: str, device: Mapping[str, Any], approved: bool,
                    replaced: Sequence[str], remote_addr: Optional[str]) -> None:
    """Audit an admin's decision on a pending device (and each replacement it caused)."""
    audit.record(conn, actor=actor, action="device.approve" if approved else "device.reject", target=device["id"],
                 org_unit_id=device["org_unit_id"], remote_addr=remote_addr,
                 details={"hostname": device["hostname"], "replaced": list(replaced)})
    for old_id in replaced:
        audit.record(conn, actor=actor, action="device.replace", target=old_id, org_unit_id=device["org_unit_id"],
                     remote_addr=remote_addr, details={"replaced_by": device["id"], "how": "approved"})


ENROLMENT_ACTIONS = ("device.enroll", "device.replace", "device.enroll_conflict", "device.approve",
                     "device.reject")


def machine_enrolments(conn: Connection, machine_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """Every device of one machine, newest first (the device page's enrolment history)."""
    rows = conn.execute(sa.select(devices.c.id, devices.c.hostname, devices.c.state, devices.c.enrolled_at,
                                  devices.c.replaced_by, devices.c.org_unit_id)
                        .where(devices.c.machine_id == machine_id)
                        .order_by(devices.c.enrolled_at.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def enrolment_events(conn: Connection, device_ids: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
    """Audit entries about these devices' enrolments and replacements, newest first."""
    rows = conn.execute(sa.select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.target,
                                  audit_log.c.outcome, audit_log.c.details)
                        .where(audit_log.c.target.in_(list(device_ids)),
                               audit_log.c.action.in_(ENROLMENT_ACTIONS))
                        .order_by(audit_log.c.at.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def approve_pending(conn: Connection, device_id: str, now: float) -> tuple[str, ...]:
    """Activate a pending device; every active device of the same machine is replaced by it. Returns the
    replaced ids. Raises EnrolmentError(409) when the device is not pending."""
    row = conn.execute(sa.select(devices.c.machine_id).where(devices.c.id == device_id,
                                                             devices.c.state == DEVICE_PENDING)).first()
    if row is None:
        raise EnrolmentError(409, "this device is not waiting for approval")
    old_ids = tuple(str(i) for i in conn.execute(
        sa.select(devices.c.id).where(devices.c.machine_id == row.machine_id, devices.c.state == DEVICE_ACTIVE)
        .order_by(devices.c.enrolled_at.desc()).with_for_update()).scalars())
    conn.execute(devices.update().where(devices.c.id == device_id, devices.c.state == DEVICE_PENDING)
                 .values(state=DEVICE_ACTIVE, replaces=old_ids[0] if old_ids else None))
    _replace(conn, old_ids, device_id, now)
    return old_ids


def reject_pending(conn: Connection, device_id: str, now: float) -> None:
    """Refuse a pending enrolment for good (the device becomes revoked; the old device stays active)."""
    changed = conn.execute(devices.update().where(devices.c.id == device_id, devices.c.state == DEVICE_PENDING)
                           .values(state=DEVICE_REVOKED, revoked_at=now)).rowcount
    if not changed:
        raise EnrolmentError(409, "this device is not waiting for approval")


def revoke_device(conn: Connection, device_id: str, now: float) -> bool:
    """Mark an active device revoked: every later request signed by it is refused."""
    changed = conn.execute(devices.update().where(devices.c.id == device_id, devices.c.state == DEVICE_ACTIVE)
                           .values(state=DEVICE_REVOKED, revoked_at=now)).rowcount
    if changed:
        conn.execute(check_state.update().where(check_state.c.device_id == device_id).values(active=False))
    return bool(changed)
