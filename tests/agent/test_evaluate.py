"""Evaluation semantics, table-driven over synthetic facts: pure, typed, never a guess, never a crash."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.i18n import catalogue
from agent.policy import STATUSES, Policy, Result, baseline, evaluate, load_policy_text, summarize
from agent.policy.messages import render, render_en
from agent.policy.model import PolicyError
from agent.policy.operators import version_tuple
from agent.protocol import parse_rfc3339

NOW = 1_790_000_000.0


def policy_with(check: str, expect: str, params: str = "", grace: str = "", severity: str = "high",
                when: str = "") -> Policy:
    if check == "vpn" and not params:
        params = VPN_DEFAULT_PARAMS  # a VPN rule must name the organisation's networks
    text = f"""\
schema: teleposture/policy/v1
id: t
version: 1
title: {{en: T, fr: T, ar: ت}}
rules:
  - id: r
    check: {check}
    severity: {severity}
{grace and f"    grace: {grace}" + chr(10)}{when and f"    when: {when}" + chr(10)}    expect: {expect}
{params and f"    params: {params}" + chr(10)}    title: {{en: T, fr: T, ar: ت}}
    remediation: {{en: Fix it, fr: Corrigez, ar: أصلحه}}
"""
    return load_policy_text(text, "t.yaml")


VPN_DEFAULT_PARAMS = "{corporate_networks: [10.0.0.0/8]}"
VPN_ROUTED = {"corporate_routes": [{"network": "10.0.0.0/8", "interface": "tun0", "via_tunnel": True}],
              "corporate_networks_via_tunnel": True}


def ok(facts: Dict[str, Any], evidence: Optional[List[str]] = None) -> Dict[str, Any]:
    return {"state": "ok", "reason": None, "facts": facts, "evidence": evidence or []}


def one(policy: Policy, check: str, outcome: Any, platform: str = "linux",
        failing_since: Optional[Mapping[str, float]] = None) -> Result:
    [result] = evaluate(policy, {check: outcome}, platform, NOW, failing_since)
    return result


# (check, expect, facts, platform, status, fragment of the English reason)
TABLE = [
    ("disk_encryption", "{system_volume_encrypted: true}", {"system_volume_encrypted": True}, "linux", "pass",
     "system volume encrypted: yes"),
    ("disk_encryption", "{system_volume_encrypted: true}", {"system_volume_encrypted": False}, "linux", "fail",
     "system volume encrypted: no (expected: yes)"),
    ("patches", "{days_since_last_update: {max: 14, warn: 7}}", {"days_since_last_update": 0}, "linux", "pass",
     "at most 14"),
    ("patches", "{days_since_last_update: {max: 14, warn: 7}}", {"days_since_last_update": 7}, "linux", "pass", ""),
    ("patches", "{days_since_last_update: {max: 14, warn: 7}}", {"days_since_last_update": 7.5}, "linux", "warn",
     "7.5, above 7"),
    ("patches", "{days_since_last_update: {max: 14, warn: 7}}", {"days_since_last_update": 14}, "linux", "warn", ""),
    ("patches", "{days_since_last_update: {max: 14, warn: 7}}", {"days_since_last_update": 14.04}, "linux", "fail",
     "(at most 14 allowed)"),
    ("patches", "{pending_security_updates: {max: 0}}", {"pending_security_updates": 3}, "linux", "fail",
     "pending security updates: 3 (at most 0 allowed)"),
    ("vpn", "{vpn_up_share: {min: 0.5, warn: 0.9}}", {"vpn_up_share": 0.95}, "linux", "pass", ""),
    ("vpn", "{vpn_up_share: {min: 0.5, warn: 0.9}}", {"vpn_up_share": 0.6}, "linux", "warn", "below 0.9"),
    ("vpn", "{vpn_up_share: {min: 0.5, warn: 0.9}}", {"vpn_up_share": 0.2}, "linux", "fail", "at least 0.5"),
    ("screen_lock", "{idle_delay_seconds: {min: 1, max: 600}}", {"idle_delay_seconds": 0}, "linux", "fail",
     "at least 1"),
    ("screen_lock", "{idle_delay_seconds: {min: 1, max: 600}}", {"idle_delay_seconds": 300}, "linux", "pass", ""),
    ("screen_lock", "{idle_delay_seconds: 300}", {"idle_delay_seconds": 301}, "linux", "fail", "expected: 300"),
    ("firewall", "{inbound_policy: {in: [drop, reject]}}", {"inbound_policy": "drop"}, "linux", "pass", ""),
    ("firewall", "{inbound_policy: {in: [drop, reject]}}", {"inbound_policy": "accept"}, "linux", "fail",
     "expected one of: drop, reject"),
    ("firewall", "{backend: nftables}", {"backend": "ufw"}, "linux", "fail", "expected: nftables"),
    ("os_identity", '{os_version: {darwin: {min: "14.0"}}}', {"os_version": "13.6.7"}, "darwin", "fail",
     "OS version: 13.6.7 (at least 14.0 required)"),
    ("os_identity", '{os_version: {darwin: {min: "14.0"}}}', {"os_version": "14"}, "darwin", "pass", ""),
    ("os_identity", '{os_version: {darwin: {min: "14.9"}}}', {"os_version": "14.10"}, "darwin", "pass", ""),
    ("os_identity", '{os_version: {darwin: {min: "14.0"}}}', {"os_version": "12"}, "linux", "not_applicable",
     "no expectation of this rule applies on linux"),
    ("os_identity", "{os_version: {windows: {min_build: 19045}}}",
     {"os_version": "10.0.19044", "os_build_number": 19044}, "windows", "fail", "build 19044 (at least build 19045"),
    ("os_identity", "{os_version: {windows: {min_build: 19045}}}", {"os_version": "10.0.22631"}, "windows", "pass",
     "build 22631"),
    ("os_identity", "{os_version: {windows: {min_build: 19045}}}", {"os_version": "10"}, "windows", "error",
     "unknown"),
    ("os_identity", '{os_version: {min: "22.04"}}', {"os_version": "rolling"}, "linux", "error",
     "cannot compare version rolling"),
    ("os_identity", '{os_version: {max: "12"}}', {"os_version": "13.1"}, "linux", "fail", "at most 12"),
    # a needed fact that is null or absent is an error, never a pass or a fail
    ("firewall", "{enabled: true}", {"enabled": None}, "linux", "error", "firewall enabled unknown"),
    ("firewall", "{enabled: true}", {}, "linux", "error", "the check did not report it"),
    # a fact of the wrong type (a collector bug, a tampered report) is an error too
    ("firewall", "{enabled: true}", {"enabled": "true"}, "linux", "error", "should be bool, found str"),
    ("patches", "{pending_security_updates: {max: 0}}", {"pending_security_updates": "0"}, "linux", "error",
     "should be int"),
    ("patches", "{days_since_last_update: {max: 14}}", {"days_since_last_update": float("nan")}, "linux", "error",
     "should be number, found float"),
    # several expectations: the worst wins, fail over error over warn
    ("screen_lock", "{lock_enabled: true, idle_delay_seconds: {max: 600}}",
     {"lock_enabled": False, "idle_delay_seconds": None}, "linux", "fail", "screen lock enabled: no"),
    ("patches", "{automatic_updates: true, days_since_last_update: {max: 14, warn: 7}}",
     {"automatic_updates": None, "days_since_last_update": 10}, "linux", "error", "automatic updates unknown"),
    ("patches", "{pending_updates: {max: 0}, pending_security_updates: {max: 0}}",
     {"pending_updates": 4, "pending_security_updates": 2}, "linux", "fail",
     "pending updates: 4 (at most 0 allowed); pending security updates: 2"),
]


@pytest.mark.parametrize("check, expect, facts, platform, status, fragment", TABLE,
                         ids=[f"{row[0]}-{row[4]}-{i}" for i, row in enumerate(TABLE)])
def test_expectations(check: str, expect: str, facts: Dict[str, Any], platform: str, status: str,
                      fragment: str) -> None:
    result = one(policy_with(check, expect), check, ok({**VPN_ROUTED, **facts} if check == "vpn" else facts), platform)
    assert result.status == status, result.reason
    assert fragment in result.reason
    assert result.reason == render_en(result.message)
    assert result.remediation == {"en": "Fix it", "fr": "Corrigez", "ar": "أصلحه"}
    assert result.rule_id == "r" and result.check == check and result.severity == "high"


def test_check_error_carries_the_checks_reason() -> None:
    outcome = {"state": "error", "reason": "lsblk: command not found", "facts": {}, "evidence": ["which lsblk: none"]}
    result = one(policy_with("disk_encryption", "{system_volume_encrypted: true}"), "disk_encryption", outcome)
    assert result.status == "error"
    assert result.reason == "disk_encryption could not be checked: lsblk: command not found"
    assert result.message == {"key": "check_error", "params": {"check": "disk_encryption",
                                                               "reason": "lsblk: command not found"}}
    assert "which lsblk: none" in result.evidence


def test_not_applicable_check() -> None:
    outcome = {"state": "not_applicable", "reason": "no graphical session", "facts": {}, "evidence": []}
    result = one(policy_with("screen_lock", "{lock_enabled: true}"), "screen_lock", outcome)
    assert (result.status, result.reason) == ("not_applicable", "does not apply here: no graphical session")


def test_unknown_fact_names_the_checks_reason() -> None:
    outcome = {"state": "ok", "reason": "no anti-malware running", "facts": {"signature_age_days": None},
               "evidence": []}
    result = one(policy_with("antivirus", "{signature_age_days: {max: 3}}"), "antivirus", outcome)
    assert result.status == "error"
    assert result.reason == "signature age (days) unknown (no anti-malware running)"


AGE = "{signature_age_days: {max: 3, warn: 1}}"
PER_PLATFORM_AGE = "{signature_age_days: {darwin: {max: 21, warn: 14}, default: {max: 3, warn: 1}}}"

# (when, expect, facts, platform, status, the whole English reason or a fragment of it)
WHEN_TABLE = [
    # met: the expectations decide
    ("{running: true}", AGE, {"running": True, "signature_age_days": 0.5}, "linux", "pass",
     "signature age (days): 0.5 (at most 3)"),
    ("{running: true}", AGE, {"running": True, "signature_age_days": 5}, "linux", "fail",
     "signature age (days): 5 (at most 3 allowed)"),
    ("{running: true}", AGE, {"running": True, "signature_age_days": None}, "linux", "error",
     "signature age (days) unknown"),
    # not met: the rule does not apply, whatever the expected facts say (or do not say)
    ("{running: true}", AGE, {"running": False, "signature_age_days": None}, "linux", "not_applicable",
     "applies only when anti-malware running is yes"),
    ("{running: true}", AGE, {"running": False, "signature_age_days": 40}, "linux", "not_applicable",
     "applies only when anti-malware running is yes"),
    ("{running: true, realtime_protection: true}", AGE,
     {"running": False, "realtime_protection": False, "signature_age_days": None}, "linux", "not_applicable",
     "applies only when anti-malware running is yes; applies only when real-time protection is yes"),
    # a condition known to fail is enough, even beside an unknown one
    ("{running: true, realtime_protection: true}", AGE,
     {"running": False, "realtime_protection": None, "signature_age_days": 1}, "linux", "not_applicable",
     "applies only when anti-malware running is yes"),
    # a condition that cannot be told is an error, never a guess either way
    ("{running: true}", AGE, {"running": None, "signature_age_days": 1}, "linux", "error",
     "anti-malware running unknown (the check did not report it)"),
    ("{running: true}", AGE, {"running": "yes", "signature_age_days": 1}, "linux", "error",
     "anti-malware running should be bool, found str"),
    # numeric, string and version conditions, in words
    ("{signature_age_days: {max: 30}}", "{realtime_protection: true}",
     {"signature_age_days": 45, "realtime_protection": False}, "linux", "not_applicable",
     "applies only when signature age (days) is at most 30"),
    ("{signature_age_days: {min: 1, max: 30}}", "{realtime_protection: true}",
     {"signature_age_days": 0.2, "realtime_protection": False}, "linux", "not_applicable",
     "applies only when signature age (days) is at least 1; applies only when signature age (days) is at most 30"),
    ("{signature_age_days: {max: 30}}", "{realtime_protection: true}",
     {"signature_age_days": 29, "realtime_protection": False}, "linux", "fail", "real-time protection: no"),
    # platform-keyed conditions hold only where they are keyed
    ("{running: {darwin: true}}", AGE, {"running": False, "signature_age_days": None}, "darwin", "not_applicable",
     "applies only when anti-malware running is yes"),
    ("{running: {darwin: true}}", AGE, {"running": False, "signature_age_days": None}, "linux", "error",
     "signature age (days) unknown"),
    ("{running: {darwin: false, default: true}}", AGE, {"running": False, "signature_age_days": 9}, "windows",
     "not_applicable", "applies only when anti-malware running is yes"),
    # platform-keyed expectations with a default for the platforms not named
    ("{running: true}", PER_PLATFORM_AGE, {"running": True, "signature_age_days": 12.45}, "darwin", "pass",
     "signature age (days): 12.4 (at most 21)"),
    ("{running: true}", PER_PLATFORM_AGE, {"running": True, "signature_age_days": 16}, "darwin", "warn",
     "signature age (days): 16, above 14 (at most 21 allowed)"),
    ("{running: true}", PER_PLATFORM_AGE, {"running": True, "signature_age_days": 22}, "darwin", "fail",
     "signature age (days): 22 (at most 21 allowed)"),
    ("{running: true}", PER_PLATFORM_AGE, {"running": True, "signature_age_days": 12.45}, "linux", "fail",
     "signature age (days): 12.4 (at most 3 allowed)"),
    ("{running: true}", PER_PLATFORM_AGE, {"running": True, "signature_age_days": 2}, "windows", "warn",
     "above 1 (at most 3 allowed)"),
    ("{running: true}", PER_PLATFORM_AGE, {"running": False, "signature_age_days": None}, "darwin",
     "not_applicable", "applies only when anti-malware running is yes"),
]


@pytest.mark.parametrize("when, expect, facts, platform, status, reason", WHEN_TABLE,
                         ids=[f"{row[4]}-{row[3]}-{i}" for i, row in enumerate(WHEN_TABLE)])
def test_when_precondition(when: str, expect: str, facts: Dict[str, Any], platform: str, status: str,
                           reason: str) -> None:
    result = one(policy_with("antivirus", expect, when=when), "antivirus", ok(facts), platform)
    assert result.status == status, result.reason
    if status == "not_applicable":
        assert result.reason == reason
        assert result.message["key"] in ("when_not_met", "several")
    else:
        assert reason in result.reason
    assert result.reason == render_en(result.message)


@pytest.mark.parametrize("state, status, reason", [
    # the check itself failed: the precondition cannot be judged, so the error stays
    ("error", "error", "antivirus could not be checked: ps: permission denied"),
    ("not_applicable", "not_applicable", "does not apply here: ps: permission denied"),
])
def test_when_leaves_check_errors_and_inapplicable_checks_alone(state: str, status: str, reason: str) -> None:
    outcome = {"state": state, "reason": "ps: permission denied", "facts": {}, "evidence": []}
    result = one(policy_with("antivirus", AGE, when="{running: true}"), "antivirus", outcome)
    assert (result.status, result.reason) == (status, reason)


def test_when_facts_lead_the_evidence_and_the_message_translates() -> None:
    result = one(policy_with("antivirus", "{running: true, signature_age_days: {max: 3}}", when="{running: true}"),
                 "antivirus", ok({"running": False, "signature_age_days": None}, ["looked for: clamd"]))
    assert result.status == "not_applicable"
    # a fact both in `when` and `expect` is shown once
    assert result.evidence == ["running = false", "looked for: clamd"]
    assert result.message == {"key": "when_not_met",
                              "params": {"condition": {"key": "when_eq",
                                                       "params": {"fact": "running", "expected": True}}}}
    assert render(result.message, catalogue("fr")) == \
        "ne s'applique que si protection anti-logiciels malveillants active vaut oui"
    assert render(result.message, catalogue("ar")) == \
        "لا تنطبق هذه القاعدة إلا بشرط: برنامج مكافحة البرمجيات الخبيثة يعمل: نعم"


def test_when_never_hides_a_failure_graced_or_not() -> None:
    policy = policy_with("antivirus", AGE, when="{running: true}", grace="72h")
    facts = {"antivirus": ok({"running": True, "signature_age_days": 9})}
    [graced] = evaluate(policy, facts, "linux", NOW, {})
    assert graced.status == "warn" and "within the grace period" in graced.reason
    [late] = evaluate(policy, facts, "linux", NOW, {"r": NOW - 4 * 86400})
    assert late.status == "fail"


@pytest.mark.parametrize("outcome, fragment", [
    (None, "no facts were collected for check firewall"),
    ("garbage", "facts for firewall are malformed"),
    ({"state": "ok", "facts": ["enabled"]}, "malformed"),
    ({"state": "weird", "facts": {}}, "malformed"),
    ({"facts": {"enabled": True}}, "malformed"),
])
def test_missing_or_malformed_outcome_is_an_error(outcome: Any, fragment: str) -> None:
    policy = policy_with("firewall", "{enabled: true}")
    facts = {} if outcome is None else {"firewall": outcome}
    [result] = evaluate(policy, facts, "linux", NOW)
    assert result.status == "error" and fragment in result.reason


def test_evidence_lists_the_facts_used_then_the_checks_evidence() -> None:
    result = one(policy_with("firewall", "{enabled: true}"), "firewall",
                 ok({"enabled": False, "rule_count": 0}, ["input chain: policy accept"]))
    assert result.evidence == ["enabled = false", "input chain: policy accept"]


# -- VPN routing of the corporate networks -----------------------------------------------------

VPN_PARAMS = "{corporate_networks: [10.20.0.0/16, 192.168.50.0/24]}"


def vpn(corporate: Any, via_all: Any, tunnel_up: bool = True) -> Dict[str, Any]:
    return ok({"tunnel_up": tunnel_up, "corporate_routes": corporate, "corporate_networks_via_tunnel": via_all,
               "default_route_via_tunnel": False})


def route(network: str, via: Any, interface: str = "tun0") -> Dict[str, Any]:
    return {"network": network, "interface": interface, "via_tunnel": via}


@pytest.mark.parametrize("outcome, status, fragment", [
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", True)], True), "pass",
     "corporate networks routed through the VPN: 10.20.0.0/16, 192.168.50.0/24"),
    # tunnel up but one network goes out the normal interface: not good enough
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", False, "eth0")], False), "fail",
     "corporate network 192.168.50.0/24 is not routed through the VPN (it goes via eth0)"),
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", True)], True, tunnel_up=False), "fail",
     "VPN tunnel up: no"),
    # a network the collector did not measure is not a pass
    (vpn([route("10.20.0.0/16", True)], True), "error",
     "corporate network 192.168.50.0/24 was not measured by the VPN check"),
    (vpn(None, None), "error", "corporate_routes unknown"),
    (vpn("10.20.0.0/16", True), "error", "corporate_routes should be list"),
    # per-network facts and the summary fact disagree: not a pass
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", True)], False), "fail",
     "corporate networks are not routed through the VPN"),
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", True)], None), "error",
     "corporate networks through the VPN unknown"),
    # networks written differently by the collector still match
    (vpn([route("10.20.0.1/16", True), route("192.168.50.0/24", True)], True), "pass", ""),
    # rows that do not have the declared shape are an error naming the row, never skipped
    (vpn([route("10.20.0.0/16", True), route("192.168.50.0/24", True), {"junk": 1}], True), "error",
     "vpn: fact corporate_routes, row 2: unknown field junk (declared fields: network, interface, via_tunnel)"),
    (vpn([route("10.20.0.0/16", True), "x"], True), "error",
     "vpn: fact corporate_routes, row 1 should be an object, found str"),
    (vpn([route("10.20.0.0/16", "yes"), route("192.168.50.0/24", True)], True), "error",
     "vpn: fact corporate_routes, row 0: field via_tunnel should be bool, found str"),
])
def test_corporate_networks(outcome: Dict[str, Any], status: str, fragment: str) -> None:
    result = one(policy_with("vpn", "{tunnel_up: true}", params=VPN_PARAMS), "vpn", outcome)
    assert result.status == status, result.reason
    assert fragment in result.reason


def test_params_alone_make_a_rule() -> None:
    text = """\
