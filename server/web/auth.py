"""Dashboard sign-in: session cookies, CSRF tokens and login rate limits.

The cookie carries (user id, random session secret, issue time) and an HMAC made with a key derived
from the server signing key, so a forged or tampered cookie is refused before any database read. The
secret names a row of web_sessions (server.store.sessions, kept hashed), read together with the user
row on every request: sign-out, disabling the user or a password change ends the session for every
copy of the cookie, and a role or org-unit change takes effect at once. The CSRF token of a form is an
HMAC of the session secret: a page from another site can neither read it nor compute it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

from fastapi import HTTPException, Request
from starlette.responses import Response

from server.context import AppContext
from server.ratelimit import SharedFailureLimiter
from server.store.accounts import Principal

SESSION_COOKIE = "tp_session"
LOGIN_COOKIE = "tp_login"  # pre-sign-in nonce for the login form's CSRF token
LANG_COOKIE = "tp_lang"
SESSION_LIFETIME = 12 * 3600.0
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# Failed sign-ins allowed per minute, per client address and per user name.
LOGIN_FAILURES_PER_IP_PER_MINUTE = 20
LOGIN_FAILURES_PER_USER_PER_MINUTE = 5


@dataclass(frozen=True)
class Session:
    user_id: int
    session_id: str
    issued_at: float


@dataclass(frozen=True)
class WebUser:
    """The signed-in user: name, role and org-unit scope (as a store Principal), the session from the
    cookie and the id of its web_sessions row."""

    username: str
    principal: Principal
    session: Session
    session_row: int

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def _key(ctx: AppContext, purpose: bytes) -> bytes:
    # Derived from the server signing key: every process of one collector agrees, and replacing the
    # server key (which re-enrols nothing but forces new sessions) signs everybody out.
    raw = ctx.server_key.private_bytes_raw()
    return hmac.new(raw, b"teleposture dashboard v1 " + purpose, hashlib.sha256).digest()


def name_fingerprint(ctx: AppContext, typed_name: str) -> str:
    """A keyed digest of a sign-in name that matches no user: equal texts give equal fingerprints, and
    nobody without the server key can test guesses against it (a plain hash of a short password could)."""
    return hmac.new(_key(ctx, b"login name"), typed_name.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(ctx: AppContext, session: Session) -> str:
    body = _b64(json.dumps({"u": session.user_id, "s": session.session_id, "i": session.issued_at},
                           separators=(",", ":")).encode())
    mac = _b64(hmac.new(_key(ctx, b"session"), body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def decode_session(ctx: AppContext, value: str, now: Optional[float] = None) -> Optional[Session]:
    """The session of a cookie value, or None when it is forged, malformed or expired."""
    if not value or len(value) > 512 or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    expected = _b64(hmac.new(_key(ctx, b"session"), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data = json.loads(_unb64(body))
        session = Session(int(data["u"]), str(data["s"]), float(data["i"]))
    except (ValueError, KeyError, TypeError):
        return None
    current = time.time() if now is None else now
    if not session.issued_at <= current + 60 or current - session.issued_at > SESSION_LIFETIME:
        return None
    return session


def new_session(user_id: int) -> Session:
    # 256 random bits: the stored SHA-256 of it cannot be turned back into a cookie.
    return Session(user_id, secrets.token_urlsafe(32), time.time())


def csrf_token(ctx: AppContext, binding: str) -> str:
    """The token forms carry: bound to the session id (or to the login nonce before sign-in)."""
    return _b64(hmac.new(_key(ctx, b"csrf"), binding.encode(), hashlib.sha256).digest())


def csrf_valid(ctx: AppContext, binding: Optional[str], presented: Any) -> bool:
    if not binding or not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(presented, csrf_token(ctx, binding))


def https(request: Request, ctx: AppContext) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a TLS-terminating proxy)."""
    return request.url.scheme == "https" or ctx.settings.tls or ctx.settings.behind_tls_proxy


def set_cookie(response: Response, request: Request, ctx: AppContext, name: str, value: str,
               max_age: Optional[int]) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=https(request, ctx))


class FailureLimiter:
    """Counts failed sign-ins per key over a sliding minute; a key over the limit must wait.

    Only failures count, so a team signing in from one office address is never locked out by its
    own successful sign-ins, while guessing passwords is slowed per address and per user name.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            times = self._failures.get(key)
            if not times:
                return 0.0
            while times and now - times[0] >= 60.0:
                times.popleft()
            if len(times) < self.per_minute:
                return 0.0
            return 60.0 - (now - times[0])

    def failed(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                # Forget keys whose failures are all older than a minute (they carry no information).
                for stale in [k for k, v in self._failures.items() if not v or now - v[-1] >= 60.0]:
                    del self._failures[stale]
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while len(times) > self.per_minute:
                times.popleft()


LoginLimiter = Union[FailureLimiter, SharedFailureLimiter]


def login_limiters(request: Request) -> tuple[LoginLimiter, LoginLimiter]:
    state = request.app.state
    if not hasattr(state, "web_login_limiters"):
        buckets = state.ctx.shared_buckets
        if buckets is not None:  # PostgreSQL: counted in the database, every node sees every failure
            state.web_login_limiters = (
                SharedFailureLimiter(buckets, "login-ip", LOGIN_FAILURES_PER_IP_PER_MINUTE),
                SharedFailureLimiter(buckets, "login-user", LOGIN_FAILURES_PER_USER_PER_MINUTE))
        else:
            state.web_login_limiters = (FailureLimiter(LOGIN_FAILURES_PER_IP_PER_MINUTE),
                                        FailureLimiter(LOGIN_FAILURES_PER_USER_PER_MINUTE))
    limiters: tuple[LoginLimiter, LoginLimiter] = state.web_login_limiters
    return limiters


def login_limited(request: Request, client: str, username: str) -> Optional[str]:
    """Which limit refuses another sign-in attempt now: "address", "user name", or None (go ahead)."""
    by_ip, by_user = login_limiters(request)
    if by_ip.wait(client):
        return "address"
    if by_user.wait(username.lower()[:200]):
        return "user name"
    return None


def login_failed(request: Request, client: str, username: str) -> None:
    by_ip, by_user = login_limiters(request)
    by_ip.failed(client)
    by_user.failed(username.lower()[:200])


class Redirect(HTTPException):
    """Raised from a dependency to send the browser elsewhere (e.g. to the sign-in page)."""

    def __init__(self, location: str) -> None:
        super().__init__(status_code=303, headers={"Location": location}, detail="see other")
