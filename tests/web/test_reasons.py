"""Check reasons on the device page in the reader's language (in-process app, SQLite and PostgreSQL):
the stored message rendered with the agent's catalogs, the English reason for a missing, malformed or
unknown message, page language and direction on translated text, escaping of what a device sent."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from agent import protocol
from agent.i18n import catalogue
from agent.policy import evaluate
from agent.policy.messages import FACT_LABELS_EN, TEMPLATES_EN, WORDS_EN
from benchmarks.collector_sim import AGENT_VERSION, Posture, SimDevice, linux_facts
from server.store import accounts
from server.store.schema import check_state, transitions
from server.web.i18n import Reason, Translator
from tests.server.conftest import (  # noqa: F401 (fixtures used by name)
    Collector,
    _cheap_password_hashing,
    in_process,
    initialised,
    templates,
)
from tests.web.conftest import csrf_of

PASSWORD = "reasons-test-password-1"
HOSTILE = "<script>alert(1)</script>"


def agent_catalog(lang: str) -> dict[str, dict[str, str]]:
    """The agent catalogue's texts in ``lang`` by section and key (English where it lacks one)."""
    texts = catalogue(lang)
    return {section: {key: texts.text(f"{section}.{key}", english) for key, english in table.items()}
            for section, table in (("messages", TEMPLATES_EN), ("facts", FACT_LABELS_EN), ("words", WORDS_EN))}


def disk_not_encrypted(lang: str) -> str:
    """The eq_fail sentence of the disk rule, put together from the language's own catalog words."""
    words = agent_catalog(lang)
    return str(words["messages"]["eq_fail"]).format(fact=words["facts"]["system_volume_encrypted"],
                                                    value=words["words"]["false"], expected=words["words"]["true"])


@pytest.fixture
def collector(initialised: Any) -> Iterator[Collector]:  # noqa: F811 (the imported fixture)
    with in_process(initialised) as running:
        with running.db.write() as conn:
            accounts.create_user(conn, "analyst", PASSWORD, "viewer")
        yield running


def signed_in(collector: Collector, lang: str) -> TestClient:
    client = TestClient(collector.client.app, follow_redirects=False)
    page = client.get("/login")
    answer = client.post("/login", data={"username": "analyst", "password": PASSWORD,
                                         "csrf_token": csrf_of(page.text), "next": "/"})
    assert answer.status_code == 303, answer.text
    client.cookies.set("tp_lang", lang)
    return client


def check_reason(page: str, rule_id: str) -> tuple[str, str, str]:
    """(lang, dir, text) of one rule's reason in the checks table."""
    match = re.search(rf'<th scope="row"><span dir="ltr">{re.escape(rule_id)}</span>.*?'
                      r'<p lang="([^"]*)" dir="([^"]*)" class="reason">(.*?)</p>', page, re.DOTALL)
    assert match, f"no reason for {rule_id} in the checks table"
    return match.group(1), match.group(2), match.group(3)


def timeline(page: str, rule_id: str) -> list[tuple[str, str, str]]:
    """(lang, dir, text) of each history entry of one rule, newest first."""
    section = page.split('<ol class="timeline">', 1)[1].split("</ol>", 1)[0]
    return re.findall(rf'<span dir="ltr">{re.escape(rule_id)}</span>:.*?'
                      r'<span class="muted reason" lang="([^"]*)" dir="([^"]*)">(.*?)</span></li>', section, re.DOTALL)


def stored_reason(collector: Collector, device_id: str, rule_id: str) -> str:
    with collector.db.read() as conn:
        return str(conn.execute(sa.select(check_state.c.reason).where(
            check_state.c.device_id == device_id, check_state.c.rule_id == rule_id)).scalar_one())


def test_failing_reason_and_history_in_french_and_arabic(collector: Collector) -> None:
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report(posture=Posture()))
    collector.send(device.report(posture=Posture(disk_encrypted=False)))
    english = stored_reason(collector, str(device.device_id), "disk-encryption")
    assert english == "system volume encrypted: no (expected: yes)"  # what the page showed before

    for lang, direction in (("fr", "ltr"), ("ar", "rtl")):
        page = signed_in(collector, lang).get(f"/devices/{device.device_id}").text
        assert f'<html lang="{lang}" dir="{direction}"' in page
        got_lang, got_dir, text = check_reason(page, "disk-encryption")
        assert (got_lang, got_dir, html.unescape(text)) == (lang, direction, disk_not_encrypted(lang))
        assert english not in page
        # The history row of the change is translated too; the first result (pass) as well.
        newest, first = timeline(page, "disk-encryption")
        assert (newest[0], newest[1], html.unescape(newest[2])) == (lang, direction, disk_not_encrypted(lang))
        assert first[:2] == (lang, direction) and agent_catalog(lang)["words"]["true"] in html.unescape(first[2])

    page = signed_in(collector, "en").get(f"/devices/{device.device_id}").text
    assert check_reason(page, "disk-encryption") == ("en", "ltr", english)


