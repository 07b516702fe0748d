"""Org units, dashboard users and admin API tokens."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server import lowprio, security
from server.store.db import Database
from server.store.schema import ROLES, api_token_org_units, api_tokens, org_units, user_org_units, users
from server.store.scope import Scope

ORG_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,199}$")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
MIN_PASSWORD_LENGTH = 12


class AccountError(ValueError):
    """A bad name, role or password; the message says what was expected."""


@dataclass(frozen=True)
class Principal:
    """Who is calling the admin API (or the dashboard): name for the audit log, role and scope."""

    actor: str
    role: str
    scope: Scope
    token_id: Optional[int] = None
    user_id: Optional[int] = None
    # For API tokens: whether last_used_at is old enough to be refreshed (see touch_api_token).
    needs_touch: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# -- org units ---------------------------------------------------------------------------------

def check_org_unit_name(name: str) -> str:
    if not isinstance(name, str) or not ORG_UNIT_NAME.match(name):
        raise AccountError(f"org unit name {str(name)[:60]!r} is not valid: expected 1-200 letters, digits, "
                           "spaces or . _ / - (starting with a letter or digit)")
    return name


def ensure_org_unit(conn: Connection, name: str, now: Optional[float] = None) -> int:
    """The id of org unit ``name``, created when it does not exist yet."""
    check_org_unit_name(name)
    found = conn.execute(sa.select(org_units.c.id).where(org_units.c.name == name)).scalar_one_or_none()
    if found is not None:
        return int(found)
    return int(conn.execute(org_units.insert().values(name=name, created_at=time.time() if now is None else now)
                            .returning(org_units.c.id)).scalar_one())


def org_unit_id(conn: Connection, name: str) -> Optional[int]:
    found = conn.execute(sa.select(org_units.c.id).where(org_units.c.name == name)).scalar_one_or_none()
    return None if found is None else int(found)


def list_org_units(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(org_units).where(scope.clause(org_units.c.id)).order_by(org_units.c.name))
    return [dict(row) for row in rows.mappings()]


def org_unit_names(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(org_units.c.id, org_units.c.name).where(org_units.c.id.in_(wanted)))
    return {int(row.id): str(row.name) for row in rows}


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, found {role!r}")
    return role


# -- users -------------------------------------------------------------------------------------

def check_password(password: str) -> str:
    """The rules every new password meets (user creation and password changes alike)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters, found {len(password)}")
    return password


def create_user(conn: Connection, username: str, password: str, role: str,
                org_unit_ids: Iterable[int] = (), now: Optional[float] = None) -> int:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise AccountError(f"user name {str(username)[:60]!r} is not valid: expected letters, digits and . _ @ -")
    check_password(password)
    _check_role(role)
    exists = conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one_or_none()
    if exists is not None:
        raise AccountError(f"user {username!r} already exists")
    user_id = int(conn.execute(users.insert().values(
        username=username, password_hash=security.hash_password(password), role=role,
        created_at=time.time() if now is None else now).returning(users.c.id)).scalar_one())
    for unit in sorted(set(org_unit_ids)):
        conn.execute(user_org_units.insert().values(user_id=user_id, org_unit_id=unit))
    return user_id


@dataclass(frozen=True)
class PasswordMatch:
    """A user whose password verified (``verify_user_password``), not yet signed in."""

    user_id: int
    password_hash: str


def verify_user_password(db: Database, username: str, password: str,
                         checks: Optional[lowprio.LowPriorityPool] = None) -> Optional[PasswordMatch]:
    """Check a user name and password with scrypt OUTSIDE any transaction, on the low-priority thread
    of ``checks`` (default ``lowprio.PASSWORD_CHECKS``; ``lowprio.Busy`` when too many wait).

    scrypt costs ~0.1-0.4 s of CPU; inside a write transaction (on SQLite a lock for every process) a
    burst of sign-ins stalled report ingest. The row is read in a short read transaction, the hash checked
    with no connection held, and ``complete_sign_in`` re-checks the row in the write transaction. A name
    that matches no user, or a disabled user, gets ``pause_like_a_check`` instead of scrypt."""
    checks = lowprio.PASSWORD_CHECKS if checks is None else checks
    with db.read() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.password_hash, users.c.disabled_at)
                           .where(users.c.username == username)).first()
    if row is None or row.disabled_at is not None:
        pause_like_a_check(password, checks)
        return None
    if not checks.run(security.verify_password, password, row.password_hash):
        return None
    return PasswordMatch(int(row.id), str(row.password_hash))


