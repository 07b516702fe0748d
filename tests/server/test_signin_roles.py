"""Sign-in and roles: the password check runs outside write transactions, an unknown typed user name is
never stored as typed, and the audit log is for admins only on the API as on the dashboard."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from server import lowprio, security
from server.store.schema import audit_log
from tests.server.conftest import Collector, snapshot
from tests.web.conftest import csrf_of

PASSWORD = "a long enough passphrase"


def _create_user(collector: Collector, monkeypatch: pytest.MonkeyPatch, name: str, role: str = "admin") -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _out, err = collector.cli("user", "create", "--username", name, "--role", role, "--password-stdin")
    assert code == 0, err


def _login(collector: Collector, username: str, password: str) -> int:
    page = collector.client.get("/login")
    answer = collector.client.post("/login", data={"username": username, "password": password,
                                                   "csrf_token": csrf_of(page.text), "next": "/"},
                                   follow_redirects=False)
    collector.client.cookies.clear()
    return answer.status_code


def _login_rows(collector: Collector) -> list[Any]:
    with collector.db.read() as conn:
        return list(conn.execute(sa.select(audit_log.c.actor, audit_log.c.outcome, audit_log.c.details)
                                 .where(audit_log.c.action == "user.login").order_by(audit_log.c.id)))


def test_password_is_checked_outside_any_write_transaction(collector: Collector,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _create_user(collector, monkeypatch, "amina")
    open_writes = [0]
    seen: list[int] = []
    real_write, real_verify = collector.db.write, security.verify_password

    @contextlib.contextmanager
    def counting_write() -> Iterator[Any]:
        open_writes[0] += 1
        try:
            with real_write() as conn:
                yield conn
        finally:
            open_writes[0] -= 1

    def watched_verify(password: str, encoded: str) -> bool:
        seen.append(open_writes[0])
        return real_verify(password, encoded)

    monkeypatch.setattr(collector.db, "write", counting_write)
    monkeypatch.setattr(security, "verify_password", watched_verify)
    assert _login(collector, "amina", PASSWORD) == 303
    assert _login(collector, "amina", "wrong passphrase!!") == 401
    assert _login(collector, "nobody-here", PASSWORD) == 401
    assert seen == [0, 0, 0], "scrypt ran while a write transaction was open"
    assert [(r.actor, r.outcome) for r in _login_rows(collector)] == [
        ("user:amina", "ok"), ("user:amina", "failed"), ("user:?", "failed")]


def test_sign_in_refused_when_the_user_is_disabled_between_check_and_write(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    _create_user(collector, monkeypatch, "leaver")
    _create_user(collector, monkeypatch, "stays")
    real_verify = security.verify_password

    def verify_then_disable(password: str, encoded: str) -> bool:
        ok = real_verify(password, encoded)
        code, _out, err = collector.cli("user", "disable", "leaver")
        assert code == 0, err
        return ok

    monkeypatch.setattr(security, "verify_password", verify_then_disable)
    assert _login(collector, "leaver", PASSWORD) == 401


def test_unknown_user_name_is_kept_only_as_a_fingerprint(collector: Collector) -> None:
    typed = "Tr0ub4dor&3-my-password"
    assert _login(collector, typed, "whatever it is!") == 401
    assert _login(collector, typed, "another attempt!") == 401
    assert _login(collector, "someone-else", "whatever it is!") == 401
    everything = repr(snapshot(collector.db))
    assert typed not in everything and typed.lower() not in everything
    rows = _login_rows(collector)
    assert [r.actor for r in rows] == ["user:?"] * 3
    prints = [json.loads(r.details)["name_fingerprint"] for r in rows]
    assert prints[0] == prints[1] != prints[2] and len(prints[0]) == 16
    # a known user's failed attempt names the user (that is no secret, and the team needs it)
    assert _login(collector, "admin", "not the password") == 401
    assert _login_rows(collector)[-1].actor == "user:admin"


def test_viewer_token_cannot_read_the_audit_log(collector: Collector) -> None:
    viewer = collector.api_token(role="viewer", name="reader")
    scoped_admin = collector.api_token(role="admin", org_units=("Finance",), name="finance-admin")
    refused = collector.admin("GET", "/audit", token=viewer)
    assert refused.status_code == 403 and "admin role" in refused.json()["detail"]
    assert collector.admin("GET", "/audit?action=user.login", token=viewer).status_code == 403
    answer = collector.admin("GET", "/audit")
    assert answer.status_code == 200
    denied = [i for i in answer.json()["items"] if i["outcome"] == "denied" and i["actor"] == "token:reader"]
    assert len(denied) == 2, "each refusal is audited"
    assert collector.admin("GET", "/audit", token=scoped_admin).status_code == 200


def test_password_checks_run_on_low_priority_threads_with_a_bounded_queue() -> None:
    pool = lowprio.LowPriorityPool(threads=1, max_waiting=2)
    nice = pool.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert nice == lowprio.NICE and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != lowprio.NICE
    release = threading.Event()
    waiting = [threading.Thread(target=pool.run, args=(release.wait,)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 10
    while pool.pending < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(lowprio.Busy):
        pool.run(lambda: None)
    release.set()
    for thread in waiting:
        thread.join()
    assert pool.run(lambda: 42) == 42