def test_nested_message_is_translated_whole(collector: Collector) -> None:
    """The VPN rule's grace period wraps the failure (within_grace with an inner message)."""
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report(posture=Posture(vpn_up=False)))
    page = signed_in(collector, "fr").get(f"/devices/{device.device_id}").text
    lang, _, text = check_reason(page, "vpn-corporate-traffic")
    french = agent_catalog("fr")["messages"]
    outer = french["within_grace"].split("{inner}")[1].split("{until}")[0]
    inner = french["network_not_via_tunnel"].split("{network}")[0]
    assert lang == "fr" and outer in html.unescape(text) and inner in html.unescape(text)
    assert "grace period" not in text and "{" not in text


def test_history_rows_without_message_show_english(collector: Collector) -> None:
    """Rows written before migration 0006 have no message: their English reason, marked as English."""
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report(posture=Posture(disk_encrypted=False)))
    with collector.db.write() as conn:
        conn.execute(transitions.update().where(transitions.c.device_id == device.device_id)
                     .values(message=None))
    page = signed_in(collector, "ar").get(f"/devices/{device.device_id}").text
    entries = timeline(page, "disk-encryption")
    assert entries == [("en", "ltr", "system volume encrypted: no (expected: yes)")]
    # The current state still has its message.
    assert check_reason(page, "disk-encryption")[:2] == ("ar", "rtl")


@pytest.mark.parametrize("stored", [
    "not JSON at all",
    json.dumps({"key": "a_key_from_a_newer_agent", "params": {}}),
    json.dumps({"key": "eq_fail", "params": {"fact": "system_volume_encrypted"}}),  # value, expected missing
    json.dumps({"key": "eq_fail", "params": "value=false"}),
    json.dumps({"key": 7, "params": {}}),
    json.dumps({"key": "check_error", "params": {"check": "disk_encryption",
                                                 "reason": {"key": "no_such_key", "params": {}}}}),
], ids=["not-json", "unknown-key", "missing-params", "params-not-object", "key-not-text", "unknown-nested"])
def test_malformed_message_falls_back_to_english(collector: Collector, stored: str) -> None:
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report(posture=Posture(disk_encrypted=False)))
    with collector.db.write() as conn:
        conn.execute(check_state.update().where(check_state.c.device_id == device.device_id,
                                                check_state.c.rule_id == "disk-encryption")
                     .values(message=stored, reason="the English reason the collector stored"))
    client = signed_in(collector, "fr")
    page = client.get(f"/devices/{device.device_id}")
    assert page.status_code == 200
    assert check_reason(page.text, "disk-encryption") == ("en", "ltr", "the English reason the collector stored")


def hostile_report(device: SimDevice) -> dict[str, str]:
    """A report whose disk check failed with a reason and a probe name that are markup."""
    assert device.device_id
    device.seq += 1
    facts = linux_facts(device.hostname, device.machine_id, device.serial, device.posture)
    facts["disk_encryption"] = {"state": "error", "facts": {}, "evidence": [HOSTILE],
                                "reason": f"{HOSTILE}: not found",
                                "message": {"key": "probe_not_found", "params": {"probe": HOSTILE}}}
    results = [r.to_report_json() for r in evaluate(device.policy, facts, "linux", time.time())]
    payload = protocol.build_report(device_id=device.device_id, seq=device.seq, agent_version=AGENT_VERSION,
                                    platform="linux", policy=device.policy.ref(), facts=facts, results=results)
    return protocol.seal(device.key, device.device_id, payload).to_json()


@pytest.mark.parametrize("lang", ["en", "fr", "ar"])
def test_markup_in_a_message_parameter_is_text(collector: Collector, lang: str) -> None:
    device = collector.enroll(SimDevice.numbered(1))
    assert collector.send(hostile_report(device))["accepted"] == 1
    page = signed_in(collector, lang).get(f"/devices/{device.device_id}").text
    assert HOSTILE not in page and "alert(1)" in page
    got_lang, _, text = check_reason(page, "disk-encryption")
    assert got_lang == lang and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    if lang != "en":  # the sentence around the probe name is translated, the name is kept as sent
        assert agent_catalog(lang)["messages"]["probe_not_found"].replace("{probe}", HOSTILE) in html.unescape(text)


@pytest.mark.parametrize("message, expected", [
    (None, Reason("English", "en", "ltr")),
    ({}, Reason("English", "en", "ltr")),
    ('{"key": "check_missing", "params": {"check": "vpn"}', Reason("English", "en", "ltr")),  # truncated JSON
    ("[" * 100_000, Reason("English", "en", "ltr")),  # nesting deeper than the JSON parser goes
    ({"key": "check_missing", "params": {"check": "vpn"}},
     Reason("aucune donnée n'a été collectée pour le contrôle vpn", "fr", "ltr")),
    ('{"key": "check_missing", "params": {"check": "vpn"}}',
     Reason("aucune donnée n'a été collectée pour le contrôle vpn", "fr", "ltr")),
], ids=["none", "empty", "truncated", "too-deep", "dict", "json-text"])
def test_translator_reason(message: Any, expected: Reason) -> None:
    assert Translator("fr").reason(message, "English") == expected


def test_translator_reason_nesting_is_bounded() -> None:
    msg: dict[str, Any] = {"key": "check_missing", "params": {"check": "vpn"}}
    for _ in range(20):
        msg = {"key": "check_error", "params": {"check": "vpn", "reason": msg}}
    assert Translator("ar").reason(msg, "English") == Reason("English", "en", "ltr")
    assert Translator("en").reason(msg, "English") == Reason("English", "en", "ltr")