def pause_like_a_check(password: str, checks: Optional[lowprio.LowPriorityPool] = None) -> None:
    """Take as long as checking ``password`` would, without spending the CPU on it when possible.

    For a sign-in that is refused whatever the password (no such user, user disabled, too many
    failures): the answer must come after the same delay as a wrong password's, or response times
    would tell which names exist. ``LowPriorityPool.stand_in`` sleeps for the duration of a recent real
    check (drawn from the last ones of this process, queue wait included: the same distribution an
    attacker sees for real checks); only when too few recent ones were measured does it hash a dummy."""
    checks = lowprio.PASSWORD_CHECKS if checks is None else checks
    checks.stand_in(functools.partial(security.verify_password, password, _DUMMY_HASH))


def complete_sign_in(conn: Connection, match: PasswordMatch, now: Optional[float] = None) -> Optional[Principal]:
    """In the write transaction: the principal, if the user is still enabled with the same password hash
    (disabled or given a new password since the check: refused), and its last sign-in time recorded."""
    row = conn.execute(sa.select(users).where(users.c.id == match.user_id)).mappings().first()
    if row is None or row["disabled_at"] is not None or row["password_hash"] != match.password_hash:
        return None
    conn.execute(users.update().where(users.c.id == row["id"])
                 .values(last_login_at=time.time() if now is None else now))
    units = conn.execute(sa.select(user_org_units.c.org_unit_id)
                         .where(user_org_units.c.user_id == row["id"])).scalars().all()
    return Principal(actor=f"user:{row['username']}", role=row["role"],
                     scope=Scope(frozenset(int(u) for u in units)) if units else Scope.everything(),
                     user_id=int(row["id"]))


def user_exists(conn: Connection, username: str) -> bool:
    return conn.execute(sa.select(users.c.id).where(users.c.username == username)).first() is not None


