"""Check collectors' reasons (probe failures, "no graphical session" ...) are translatable messages.

A collector gives its reason as a message of agent/checks/messages.py; the outcome keeps the English
text for old readers, the engine nests the message, and fr/ar renderers translate the sentence while
probe names and command output stay as they are.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from agent.checks._windows_batch import expand_batches
from agent.checks.base import ERROR, NOT_APPLICABLE, CheckOutcome, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.messages import TEMPLATES_EN as CHECK_TEMPLATES_EN
from agent.checks.messages import message
from agent.i18n import catalogue
from agent.policy import baseline
from agent.policy.evaluate import evaluate_rule
from agent.policy.messages import ENGINE_TEMPLATES_EN, TEMPLATES_EN, placeholders, render, render_en
from agent.probes import NOT_FOUND, PERMISSION_DENIED, TIMEOUT, ProbeResult, Recording, ReplayHost

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "linux"
# Templates that begin with a parameter which is itself a (translated) message, not a Latin token.
STARTS_WITH_NESTED_MESSAGE = {"failure_and", "failure_hint"}


def _catalog_messages(lang: str) -> Dict[str, str]:
    texts = catalogue(lang)
    found = {key: texts.find(english, context=f"messages.{key}") for key, english in TEMPLATES_EN.items()}
    return {key: text for key, text in found.items() if text is not None}


@pytest.mark.parametrize("lang", ["fr", "ar"])
def test_every_collector_key_has_en_fr_ar_with_the_same_placeholders(lang: str) -> None:
    translated = _catalog_messages(lang)
    missing = sorted(set(CHECK_TEMPLATES_EN) - set(translated))
    assert not missing, f"the {lang} catalogue lacks collector messages {missing}"
    for key, template in CHECK_TEMPLATES_EN.items():
        assert translated[key].strip(), (lang, key)
        assert placeholders(translated[key]) == placeholders(template), (lang, key)


def test_collector_and_engine_keys_are_one_catalogue_without_collisions() -> None:
    assert not set(CHECK_TEMPLATES_EN) & set(ENGINE_TEMPLATES_EN)
    assert set(TEMPLATES_EN) == set(CHECK_TEMPLATES_EN) | set(ENGINE_TEMPLATES_EN)


def test_every_key_the_collectors_use_is_in_the_catalogue() -> None:
    # a typo in a key would render as the bare key in every language
    sources = [ROOT / "agent" / "probes.py", *sorted((ROOT / "agent" / "checks").rglob("*.py"))]
    used = {key for path in sources for key in re.findall(r"\bmessage\(\s*\"([a-z_]+)\"", path.read_text("utf-8"))}
    assert {"probe_command_not_found", "screen_lock_no_session_no_logind", "vpn_networks_parameter_invalid"} <= used
    assert sorted(used - set(TEMPLATES_EN)) == []


def _first_strong_direction(text: str) -> str:
    for char in text:
        direction = unicodedata.bidirectional(char)
        if direction in ("L", "R", "AL"):
            return direction
    return ""


@pytest.mark.parametrize("key", sorted(CHECK_TEMPLATES_EN))
def test_arabic_sentences_read_right_to_left_around_latin_parameters(key: str) -> None:
    template = _catalog_messages("ar")[key]
    sentence = "".join(literal for literal, _, _, _ in string.Formatter().parse(template))
    # the paragraph direction comes from the first strong character: it must be Arabic, not a probe name
    if key not in STARTS_WITH_NESTED_MESSAGE:
        assert not template.startswith("{"), template
    if sentence.strip(" ()"):
        assert _first_strong_direction(sentence) in ("AL", "R"), template
    # a parameter is its own token: never glued to an Arabic letter
    for match in re.finditer(r"\{[a-z_]+\}", template):
        before = template[match.start() - 1] if match.start() else " "
        after = template[match.end()] if match.end() < len(template) else " "
        for neighbour in (before, after):
            assert not unicodedata.category(neighbour).startswith("L"), (key, template)


# -- probe failures: the most common error reasons -----------------------------------------------

APT = ("apt-get", "-s", "upgrade")
PROBES: List[Tuple[str, ProbeResult, str, List[str], List[str]]] = [
    ("not-found", ProbeResult("run", APT, rc=None, error=NOT_FOUND), "apt-get -s upgrade: command not found",
     ["commande introuvable"], ["غير موجود"]),
    ("denied", ProbeResult("read", ("/etc/shadow",), rc=None, error=PERMISSION_DENIED),
     "read /etc/shadow: permission denied (run the agent with the rights the docs list)",
     ["permission refusée", "droits indiqués"], ["رفض الإذن", "بالصلاحيات"]),
    ("timeout", ProbeResult("run", APT, rc=None, timed_out=True, duration=5.0, error=TIMEOUT),
     "apt-get -s upgrade: timed out after 5.0s", ["délai dépassé après 5.0 s"], ["انتهت المهلة بعد 5.0 ثانية"]),
    ("exit-status", ProbeResult("run", APT, stderr="E: Could not open lock file\nmore", rc=2),
     "apt-get -s upgrade: exited with status 2: E: Could not open lock file",
     ["terminé avec le code de sortie 2", "E: Could not open lock file"],
     ["برمز الخروج 2", "E: Could not open lock file"]),
]


def _rule(check: str) -> Any:
    return next(rule for rule in baseline().rules if rule.check == check)


@pytest.mark.parametrize("probe, english, french, arabic", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_probe_failure_reason_is_translated_and_the_probe_name_is_kept(
        probe: ProbeResult, english: str, french: List[str], arabic: List[str]) -> None:
    outcome = CheckOutcome.probe_failed("patches", probe)
    assert outcome.reason == english == probe.describe_failure()  # old readers see the same English text
    status, msg, _ = evaluate_rule(_rule("patches"), outcome.to_json(), "linux")
    assert status == "error"
    assert msg["params"]["reason"] == probe.failure_message()  # nested, not flattened to English
    assert render_en(msg) == f"patches could not be checked: {english}"
    english_sentence = english.split(": ", 1)[1].split(":")[0]
    for lang, words in (("fr", french), ("ar", arabic)):
        text = render(msg, catalogue(lang))
        assert " ".join(probe.target) in text, (lang, text)
        for word in words:
            assert word in text, (lang, text)
        assert english_sentence not in text, (lang, text)


def test_screen_lock_without_logind_or_display_server_is_translated() -> None:
    outcome = run_collector(REGISTRY["screen_lock"], ReplayHost(Recording.load(
        FIXTURES / "debian-12" / "screen_lock-no-logind-vm.json")))
    assert outcome.state == NOT_APPLICABLE
    assert outcome.message == message("screen_lock_no_session_no_logind")
    assert outcome.reason == ("no graphical session: logind is not available to list sessions and no display "
                              "server process (Xorg, Xwayland, gnome-shell, kwin, sway...) is running")
    status, msg, _ = evaluate_rule(_rule("screen_lock"), outcome.to_json(), "linux")
    assert status == "not_applicable"
    french = render(msg, catalogue("fr"))
    assert french.startswith("sans objet ici : aucune session graphique : logind n'est pas disponible")
    arabic = render(msg, catalogue("ar"))
    assert "لا توجد جلسة رسومية" in arabic and "Xwayland" in arabic
    for text in (french, arabic):
        assert "no graphical session" not in text and "is not available" not in text


# -- vpn: a policy mistake and the route probes of macOS and Windows ---------------------------------------

def test_vpn_bad_corporate_networks_parameter_is_translated_with_the_values_kept() -> None:
    outcome = run_collector(REGISTRY["vpn"], ReplayHost(Recording.load(FIXTURES / "debian-12" / "vpn-no-tunnel.json")),
                            {"corporate_networks": ["not-a-network"]})
    assert outcome.state == ERROR
    assert outcome.message is not None and outcome.message["key"] == "vpn_networks_parameter_invalid"
    # old readers see the same English sentence as before the reason became a message
    assert outcome.reason == ("policy parameter corporate_networks: 'not-a-network' does not appear to be an IPv4 or "
                              "IPv6 network; found ['not-a-network']. Give a list such as "
                              '["10.0.0.0/8", "2001:db8::/32"].')
    status, msg, _ = evaluate_rule(_rule("vpn"), outcome.to_json(), "linux")
    assert status == "error"
    french = render(msg, catalogue("fr"))
    assert french.startswith("vpn n'a pas pu être vérifié : paramètre corporate_networks de la politique : "), french
    assert "valeur trouvée : ['not-a-network']. Indiquez une liste comme" in french
    arabic = render(msg, catalogue("ar"))
    assert "قيمة غير صالحة لمعامل السياسة corporate_networks:" in arabic and "حدّد قائمة مثل" in arabic
    for text in (french, arabic):
        assert '["10.0.0.0/8", "2001:db8::/32"]' in text, text
        assert "policy parameter" not in text and "Give a list" not in text, text


def _failing(recording: Recording, command: str, result: ProbeResult) -> ReplayHost:
    """The recording with the one probe whose command line contains ``command`` answering ``result``
    (a Windows recording's PowerShell batch is read probe by probe)."""
    recording = expand_batches(recording)
    keys = [key for key, probe in recording.probes.items() if command in " ".join(probe.target)]
    assert len(keys) == 1, (command, keys)
    probe = recording.probes[keys[0]]
    recording.probes[keys[0]] = ProbeResult(probe.kind, probe.target, stdout=result.stdout, stderr=result.stderr,
                                            rc=result.rc, error=result.error, timed_out=result.timed_out,
                                            duration=result.duration)
    return ReplayHost(recording)


ROUTE_FAILURES = [
    ("darwin-route-timeout", "darwin/14-apple-silicon", "route -n get 203.0.113.1",
     ProbeResult("run", (), rc=None, timed_out=True, duration=5.0, error=TIMEOUT),
     "probe_timed_out", "route -n get 203.0.113.1: timed out after 5.0s",
     "route -n get 203.0.113.1 : délai dépassé après 5.0 s", "انتهت المهلة بعد 5.0 ثانية: route -n get 203.0.113.1"),
    ("windows-route-denied", "windows/11-24h2", "Find-NetRoute -RemoteIPAddress '203.0.113.1'",
     ProbeResult("run", (), stderr="Find-NetRoute : Access denied\r\n", rc=1),
     "ps_access_denied", "Find-NetRoute 203.0.113.1: access denied; this probe needs an administrator (or the agent "
     "service)", "Find-NetRoute 203.0.113.1 : accès refusé", "رفض الوصول إلى الاستعلام Find-NetRoute 203.0.113.1"),
    ("windows-adapters-missing", "windows/11-24h2", "Get-NetAdapter -IncludeHidden",
     ProbeResult("run", (), stderr="Get-NetAdapter : The term 'Get-NetAdapter' is not recognized as the name of a "
                 "cmdlet\r\n", rc=1),
     "ps_not_available", "Get-NetAdapter: not available on this Windows installation (Get-NetAdapter : The term "
     "'Get-NetAdapter' is not recognized as the name of a cmdlet)",
     "Get-NetAdapter : non disponible sur cette installation de Windows", "الاستعلام Get-NetAdapter غير متاح"),
]


@pytest.mark.parametrize("release, command, result, key, english, french, arabic",
                         [r[1:] for r in ROUTE_FAILURES], ids=[r[0] for r in ROUTE_FAILURES])
def test_vpn_probe_failures_on_macos_and_windows_are_messages(
        release: str, command: str, result: ProbeResult, key: str, english: str, french: str, arabic: str) -> None:
    platform = release.split("/")[0]
    host = _failing(Recording.load(ROOT / "tests" / "fixtures" / release / "baseline.json"), command, result)
    outcome = run_collector(REGISTRY["vpn"], host, {"corporate_networks": ["203.0.113.0/24"]})
    assert outcome.state == ERROR
    assert outcome.message is not None and outcome.message["key"] == key, outcome.message
    assert outcome.reason == english
    _, msg, _ = evaluate_rule(_rule("vpn"), outcome.to_json(), platform)
    assert french in render(msg, catalogue("fr"))
    assert arabic in render(msg, catalogue("ar"))


# -- the outcome's JSON: message is optional, old recordings and reports still load ----------------

def test_outcome_json_carries_the_message_and_reads_back() -> None:
    outcome = CheckOutcome.not_applicable("screen_lock", message("screen_lock_no_console_user"), ["uid 0"])
    data = json.loads(json.dumps(outcome.to_json()))
    assert data["message"] == {"key": "screen_lock_no_console_user", "params": {}}
    assert data["reason"] == "no user is logged in at the console"
    again = CheckOutcome.from_json("screen_lock", data)
    assert (again.state, again.reason, again.message, again.evidence) == \
        (outcome.state, outcome.reason, outcome.message, outcome.evidence)


def test_outcome_without_message_loads_and_falls_back_to_its_english_reason() -> None:
    old = {"state": "error", "reason": "loginctl: command not found", "facts": {}, "evidence": []}
    outcome = CheckOutcome.from_json("screen_lock", old)
    assert outcome.message is None and "message" not in outcome.to_json()
    _, msg, _ = evaluate_rule(_rule("screen_lock"), old, "linux")
    assert render(msg, catalogue("fr")) == "screen_lock n'a pas pu être vérifié : loginctl: command not found"


def test_plain_text_reasons_still_work_and_carry_no_message() -> None:
    outcome = CheckOutcome.error("patches", "a reason nobody has translated yet")
    assert outcome.reason == "a reason nobody has translated yet" and outcome.message is None


@pytest.mark.parametrize("bad", ["text", {"params": {}}, {"key": 3, "params": {}}, {"key": "x", "params": []}])
def test_malformed_message_in_outcome_json_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="'message' must be"):
        CheckOutcome.from_json("patches", {"state": "error", "reason": "r", "message": bad})


def test_unknown_or_malformed_message_from_a_device_falls_back_to_the_english_reason() -> None:
    # a newer agent's key, or a hostile report: the engine shows the English text rather than a bare key
    for msg in ({"key": "from_a_newer_agent", "params": {}}, {"key": "probe_not_found", "params": "x"}, "text"):
        outcome = {"state": "error", "reason": "the English reason", "message": msg, "facts": {}, "evidence": []}
        _, result_msg, _ = evaluate_rule(_rule("patches"), outcome, "linux")
        assert result_msg["params"]["reason"] == "the English reason"
