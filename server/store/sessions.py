"""Dashboard sign-in sessions kept on the server (table web_sessions).

The browser's cookie carries a random secret; the table keeps its SHA-256, the user, the times and
whether the session was revoked. A request costs one unique-index lookup joined to the user row (which
the dashboard reads on every request anyway); ``last_seen_at`` is written at most once a minute.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server import security
from server.store.schema import users, web_sessions

# last_seen_at is refreshed at most this often, so reading pages does not write on every request.
LAST_SEEN_RESOLUTION = 60.0


@dataclass(frozen=True)
class LiveSession:
    """A valid session and its (enabled) user, as one request sees them."""

    id: int
    user_id: int
    username: str
    role: str
    needs_touch: bool


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()


def create_session(conn: Connection, user_id: int, secret: str, *, lifetime: float,
                   remote_addr: Optional[str] = None, user_agent: Optional[str] = None,
                   now: Optional[float] = None) -> int:
    """Store a new session for ``user_id`` whose cookie carries ``secret`` (kept hashed); its row id."""
    current = time.time() if now is None else now
    stored_hash = conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).scalar_one()
    return int(conn.execute(web_sessions.insert().values(
        token_hash=security.token_hash(secret), user_id=user_id, created_at=current,
        expires_at=current + lifetime, last_seen_at=current, password_fingerprint=password_fingerprint(stored_hash),
        remote_addr=(remote_addr or None) and remote_addr[:64],
        user_agent=(user_agent or None) and user_agent[:200]).returning(web_sessions.c.id)).scalar_one())


def find_session(conn: Connection, secret: str, now: Optional[float] = None) -> Optional[LiveSession]:
    """The session whose cookie carries ``secret``, if it is unrevoked, unexpired, its user enabled and
    the user's password unchanged since sign-in; None otherwise. One indexed read, no write."""
    current = time.time() if now is None else now
    row = conn.execute(
        sa.select(web_sessions.c.id, web_sessions.c.user_id, web_sessions.c.expires_at,
                  web_sessions.c.last_seen_at, web_sessions.c.revoked_at, web_sessions.c.password_fingerprint,
                  users.c.username, users.c.role, users.c.disabled_at, users.c.password_hash)
        .join(users, users.c.id == web_sessions.c.user_id)
        .where(web_sessions.c.token_hash == security.token_hash(secret))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= current or row.disabled_at is not None:
        return None
    if row.password_fingerprint != password_fingerprint(row.password_hash):
        return None
    return LiveSession(id=int(row.id), user_id=int(row.user_id), username=str(row.username), role=str(row.role),
                       needs_touch=current - row.last_seen_at >= LAST_SEEN_RESOLUTION)


def touch_session(conn: Connection, session_id: int, now: Optional[float] = None) -> None:
    conn.execute(web_sessions.update().where(web_sessions.c.id == session_id)
                 .values(last_seen_at=time.time() if now is None else now))


def revoke_session(conn: Connection, session_id: int, *, user_id: Optional[int] = None,
                   now: Optional[float] = None) -> bool:
    """Revoke one session (only if it belongs to ``user_id`` when given); whether it was active."""
    query = web_sessions.update().where(web_sessions.c.id == session_id, web_sessions.c.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(web_sessions.c.user_id == user_id)
    return bool(conn.execute(query.values(revoked_at=time.time() if now is None else now)).rowcount)


def revoke_session_by_secret(conn: Connection, secret: str, now: Optional[float] = None) -> bool:
    return bool(conn.execute(web_sessions.update()
                             .where(web_sessions.c.token_hash == security.token_hash(secret),
                                    web_sessions.c.revoked_at.is_(None))
                             .values(revoked_at=time.time() if now is None else now)).rowcount)


def revoke_user_sessions(conn: Connection, user_id: int, *, keep: Optional[int] = None,
                         now: Optional[float] = None) -> int:
    """Revoke every unexpired session of a user (but ``keep``, the caller's own, when given); how many."""
    current = time.time() if now is None else now
    query = web_sessions.update().where(web_sessions.c.user_id == user_id, web_sessions.c.expires_at > current,
                                        web_sessions.c.revoked_at.is_(None))
    if keep is not None:
        query = query.where(web_sessions.c.id != keep)
    return int(conn.execute(query.values(revoked_at=current)).rowcount or 0)


def list_user_sessions(conn: Connection, user_id: int, now: Optional[float] = None) -> list[dict[str, Any]]:
    """The user's unrevoked, unexpired sessions, most recently used first."""
    current = time.time() if now is None else now
    stored_hash = conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).scalar_one_or_none()
    if stored_hash is None:
        return []
    rows = conn.execute(
        sa.select(web_sessions.c.id, web_sessions.c.created_at, web_sessions.c.last_seen_at,
                  web_sessions.c.expires_at, web_sessions.c.remote_addr, web_sessions.c.user_agent)
        .where(web_sessions.c.user_id == user_id, web_sessions.c.expires_at > current,
               web_sessions.c.revoked_at.is_(None),
               # Sessions from before the last password change are over even though not revoked.
               web_sessions.c.password_fingerprint == password_fingerprint(stored_hash))
        .order_by(web_sessions.c.last_seen_at.desc(), web_sessions.c.id.desc())).mappings().all()
    return [dict(row) for row in rows]
