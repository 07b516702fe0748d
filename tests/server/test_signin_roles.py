"""Sign-in and roles: the password check runs outside write transactions in a low-priority process, a
sign-in that fails whatever the password costs no scrypt yet looks like any failure, an unknown typed user
name is never stored as typed, and the audit log is for admins only on the API as on the dashboard."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
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


def _answer(collector: Collector, username: str, password: str) -> Any:
    page = collector.client.get("/login")
    answer = collector.client.post("/login", data={"username": username, "password": password,
                                                   "csrf_token": csrf_of(page.text), "next": "/"},
                                   follow_redirects=False)
    collector.client.cookies.clear()
    return answer


def _login(collector: Collector, username: str, password: str) -> int:
    return int(_answer(collector, username, password).status_code)


def _checks_on_this_thread(monkeypatch: pytest.MonkeyPatch, **options: Any) -> lowprio.LowPriorityPool:
    """A fresh pool of password checks that runs them on a thread of the test process, so a test can
    watch or replace ``security.verify_password`` (the real pool runs it in a child process)."""
    executor: Callable[[], Executor] = functools.partial(ThreadPoolExecutor, 1)
    pool = lowprio.LowPriorityPool(executor=executor, **options)
    monkeypatch.setattr(lowprio, "PASSWORD_CHECKS", pool)
    return pool


def _login_rows(collector: Collector) -> list[Any]:
    with collector.db.read() as conn:
        return list(conn.execute(sa.select(audit_log.c.actor, audit_log.c.outcome, audit_log.c.details)
                                 .where(audit_log.c.action == "user.login").order_by(audit_log.c.id)))


def test_password_is_checked_outside_any_write_transaction(collector: Collector,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _create_user(collector, monkeypatch, "amina")
    open_writes: dict[int, int] = {}  # thread -> write transactions it has open (other threads may write)
    seen: list[int] = []
    real_write = collector.db.write

    @contextlib.contextmanager
    def counting_write() -> Iterator[Any]:
        thread = threading.get_ident()
        open_writes[thread] = open_writes.get(thread, 0) + 1
        try:
            with real_write() as conn:
                yield conn
        finally:
            open_writes[thread] -= 1

    pool = _checks_on_this_thread(monkeypatch)
    real_check = pool._check

    def watched_check(function: Callable[..., Any], *args: object) -> Any:
        seen.append(open_writes.get(threading.get_ident(), 0))  # on the request thread that wants scrypt
        return real_check(function, *args)

    monkeypatch.setattr(pool, "_check", watched_check)
    monkeypatch.setattr(collector.db, "write", counting_write)
    for _ in range(lowprio.MIN_SAMPLES - 1):  # enough real checks that an unknown name gets a stand-in
        assert _login(collector, "amina", PASSWORD) == 303
    seen.clear()
    assert _login(collector, "amina", PASSWORD) == 303
    assert _login(collector, "amina", "wrong passphrase!!") == 401
    assert _login(collector, "nobody-here", PASSWORD) == 401
    assert seen == [0, 0], "scrypt ran while a write transaction was open (or ran for an unknown name)"
    assert [(r.actor, r.outcome) for r in _login_rows(collector)][-3:] == [
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

    _checks_on_this_thread(monkeypatch)
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


def test_password_checks_run_in_a_low_priority_process_with_a_bounded_queue() -> None:
    pool = lowprio.LowPriorityPool(max_waiting=2)
    try:
        assert pool.run(os.getpid) != os.getpid()
        assert pool.run(os.getpriority, os.PRIO_PROCESS, 0) == lowprio.NICE
        if hasattr(os, "SCHED_BATCH"):
            assert pool.run(os.sched_getscheduler, 0) == os.SCHED_BATCH
        assert os.getpriority(os.PRIO_PROCESS, 0) != lowprio.NICE, "only the child was lowered"
        waiting = [threading.Thread(target=pool.run, args=(time.sleep, 1.5)) for _ in range(2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while pool.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(lowprio.Busy):
            pool.run(os.getpid)
        with pytest.raises(lowprio.Busy):
            pool.stand_in(functools.partial(pow, 2, 3))
        for thread in waiting:
            thread.join()
        assert pool.run(pow, 6, 2) == 36 and pool.checks_run == 6
    finally:
        pool.shutdown()


def test_the_password_check_process_ends_with_its_parent(tmp_path: Any) -> None:
    script = tmp_path / "parent.py"
    script.write_text("import os\nfrom server import lowprio\nif __name__ == '__main__':\n"
                      "    print(lowprio.LowPriorityPool().run(os.getpid), flush=True)\n"
                      "    os._exit(0)  # killed, as it were: no shutdown of the pool\n")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": repo}, check=True)
    child = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the password-check process outlived its parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stand_in_sleeps_like_a_recent_real_check_and_checks_for_real_when_it_knows_none() -> None:
    now = [1000.0]
    slept: list[float] = []
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        now[0] += 0.25 + 0.01 * len(calls)  # each real check "takes" a little longer

    pool = lowprio.LowPriorityPool(clock=lambda: now[0], sleep=slept.append, rng=random.Random(1),
                                   executor=functools.partial(ThreadPoolExecutor, 1))
    for _ in range(lowprio.MIN_SAMPLES):  # nothing measured yet: real checks
        pool.stand_in(check)
    assert len(calls) == lowprio.MIN_SAMPLES and slept == [] and pool.stand_ins == 0
    measured = pool.recent_durations()
    assert len(measured) == lowprio.MIN_SAMPLES and all(0.25 < d < 0.4 for d in measured)
    for _ in range(50):
        pool.stand_in(check)
    assert len(calls) == lowprio.MIN_SAMPLES, "a stand-in ran a check although it had samples"
    assert pool.stand_ins == 50 and set(slept) <= set(measured) and len(set(slept)) > 1
    now[0] += lowprio.SAMPLE_MAX_AGE + 1  # after a quiet spell the samples no longer say how long
    pool.stand_in(check)
    assert len(calls) == lowprio.MIN_SAMPLES + 1 and pool.stand_ins == 50


def _error_page(answer: Any, *typed: str) -> tuple[int, str]:
    """Status and page of a sign-in answer, without what differs by request (tokens, the typed name)."""
    text = re.sub(r'value="[A-Za-z0-9_-]{20,}={0,2}"', 'value="TOKEN"', answer.text)
    for name in typed:
        text = text.replace(f'value="{name}"', 'value="NAME"')
    return int(answer.status_code), text


def test_unknown_user_wrong_password_and_limited_user_get_the_same_answer(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    _create_user(collector, monkeypatch, "amina")
    slept: list[float] = []
    pool = _checks_on_this_thread(monkeypatch, sleep=slept.append)
    wrong = [_answer(collector, "amina", "wrong passphrase!!") for _ in range(5)]  # the per-user limit
    unknown = _answer(collector, "nobody-here", "wrong passphrase!!")
    limited = _answer(collector, "amina", PASSWORD)  # the right password, over the limit
    assert pool.checks_run == 5, "the limited attempt and the unknown name ran scrypt"
    assert pool.stand_ins == 2 and len(slept) == 2 and all(d > 0 for d in slept)
    expected = _error_page(wrong[0], "amina")
    assert expected[0] == 401 and "not recognised" in expected[1]
    assert [_error_page(a, "amina") for a in wrong] == [expected] * 5
    assert _error_page(unknown, "nobody-here") == expected
    assert _error_page(limited, "amina") == expected
    assert "retry-after" not in limited.headers and "tp_session" not in collector.client.cookies
    rows = _login_rows(collector)
    assert [(r.actor, r.outcome) for r in rows[-2:]] == [("user:?", "failed"), ("user:amina", "failed")]
    assert json.loads(rows[-1].details)["limited"] == "user name"
    assert "limited" not in json.loads(rows[-3].details)
    registry = collector.client.app.state.ctx.metrics.registry  # type: ignore[attr-defined]
    assert [registry.get_sample_value("teleposture_signins_total", {"outcome": outcome})
            for outcome in ("ok", "failed", "limited", "busy")] == [0, 6, 1, 0]


def test_a_burst_of_failed_sign_ins_runs_scrypt_no_more_than_the_limits(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    _create_user(collector, monkeypatch, "amina")
    pool = _checks_on_this_thread(monkeypatch, sleep=lambda seconds: None)
    began = time.monotonic()
    for _ in range(30):  # one user name: 5 failures a minute are checked, the rest refused unchecked
        assert _login(collector, "amina", "wrong passphrase!!") == 401
    # PostgreSQL's shared buckets refill continuously (one failure per 12 s for a user name, per 3 s for
    # an address), SQLite's in-process windows after a minute: a slow run may let a few more through.
    user_refill = int((time.monotonic() - began) / 12)
    assert 5 <= pool.checks_run <= 5 + user_refill and pool.stand_ins == 30 - pool.checks_run
    checked = pool.checks_run
    for number in range(40):  # unknown names from one address: never scrypt (samples exist), then refused
        assert _login(collector, f"guess-{number}", "wrong passphrase!!") == 401
    assert pool.checks_run == checked and pool.stand_ins == 70 - checked
    address_refill = int((time.monotonic() - began) / 3)
    rows = [json.loads(r.details) for r in _login_rows(collector)]
    assert len(rows) == 70, "every attempt, refused or not, is in the audit log"
    assert sum(r.get("limited") == "user name" for r in rows) == 30 - checked
    # the address saw `checked` failures of amina and then unknown names up to its limit of 20
    address_limited = sum(r.get("limited") == "address" for r in rows)
    assert 40 - (20 - checked) - address_refill <= address_limited <= 40 - (20 - checked)
