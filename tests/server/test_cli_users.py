"""`teleposture-server user list | disable | enable | set-password` on SQLite and PostgreSQL: what each
does to sign-in, to copied dashboard session cookies and to the user's API tokens, the last-admin guard
and the audit log."""

from __future__ import annotations

import io
import json
import time
from typing import Any, Optional

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from server import cli
from server.store import accounts
from server.store.schema import api_tokens, audit_log, users
from tests.server.conftest import Collector
from tests.web.conftest import csrf_of
from tests.web.test_sessions import browser, refused

PASSWORD = "cli-users-password-1"


def add_user(collector: Collector, username: str, role: str = "viewer", *org_units: str,
             password: str = PASSWORD, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    args = ["user", "create", "--username", username, "--role", role, "--password-stdin"]
    for unit in org_units:
        args += ["--org-unit", unit]
    code, _out, err = collector.cli(*args)
    assert code == 0, err


def try_sign_in(collector: Collector, username: str, password: str = PASSWORD) -> Optional[TestClient]:
    """A browser signed in through the form, or None when the sign-in is refused."""
    client = browser(collector)
    page = client.get("/login")
    answer = client.post("/login", data={"username": username, "password": password,
                                         "csrf_token": csrf_of(page.text), "next": "/"})
    if answer.status_code == 303:
        assert answer.headers["location"] == "/"
        return client
    assert answer.status_code == 401, answer.text
    return None


def user_token(collector: Collector, username: str, role: str = "admin") -> str:
    """An API token tied to the user (as `init` ties the first admin's token to that admin)."""
    with collector.db.write() as conn:
        user_id = conn.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
        return accounts.create_api_token(conn, f"{username}-token", role, user_id=user_id)[1]


def token_works(collector: Collector, token: str) -> bool:
    status = collector.admin("GET", "/devices", token=token).status_code
    assert status in (200, 401), status
    return status == 200


def audit_rows(collector: Collector, action: str) -> list[dict[str, Any]]:
    with collector.db.read() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.action == action)
                            .order_by(audit_log.c.id)).mappings().all()
    return [{**row, "details": json.loads(row["details"])} for row in rows]


def disabled_at(collector: Collector, username: str) -> Optional[float]:
    with collector.db.read() as conn:
        return conn.execute(sa.select(users.c.disabled_at).where(users.c.username == username)).scalar_one()


