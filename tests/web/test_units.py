"""Small pure parts of the dashboard: catalogs, sessions and CSRF tokens, the sign-in limiter, redirects, diffs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from babel.messages.pofile import read_po

from agent import protocol
from server.web import auth
from server.web.admin_pages import canonical_yaml, diff_lines
from server.web.common import local_path
from server.web.i18n import Translator, choose_language

WEB = Path(__file__).resolve().parents[2] / "server" / "web"


def _ctx() -> Any:
    return SimpleNamespace(server_key=protocol.generate_private_key())


def _english_entries() -> dict[str, bool]:
    """The dashboard's keys, each with whether it is a plural entry (a text with a count)."""
    with (WEB / "locale" / "en" / "LC_MESSAGES" / "dashboard.po").open("rb") as source:
        return {str(m.id[0] if m.pluralizable else m.id): m.pluralizable for m in read_po(source) if m.id}


def test_every_literal_key_used_in_templates_and_code_exists_with_its_plural_kind() -> None:
    english = _english_entries()
    used: dict[str, set[str]] = {"t": set(), "t.plural": set()}
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]:
        for call, key in re.findall(r"""\b(t|t\.plural)\(\s*['"]([a-z_]+\.[a-z_.0-9]+)['"]""",
                                    path.read_text(encoding="utf-8")):
            used[call].add(key)
    assert used["t"] and used["t.plural"], "no translation keys found: the pattern is wrong"
    assert sorted((used["t"] | used["t.plural"]) - set(english)) == []
    # a text with a count goes through t.plural, which picks the language's form; t would show one form
    assert sorted(key for key in used["t"] if english[key]) == []
    assert sorted(key for key in used["t.plural"] if not english[key]) == []
    # Keys built from values (status., severity., role., ...) exist for every value they can take.
    for prefix, values in {"status.": ("compliant", "not_compliant", "error", "unknown", "pass", "warn", "fail",
                                       "not_applicable", "stale"),
                           "severity.": ("critical", "high", "medium", "low"), "role.": ("admin", "viewer"),
                           "state.": ("active", "revoked", "replaced", "pending"), "audit.": ("ok", "denied", "failed"),
                           "time.": ("never",), "access.": ("allow", "deny"),
                           "cause.": ("device_revoked", "device_replaced", "device_pending", "no_report", "stale",
                                      "blocked", "rule_failed", "within_grace", "rule_error")}.items():
        for value in values:
            assert english.get(prefix + value) is False, prefix + value
    for unit in ("minutes", "hours", "days"):  # t.plural('time.' + unit, amount) in _macros.html
        assert english["time." + unit] is True


@pytest.mark.parametrize(("cookie", "header", "expected"), [
    ("ar", "fr-FR", "ar"), (None, "fr-FR,fr;q=0.9,en;q=0.8", "fr"), (None, "de-DE,ar;q=0.5", "ar"),
    ("xx", None, "en"), (None, "", "en"), (None, "*", "en"),
])
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert choose_language(cookie, header) == expected


def test_translator_falls_back_and_formats() -> None:
    t = Translator("ar")
    assert t.rtl and t.plural("devices.count", 3) == "3 أجهزة"
    assert t.plural("no.such.key", 3) == "no.such.key"
    assert t("no.such.key") == "no.such.key"
    assert t.pick({"en": "Disk", "fr": "Disque"}) == "Disk"
    assert Translator("fr").pick({"en": "Disk", "fr": "Disque"}) == "Disque"


def test_session_round_trip_and_tampering() -> None:
    ctx = _ctx()
    session = auth.new_session(7)
    value = auth.encode_session(ctx, session)
    assert auth.decode_session(ctx, value) == session
    body, mac = value.split(".")
    assert auth.decode_session(ctx, body + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B")) is None
    assert auth.decode_session(_ctx(), value) is None  # another collector's key
    assert auth.decode_session(ctx, value, now=session.issued_at + auth.SESSION_LIFETIME + 1) is None
    assert auth.decode_session(ctx, value, now=session.issued_at - 3600) is None  # issued in the future
    for junk in ("", "a.b.c", "x" * 600, "bm90anNvbg.abc"):
        assert auth.decode_session(ctx, junk) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    ctx = _ctx()
    token = auth.csrf_token(ctx, "session-a")
    assert auth.csrf_valid(ctx, "session-a", token)
    assert not auth.csrf_valid(ctx, "session-b", token)
    assert not auth.csrf_valid(ctx, None, token)
    assert not auth.csrf_valid(ctx, "session-a", None)
    assert not auth.csrf_valid(ctx, "session-a", "")


def test_failure_limiter_counts_failures_per_minute() -> None:
    clock = [1000.0]
    limiter = auth.FailureLimiter(3, clock=lambda: clock[0])
    for _ in range(3):
        assert limiter.wait("user") == 0
        limiter.failed("user")
    assert limiter.wait("user") == pytest.approx(60.0)
    assert limiter.wait("other") == 0
    clock[0] += 30
    assert limiter.wait("user") == pytest.approx(30.0)
    clock[0] += 30.5
    assert limiter.wait("user") == 0


@pytest.mark.parametrize(("target", "expected"), [
    ("/devices?x=1", "/devices?x=1"), ("//evil.example", "/"), ("https://evil.example", "/"),
    ("/\\evil.example", "/"), ("", "/"), (None, "/"), ("devices", "/"),
])
def test_only_local_redirects(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_diff_of_canonical_yaml_ignores_key_order() -> None:
    old = canonical_yaml('{"b": 1, "a": {"y": 2, "x": 1}}')
    new = canonical_yaml('{"a": {"x": 1, "y": 3}, "b": 1}')
    lines = diff_lines(old, new, "v1", "v2")
    assert ("del", "-  y: 2") in lines and ("add", "+  y: 3") in lines
    assert [k for k, _ in lines].count("add") == 1
    assert diff_lines(old, old, "v1", "v1") == []


def test_time_helpers() -> None:
    from server.web.render import ago_parts, when
    now = time.time()
    assert ago_parts(now - 120, now) == ("minutes", 2)
    assert ago_parts(now - 5 * 3600, now) == ("hours", 5)
    assert ago_parts(now - 3 * 86400, now) == ("days", 3)
    assert ago_parts(None) == ("never", 0)
    assert when(0) == "1970-01-01 00:00" and when(None) == "—"
