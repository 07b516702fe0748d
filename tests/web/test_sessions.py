"""Server-side dashboard sessions on SQLite and PostgreSQL (in-process app): sign-out, a password change
and disabling end a session for every copy of its cookie, the user's session list, the per-request cost
and pruning."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from server import security
from server.store import accounts, maintenance, sessions
from server.store.schema import audit_log, users, web_sessions
from tests.server.conftest import (  # noqa: F401 (fixtures used by name)
    Collector,
    _cheap_password_hashing,
    in_process,
    initialised,
    templates,
)
from tests.web.conftest import csrf_of

PASSWORD = "session-test-password-1"


@pytest.fixture
def collector(initialised: Any) -> Iterator[Collector]:  # noqa: F811 (the imported fixture)
    with in_process(initialised) as running:
        with running.db.write() as conn:
            for name in ("alice", "bob"):
                accounts.create_user(conn, name, PASSWORD, "admin")
        yield running


def browser(collector: Collector, cookie: str | None = None) -> TestClient:
    """Another browser on the same collector (its own cookie jar), optionally holding a copied cookie."""
    client = TestClient(collector.client.app, follow_redirects=False)
    if cookie is not None:
        client.cookies.set("tp_session", cookie)
    return client


def sign_in(collector: Collector, username: str = "alice") -> TestClient:
    client = browser(collector)
    page = client.get("/login")
    answer = client.post("/login", data={"username": username, "password": PASSWORD,
                                         "csrf_token": csrf_of(page.text), "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    return client


def refused(client: TestClient, path: str = "/devices") -> bool:
    """Whether the client is treated as signed out, exactly as without a cookie: pages redirect to
    sign-in (keeping the target), htmx requests get HX-Redirect."""
    page = client.get(path)
    htmx = client.get(path, headers={"HX-Request": "true"})
    if page.status_code == 200 and htmx.status_code == 200:
        return False
    assert page.status_code == 303, page.text
    assert page.headers["location"] == "/login?" + urllib.parse.urlencode({"next": path})
    assert htmx.status_code == 204 and htmx.headers["hx-redirect"].startswith("/login?")
    return True


def session_rows(collector: Collector, username: str) -> list[dict[str, Any]]:
    with collector.db.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(web_sessions).join(users, users.c.id == web_sessions.c.user_id)
            .where(users.c.username == username).order_by(web_sessions.c.id)).mappings()]


def test_copied_cookie_is_refused_after_sign_out(collector: Collector) -> None:
    first = sign_in(collector)
    copy = browser(collector, first.cookies["tp_session"])
    second = sign_in(collector)  # the same user in another browser
    assert not refused(copy) and not refused(second)
    csrf = csrf_of(first.get("/").text)

    answer = first.post("/logout", data={"csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert refused(first) and refused(copy)
    # A form of the ended session, replayed with its copied cookie and still-valid CSRF token, does nothing.
    assert copy.post("/sessions/revoke-others", data={"csrf_token": csrf}).status_code == 303
    assert not refused(second), "signing out one browser must not end the user's other sessions"

    rows = session_rows(collector, "alice")
    assert [r["revoked_at"] is not None for r in rows] == [True, False]
    body = copy.cookies["tp_session"].split(".")[0]
    secret = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"]
    assert rows[0]["token_hash"] == security.token_hash(secret), "the cookie's secret is stored hashed"
    assert secret not in repr(rows), "and never in clear"
    with collector.db.read() as conn:
        logout = conn.execute(sa.select(audit_log.c.actor, audit_log.c.details)
                              .where(audit_log.c.action == "user.logout")).one()
    assert logout.actor == "user:alice" and f'"session": {rows[0]["id"]}' in logout.details


def test_password_change_and_disabling_end_sessions(collector: Collector) -> None:
    alice, bob = sign_in(collector, "alice"), sign_in(collector, "bob")
    with collector.db.write() as conn:  # a password changed by any path, even straight in the database
        conn.execute(users.update().where(users.c.username == "alice")
                     .values(password_hash=security.hash_password("a-brand-new-password")))
    assert refused(alice) and not refused(bob)
    with collector.db.write() as conn:
        conn.execute(users.update().where(users.c.username == "bob").values(disabled_at=time.time()))
    assert refused(bob)
    # The new password signs in again, with a new session.
    page = alice.get("/login")
    assert alice.post("/login", data={"username": "alice", "password": "a-brand-new-password",
                                      "csrf_token": csrf_of(page.text)}).status_code == 303
    assert not refused(alice)


def test_sessions_page_lists_and_ends_sessions(collector: Collector) -> None:
    here, laptop, phone = sign_in(collector), sign_in(collector), sign_in(collector)
    bob = sign_in(collector, "bob")
    rows = session_rows(collector, "alice")
    html = here.get("/sessions").text
    assert len(re.findall(r'action="/sessions/\d+/revoke"', html)) == 3 and "This session" in html

    csrf = csrf_of(html)
    bob_row = session_rows(collector, "bob")[0]["id"]
    assert here.post(f"/sessions/{bob_row}/revoke", data={"csrf_token": csrf}).status_code == 404
    assert not refused(bob), "a user cannot end another user's session"
    answer = here.post(f"/sessions/{rows[1]['id']}/revoke", data={"csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/sessions?revoked=1"
    assert refused(laptop) and not refused(phone) and not refused(here)

    answer = here.post("/sessions/revoke-others", data={"csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/sessions?revoked=1"
    assert refused(phone) and not refused(here) and not refused(bob)
    assert "Sessions signed out: 1." in here.get("/sessions?revoked=1").text

    answer = here.post(f"/sessions/{rows[0]['id']}/revoke", data={"csrf_token": csrf})  # its own: signed out
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert refused(here)


def test_session_forms_need_the_csrf_token(collector: Collector) -> None:
    here, other = sign_in(collector), sign_in(collector)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf_of(other.get("/").text)}):
        assert here.post("/sessions/revoke-others", data=data).status_code == 403
    assert not refused(other)


def test_a_request_reads_its_session_once_and_writes_at_most_once_a_minute(collector: Collector) -> None:
    client = sign_in(collector)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "web_sessions" in statement:
            statements.append(statement.split()[0].upper())

    engines = {collector.db.read_engine, collector.db.write_engine}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            assert client.get("/devices").status_code == 200
        assert statements == ["SELECT"] * 5, "one session read per request and no write within the minute"
        statements.clear()
        with collector.db.write() as conn:  # a minute later
            conn.execute(web_sessions.update().values(last_seen_at=time.time() - 61))
        statements.clear()
        client.get("/devices")
        client.get("/devices")
        assert statements == ["SELECT", "UPDATE", "SELECT"]
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", seen)
    assert time.time() - session_rows(collector, "alice")[0]["last_seen_at"] < 30


def test_expired_sessions_are_refused_and_pruned(collector: Collector) -> None:
    now = time.time()
    with collector.db.write() as conn:
        alice = conn.execute(sa.select(users.c.id).where(users.c.username == "alice")).scalar_one()
        sessions.create_session(conn, alice, "old-secret", lifetime=3600, now=now - 7200)
        revoked = sessions.create_session(conn, alice, "revoked-secret", lifetime=3600, now=now - 60)
        live = sessions.create_session(conn, alice, "live-secret", lifetime=3600, now=now - 60)
        assert sessions.revoke_session(conn, revoked)
        assert not sessions.revoke_session(conn, revoked), "already revoked"
    with collector.db.read() as conn:
        assert sessions.find_session(conn, "old-secret", now) is None
        assert sessions.find_session(conn, "revoked-secret", now) is None
        found = sessions.find_session(conn, "live-secret", now)
        assert found is not None and found.id == live and found.username == "alice" and found.needs_touch
        assert sessions.find_session(conn, "live-secret", now - 30) is not None
        assert not sessions.find_session(conn, "live-secret", now - 30).needs_touch  # type: ignore[union-attr]
        assert sessions.find_session(conn, "live-secret", now + 3600) is None
        assert [s["id"] for s in sessions.list_user_sessions(conn, alice, now)] == [live]
    with collector.db.write() as conn:
        assert maintenance.prune_web_sessions(conn, now=now) == 1
        assert maintenance.prune_web_sessions(conn, now=now) == 0
        assert maintenance.prune_web_sessions(conn, now=now + 3600, batch=1) == 1
    assert [r["id"] for r in session_rows(collector, "alice")] == [live]
    # Signing in deletes expired rows too (sessions are only added there, so the table stays bounded).
    with collector.db.write() as conn:
        conn.execute(web_sessions.update().values(expires_at=now - 1))
    sign_in(collector)
    assert [r["id"] for r in session_rows(collector, "alice")] == [live + 1]