_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def find_user(conn: Connection, username: str) -> Optional[dict[str, Any]]:
    """The user row (id, username, role, created_at, disabled_at, last_login_at; no hash), or None."""
    row = conn.execute(sa.select(users.c.id, users.c.username, users.c.role, users.c.created_at,
                                 users.c.disabled_at, users.c.last_login_at)
                       .where(users.c.username == username)).mappings().first()
    return None if row is None else dict(row)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user by name, with ``org_unit_ids`` (empty: whole fleet); never the password hash."""
    rows = conn.execute(sa.select(users.c.id, users.c.username, users.c.role, users.c.created_at,
                                  users.c.disabled_at, users.c.last_login_at)
                        .order_by(users.c.username)).mappings().all()
    units: dict[int, list[int]] = {}
    for link in conn.execute(sa.select(user_org_units.c.user_id, user_org_units.c.org_unit_id)
                             .order_by(user_org_units.c.org_unit_id)):
        units.setdefault(int(link.user_id), []).append(int(link.org_unit_id))
    return [{**dict(row), "org_unit_ids": units.get(int(row["id"]), [])} for row in rows]


def other_enabled_admins(conn: Connection, user_id: int) -> int:
    """How many enabled admin users there are besides ``user_id``.

    On PostgreSQL the enabled admins' rows are locked until the transaction ends, so two concurrent
    disables cannot each count the other and leave no admin (SQLite's write transactions are serial)."""
    ids = conn.execute(sa.select(users.c.id).where(users.c.role == "admin", users.c.disabled_at.is_(None))
                       .with_for_update()).scalars().all()
    return sum(1 for found in ids if int(found) != user_id)


def set_user_disabled(conn: Connection, user_id: int, disabled: bool, now: Optional[float] = None) -> bool:
    """Disable (``disabled_at`` = now) or re-enable a user; whether anything changed.

    This alone does not end sessions or tokens: callers pair disabling with
    ``sessions.revoke_user_sessions`` and ``revoke_user_api_tokens``."""
    query = users.update().where(users.c.id == user_id)
    if disabled:
        query = query.where(users.c.disabled_at.is_(None)).values(disabled_at=time.time() if now is None else now)
    else:
        query = query.where(users.c.disabled_at.is_not(None)).values(disabled_at=None)
    return bool(conn.execute(query).rowcount)


def set_password(conn: Connection, user_id: int, password: str) -> None:
    """Store a new password (same rules as creation). The new hash ends every older dashboard session
    through its fingerprint; callers also revoke them so the session rows say so."""
    check_password(password)
    conn.execute(users.update().where(users.c.id == user_id)
                 .values(password_hash=security.hash_password(password)))


# -- API tokens --------------------------------------------------------------------------------

def create_api_token(conn: Connection, name: str, role: str, org_unit_ids: Iterable[int] = (),
                     expires_at: Optional[float] = None, user_id: Optional[int] = None,
                     now: Optional[float] = None) -> tuple[int, str]:
    """Store a new API token (hashed) and return (id, token); the token is shown once and never again."""
    _check_role(role)
    if not name or len(name) > 200:
        raise AccountError("an API token needs a name of 1-200 characters (who or what uses it)")
    token = security.new_token(security.API_TOKEN_PREFIX)
    token_id = int(conn.execute(api_tokens.insert().values(
        name=name, token_hash=security.token_hash(token), prefix=security.token_display_prefix(token),
        role=role, user_id=user_id, created_at=time.time() if now is None else now,
        expires_at=expires_at).returning(api_tokens.c.id)).scalar_one())
    for unit in sorted(set(org_unit_ids)):
        conn.execute(api_token_org_units.insert().values(token_id=token_id, org_unit_id=unit))
    return token_id, token


# last_used_at is refreshed at most this often, so reads by a busy script do not write on every call.
LAST_USED_RESOLUTION = 60.0


def authenticate_api_token(conn: Connection, token: str, now: Optional[float] = None) -> Optional[Principal]:
    """The principal for a valid, unexpired, unrevoked API token; None otherwise. Reads only."""
    if not token.startswith(security.API_TOKEN_PREFIX) or len(token) > 200:
        return None
    current = time.time() if now is None else now
    # Joined to its user (if any) by primary key: a token of a disabled user is refused, however the
    # user was disabled (`user disable` also revokes such tokens for good).
    row = conn.execute(sa.select(api_tokens, users.c.disabled_at.label("user_disabled_at"))
                       .outerjoin(users, users.c.id == api_tokens.c.user_id)
                       .where(api_tokens.c.token_hash == security.token_hash(token))).mappings().first()
    if row is None or row["revoked_at"] is not None or row["user_disabled_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= current:
        return None
    units = conn.execute(sa.select(api_token_org_units.c.org_unit_id)
                         .where(api_token_org_units.c.token_id == row["id"])).scalars().all()
    needs_touch = row["last_used_at"] is None or current - row["last_used_at"] > LAST_USED_RESOLUTION
    return Principal(actor=f"token:{row['name']}", role=row["role"],
                     scope=Scope(frozenset(int(u) for u in units)) if units else Scope.everything(),
                     token_id=int(row["id"]), user_id=row["user_id"], needs_touch=needs_touch)


def revoke_user_api_tokens(conn: Connection, user_id: int, now: Optional[float] = None) -> int:
    """Revoke every unrevoked API token tied to a user (``api_tokens.user_id``); how many."""
    return int(conn.execute(api_tokens.update()
                            .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                            .values(revoked_at=time.time() if now is None else now)).rowcount or 0)


def touch_api_token(conn: Connection, token_id: int, now: Optional[float] = None) -> None:
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id)
                 .values(last_used_at=time.time() if now is None else now))


def list_api_tokens(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.prefix, api_tokens.c.role,
                                  api_tokens.c.created_at, api_tokens.c.expires_at, api_tokens.c.revoked_at,
                                  api_tokens.c.last_used_at).order_by(api_tokens.c.id)).mappings().all()
    return [dict(row) for row in rows]