schema: teleposture/policy/v1
id: t
version: 1
title: {en: T, fr: T, ar: ت}
rules:
  - id: r
    check: vpn
    severity: high
    params: {corporate_networks: [10.20.0.0/16]}
    title: {en: T, fr: T, ar: ت}
    remediation: {en: Fix it, fr: Corrigez, ar: أصلحه}
"""
    policy = load_policy_text(text, "t.yaml")
    assert one(policy, "vpn", vpn([route("10.20.0.0/16", False, "eth0")], False)).status == "fail"
    assert one(policy, "vpn", vpn([route("10.20.0.0/16", True)], True)).status == "pass"


# -- grace -------------------------------------------------------------------------------------------

def test_grace_turns_a_young_failure_into_a_warning() -> None:
    policy = policy_with("firewall", "{enabled: true}", grace="24h")
    failing = ok({"enabled": False})
    assert one(policy, "firewall", failing).status == "fail"  # no history: as it is
    young = one(policy, "firewall", failing, failing_since={"r": NOW - 3600})
    assert young.status == "warn"
    assert "within the grace period until" in young.reason
    assert parse_rfc3339(young.message["params"]["until"]) == pytest.approx(NOW - 3600 + 86400)
    assert young.message["params"]["inner"]["key"] == "eq_fail"
    assert one(policy, "firewall", failing, failing_since={"r": NOW - 86400 - 1}).status == "fail"
    # a rule not yet in the history starts failing now
    assert one(policy, "firewall", failing, failing_since={}).status == "warn"
    # grace never hides an error nor touches a pass
    assert one(policy, "firewall", ok({"enabled": None}), failing_since={}).status == "error"
    assert one(policy, "firewall", ok({"enabled": True}), failing_since={}).status == "pass"


def test_zero_grace_fails_at_once() -> None:
    policy = policy_with("disk_encryption", "{system_volume_encrypted: true}", severity="critical")
    assert policy.rules[0].grace_seconds == 0
    result = one(policy, "disk_encryption", ok({"system_volume_encrypted": False}), failing_since={})
    assert result.status == "fail"


# -- results, summary ------------------------------------------------------------------------------

def test_result_round_trips_and_rejects_garbage() -> None:
    policy = policy_with("firewall", "{enabled: true}", grace="1h")
    result = one(policy, "firewall", ok({"enabled": False}), failing_since={})
    assert Result.from_json(result.to_json()) == result
    for broken in ({}, {**result.to_json(), "status": "great"}, {**result.to_json(), "message": "x"}, "x"):
        with pytest.raises(ValueError):
            Result.from_json(broken)  # type: ignore[arg-type]


@pytest.mark.parametrize("statuses, summary", [
    ([], "compliant"),
    (["pass", "warn", "not_applicable"], "compliant"),
    (["pass", "error"], "error"),
    (["error", "fail", "pass"], "not_compliant"),
])
def test_summarize(statuses: List[str], summary: str) -> None:
    results = [Result(rule_id=str(i), check="c", status=s, severity="low", reason="", message={"key": "x",
                                                                                                "params": {}})
               for i, s in enumerate(statuses)]
    assert summarize(results) == summary


@pytest.mark.parametrize("text, expected", [
    ("14.5", (14, 5)), ("10.0.22631", (10, 0, 22631)), ("24.04.1-LTS", (24, 4, 1)), ("12", (12,)),
    ("", None), ("rolling", None), (None, None), ("15.1b", (15, 1)),
])
def test_version_tuple(text: Any, expected: Any) -> None:
    assert version_tuple(text) == expected


_any = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["disk_encryption", "vpn", "patches", "os_identity", "firewall",
                                        "screen_lock", "antivirus", "x"]),
                       st.one_of(_any, st.fixed_dictionaries({"state": st.sampled_from(["ok", "error", "x"]),
                                                              "facts": _any, "reason": _any, "evidence": _any}))),
       st.sampled_from(["linux", "darwin", "windows", "beos"]))
def test_evaluate_never_raises_on_any_facts(facts: Dict[str, Any], platform: str) -> None:
    from agent.policy import baseline

    results = evaluate(baseline(), facts, platform, NOW, {})
    assert len(results) == len(baseline().rules)
    for result in results:
        assert result.status in STATUSES and result.reason


@pytest.mark.parametrize("platform", ["linux", "darwin", "windows"])
def test_baseline_signature_rule_does_not_apply_without_a_running_product(platform: str) -> None:
    from agent.policy import baseline

    facts = {"antivirus": {"state": "ok", "reason": None, "evidence": ["no anti-malware process running"],
                           "facts": {"running": False, "products": [], "realtime_protection": None,
                                     "signature_age_days": None}}}
    by_rule = {r.rule_id: r for r in evaluate(baseline(), facts, platform, NOW)}
    assert by_rule["antimalware-running"].status == "fail"
    assert (by_rule["antimalware-signatures"].status, by_rule["antimalware-signatures"].reason) == \
        ("not_applicable", "applies only when anti-malware running is yes")


def test_a_report_of_an_older_agent_is_judged_with_the_declared_absent_value() -> None:
    """Agents before issue 15 report no `signature_source`: the baseline's signature rules judge their
    signature age as before (the fact's declared `absent` value), instead of reading "unknown"."""
    policy = baseline()
    old = ok({"running": True, "products": [], "realtime_protection": True, "signature_age_days": 0.5})
    results = {r.rule_id: r.status for r in evaluate(policy, {"antivirus": old}, "windows", 0.0)}
    assert (results["antimalware-signatures"], results["antimalware-signatures-state"]) == ("pass", "not_applicable")
    # a fact that is present but null stays unknown
    unknown = ok({**old["facts"], "signature_source": None})
    results = {r.rule_id: r.status for r in evaluate(policy, {"antivirus": unknown}, "windows", 0.0)}
    assert results["antimalware-signatures"] == "error"


# -- `when` on another check's fact (wifi-security: judged only while the VPN is down) ----------------

def _wifi_vpn_facts(vpn: Any, security: str = "open") -> Dict[str, Any]:
    return {"wifi": {"state": "ok", "facts": {"connected": True, "security": security,
                                                "encrypted": security not in ("open", "wep")}, "evidence": ["nmcli"]},
            "vpn": vpn}


@pytest.mark.parametrize(("vpn", "status"), [
    ({"state": "ok", "facts": {"tunnel_up": False}, "evidence": []}, "fail"),
    ({"state": "ok", "facts": {"tunnel_up": True}, "evidence": []}, "not_applicable"),
    ({"state": "error", "reason": "ip: command not found", "facts": {}, "evidence": []}, "error"),
    (None, "error"),
], ids=["vpn-down", "vpn-up", "vpn-error", "vpn-missing"])
def test_when_on_another_checks_fact(vpn: Any, status: str) -> None:
    results = {r.rule_id: r for r in evaluate(baseline(), _wifi_vpn_facts(vpn), "linux", 1.7e9)}
    assert results["wifi-security"].status == status, results["wifi-security"].reason
    if status == "error":
        assert "vpn.tunnel_up" in results["wifi-security"].reason


def test_when_on_an_unknown_check_or_fact_is_refused() -> None:
    doc = ('{"schema": "teleposture/policy/v1", "id": "x", "version": 1, "title": {"en": "t", "fr": "t", "ar": "t"}, '
           '"rules": [{"id": "w", "check": "wifi", "severity": "high", "when": {"%s": false}, '
           '"expect": {"encrypted": true}, "title": {"en": "t", "fr": "t", "ar": "t"}, '
           '"remediation": {"en": "r", "fr": "r", "ar": "r"}}]}')
    with pytest.raises(PolicyError, match="unknown check 'vnp'"):
        load_policy_text(doc % "vnp.tunnel_up", "x.json")
    with pytest.raises(PolicyError, match="check vpn has no fact 'tunnel'"):
        load_policy_text(doc % "vpn.tunnel", "x.json")