def test_list_shows_users_without_secrets(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(collector, "amina", "viewer", "HR", "Finance", monkeypatch=monkeypatch)
    add_user(collector, "omar", "admin", monkeypatch=monkeypatch)
    assert try_sign_in(collector, "amina") is not None
    assert collector.cli("user", "disable", "omar")[0] == 0

    code, out, err = collector.cli("user", "list", "--json")
    assert code == 0, err
    listed = {item["username"]: item for item in json.loads(out)}
    assert sorted(listed) == ["admin", "amina", "omar"]
    amina, omar, admin = listed["amina"], listed["omar"], listed["admin"]
    assert (amina["role"], sorted(amina["org_units"]), amina["disabled"]) == ("viewer", ["Finance", "HR"], False)
    assert amina["last_login_at"] is not None and amina["disabled_at"] is None
    assert omar["disabled"] and omar["disabled_at"].endswith("Z") and omar["last_login_at"] is None
    assert admin["role"] == "admin" and admin["org_units"] == [] and not admin["disabled"]
    assert set(amina) == {"username", "role", "org_units", "created_at", "disabled_at", "disabled",
                          "last_login_at"}
    assert "scrypt$" not in out and PASSWORD not in out

    code, out, err = collector.cli("user", "list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "enabled" in lines["amina"] and "Finance, HR" in lines["amina"]
    assert "disabled" in lines["omar"] and "whole fleet" in lines["omar"]
    assert "scrypt$" not in out


def test_disable_ends_sessions_tokens_and_sign_in(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(collector, "leaver", "admin", monkeypatch=monkeypatch)
    add_user(collector, "stayer", "viewer", monkeypatch=monkeypatch)
    leaver, stayer = try_sign_in(collector, "leaver"), try_sign_in(collector, "stayer")
    assert leaver is not None and stayer is not None
    copy = browser(collector, leaver.cookies["tp_session"])  # a copied cookie, e.g. a stolen one
    token = user_token(collector, "leaver")
    assert not refused(copy) and token_works(collector, token)

    code, out, err = collector.cli("user", "disable", "leaver")
    assert code == 0, err
    assert "leaver disabled: 1 dashboard session(s) ended, 1 API token(s) revoked" in out
    assert disabled_at(collector, "leaver") is not None
    assert refused(leaver) and refused(copy)
    assert not token_works(collector, token)
    assert try_sign_in(collector, "leaver") is None
    assert not refused(stayer) and token_works(collector, collector.admin_token), "other users go on"

    # Idempotent: a second disable says so and changes nothing.
    code, out, err = collector.cli("user", "disable", "leaver")
    assert code == 0 and "already disabled" in out and "0 dashboard session(s)" in out, err
    entries = audit_rows(collector, "user.disable")
    assert [(e["actor"], e["target"], e["outcome"]) for e in entries] == [("cli", "leaver", "ok")] * 2
    assert entries[0]["details"] == {"already_disabled": False, "sessions_revoked": 1, "api_tokens_revoked": 1}
    assert entries[1]["details"]["already_disabled"] is True

    # Enabling lets the user sign in again; the old cookie and the revoked token stay refused.
    code, out, err = collector.cli("user", "enable", "leaver")
    assert code == 0 and "leaver enabled" in out, err
    assert disabled_at(collector, "leaver") is None
    assert refused(copy) and not token_works(collector, token)
    again = try_sign_in(collector, "leaver")
    assert again is not None and not refused(again)
    code, out, err = collector.cli("user", "enable", "leaver")
    assert code == 0 and "already enabled" in out, err
    assert [e["details"] for e in audit_rows(collector, "user.enable")] == [
        {"already_enabled": False}, {"already_enabled": True}]


def test_a_token_of_a_user_disabled_by_any_path_is_refused(collector: Collector,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(collector, "amina", "admin", monkeypatch=monkeypatch)
    token = user_token(collector, "amina")
    unowned = collector.api_token("viewer", name="script")
    with collector.db.write() as conn:  # straight in the database, without the CLI's revocation
        conn.execute(users.update().where(users.c.username == "amina").values(disabled_at=time.time()))
    assert not token_works(collector, token) and token_works(collector, unowned)
    with collector.db.read() as conn:
        assert conn.execute(sa.select(api_tokens.c.revoked_at).where(api_tokens.c.name == "amina-token")
                            ).scalar_one() is None
    with collector.db.write() as conn:
        conn.execute(users.update().where(users.c.username == "amina").values(disabled_at=None))
    assert token_works(collector, token), "not revoked, so it works again once the user is enabled"


def test_set_password_ends_sessions(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(collector, "amina", monkeypatch=monkeypatch)
    before = try_sign_in(collector, "amina")
    assert before is not None
    copy = browser(collector, before.cookies["tp_session"])

    code, out, err = collector.cli("user", "set-password", "amina")
    assert code == 0, err
    generated = out.strip().splitlines()[-1]
    assert len(generated) >= accounts.MIN_PASSWORD_LENGTH and " " not in generated
    assert "1 dashboard session(s) ended" in out
    assert refused(before) and refused(copy)
    assert try_sign_in(collector, "amina") is None, "the old password is refused"
    assert try_sign_in(collector, "amina", generated) is not None

    monkeypatch.setattr("sys.stdin", io.StringIO("a chosen passphrase 2\n"))
    code, out, err = collector.cli("user", "set-password", "amina", "--password-stdin")
    assert code == 0 and "a chosen passphrase" not in out, err
    assert try_sign_in(collector, "amina", generated) is None
    assert try_sign_in(collector, "amina", "a chosen passphrase 2") is not None

    # The same rules as `user create`: a short password changes nothing.
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, out, err = collector.cli("user", "set-password", "amina", "--password-stdin")
    assert code == 2 and "password too short: at least 12 characters, found 5" in err
    assert try_sign_in(collector, "amina", "a chosen passphrase 2") is not None
    entries = audit_rows(collector, "user.set_password")
    assert [(e["actor"], e["target"], e["details"]["generated"]) for e in entries] == [
        ("cli", "amina", True), ("cli", "amina", False)]
    assert entries[0]["details"]["sessions_revoked"] == 1
    assert generated not in repr(entries)


def test_the_last_enabled_admin_cannot_be_disabled(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(collector, "viewer1", "viewer", monkeypatch=monkeypatch)
    code, out, err = collector.cli("user", "disable", "admin")
    assert code == 2 and out == ""
    assert "'admin' is the last enabled admin" in err and "create or enable another admin first" in err
    assert disabled_at(collector, "admin") is None and token_works(collector, collector.admin_token)
    denied = audit_rows(collector, "user.disable")
    assert [(e["target"], e["outcome"]) for e in denied] == [("admin", "denied")]

    # A disabled admin does not count; with a second enabled admin the first can go.
    add_user(collector, "second", "admin", monkeypatch=monkeypatch)
    assert collector.cli("user", "disable", "second")[0] == 0
    assert collector.cli("user", "disable", "admin")[0] == 2
    assert collector.cli("user", "enable", "second")[0] == 0
    code, out, err = collector.cli("user", "disable", "admin")
    assert code == 0 and "1 API token(s) revoked" in out, err  # init's token belongs to the admin
    assert not token_works(collector, collector.admin_token)
    code, _out, err = collector.cli("user", "disable", "second")
    assert code == 2 and "last enabled admin" in err
    # Disabling an admin that is already disabled is no loss of admins: allowed (idempotent).
    assert collector.cli("user", "disable", "admin")[0] == 0


def test_unknown_user_and_help(collector: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("disable", "enable", "set-password"):
        code, out, err = collector.cli("user", action, "nobody")
        assert code == 2 and out == ""
        assert "no user 'nobody'" in err and "user list" in err
    assert audit_rows(collector, "user.disable") == [] and audit_rows(collector, "user.set_password") == []
    for action in ("list", "disable", "enable", "set-password"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["user", action, "--help"])
        assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "last enabled admin" in shown and "--password-stdin" in shown and "--json" in shown
