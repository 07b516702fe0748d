"""Enrolment tokens, device registration (and re-registration) and revocation.

Re-enrolment: a machine that enrols again (same machine_id) gets a NEW device id and key; the earlier
active device with that machine_id is marked `replaced` (replaced_by = the new id) and refused from then
on. A device id therefore always names exactly one key pair, so signatures never become ambiguous and
old history stays attached to the key that produced it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server import security
from server.store.schema import (
    DEVICE_ACTIVE,
    DEVICE_REPLACED,
    DEVICE_REVOKED,
    check_state,
    devices,
    enroll_tokens,
)
from server.store.scope import Scope

MAX_TOKEN_LIFETIME = 365 * 86400.0


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


def register_device(conn: Connection, grant: TokenGrant, public_key: str, key_id: str,
                    identity: Mapping[str, Any], now: float) -> tuple[str, Optional[str]]:
    """Insert the device; returns (device_id, replaced device id or None)."""
    device_id = str(uuid.uuid4())
    machine_id = _text(identity, "machine_id", 200)
    previous = conn.execute(sa.select(devices.c.id).where(devices.c.machine_id == machine_id,
                                                          devices.c.state == DEVICE_ACTIVE)
                            .order_by(devices.c.enrolled_at.desc())).scalars().all()
    hostname, serial, user = _text(identity, "hostname", 255), _text(identity, "serial", 200), _text(identity, "user", 200)
    conn.execute(devices.insert().values(
        id=device_id, org_unit_id=grant.org_unit_id, state=DEVICE_ACTIVE, public_key=public_key, key_id=key_id,
        machine_id=machine_id, hostname=hostname, hostname_lc=hostname.lower(), serial=serial,
        serial_lc=serial.lower(), username=user, username_lc=user.lower(),
        platform=_text(identity, "platform", 16), os_name=_text(identity, "os_name", 200),
        os_version=_text(identity, "os_version", 100), enrolled_at=now, enroll_token_id=grant.token_id,
        replaces=previous[0] if previous else None, last_seq=0, compliance="unknown"))
    for old_id in previous:
        conn.execute(devices.update().where(devices.c.id == old_id)
                     .values(state=DEVICE_REPLACED, replaced_by=device_id, revoked_at=now))
        conn.execute(check_state.update().where(check_state.c.device_id == old_id).values(active=False))
    # Events of this change, in its transaction (server.actions, docs/actions.md).
    from server.actions.events import Event, emit_events

    emit_events(conn, [Event("device.enrolled", device_id, grant.org_unit_id, None,
                             {"hostname": hostname, "replaces": previous[0] if previous else None}, now)]
                + [Event("device.replaced", old_id, grant.org_unit_id, None,
                         {"hostname": hostname, "replaced_by": device_id}, now) for old_id in previous], now=now)
    return device_id, (previous[0] if previous else None)


def revoke_device(conn: Connection, device_id: str, now: float) -> bool:
    """Mark an active device revoked: every later request signed by it is refused."""
    changed = conn.execute(devices.update().where(devices.c.id == device_id, devices.c.state == DEVICE_ACTIVE)
                           .values(state=DEVICE_REVOKED, revoked_at=now)).rowcount
    if changed:
        conn.execute(check_state.update().where(check_state.c.device_id == device_id).values(active=False))
    return bool(changed)
