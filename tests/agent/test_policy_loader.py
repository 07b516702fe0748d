"""Loading policy documents: YAML with line numbers, JSON, the bundled baseline and its generated copies."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.policy import (
    BASELINE_ID,
    POLICIES_DIR,
    Policy,
    PolicyError,
    baseline,
    check_params,
    checks_used,
    load_policy_file,
    load_policy_text,
    policy_from_json,
    validate_text,
)
from agent.policy.__main__ import compiled_text, schema_text
from agent.policy.loader import YAML_MISSING

BASELINE_YAML = POLICIES_DIR / f"{BASELINE_ID}.yaml"
BASELINE_JSON = POLICIES_DIR / f"{BASELINE_ID}.json"

MINIMAL = """\
schema: teleposture/policy/v1
id: minimal
version: 3
title: {en: Minimal, fr: Minimale, ar: أدنى}
intervals: {check: 15m, upload: 60}
rules:
  - id: fw
    check: firewall
    severity: high
    expect: {enabled: true}
    title: {en: Firewall, fr: Pare-feu, ar: الجدار الناري}
    remediation: {en: Turn it on, fr: Activez-le, ar: قم بتفعيله}
"""


def test_minimal_yaml_loads_with_defaults_filled() -> None:
    policy = load_policy_text(MINIMAL, "min.yaml")
    assert (policy.id, policy.version) == ("minimal", 3)
    assert policy.intervals == {"check": 900, "upload": 60, "policy_refresh": 3600, "vpn_sample": 60}
    rule = policy.rules[0]
    assert rule.grace_seconds == 24 * 3600  # the high-severity default
    assert dict(rule.expect) == {"enabled": True}
    assert rule.title["ar"] == "الجدار الناري"


def test_to_json_round_trips_and_digest_is_of_canonical_text() -> None:
    policy = load_policy_text(MINIMAL, "min.yaml")
    again = policy_from_json(json.loads(json.dumps(policy.to_json())))
    assert again == policy
    assert again.digest() == policy.digest()
    assert policy.ref() == {"id": "minimal", "version": 3, "digest": policy.digest()}
    assert policy.digest().startswith("sha256:") and len(policy.digest()) == 7 + 64
    changed = load_policy_text(MINIMAL.replace("version: 3", "version: 4"), "min.yaml")
    assert changed.digest() != policy.digest()


def test_json_text_loads_like_yaml() -> None:
    policy = load_policy_text(MINIMAL, "a.yaml")
    assert load_policy_text(json.dumps(policy.to_json()), "a.json") == policy
    assert load_policy_text(json.dumps(policy.to_json(), indent=2), "a.json") == policy


def test_yaml_flow_style_is_not_mistaken_for_broken_json() -> None:
    flow = ("{schema: teleposture/policy/v1, id: flow, version: 1, title: {en: F, fr: F, ar: ف}, rules: ["
            "{id: fw, check: firewall, severity: low, expect: {enabled: true}, title: {en: F, fr: F, ar: ف}, "
            "remediation: {en: F, fr: F, ar: ف}}]}")
    assert load_policy_text(flow, "flow.yaml").id == "flow"


def test_baseline_json_is_generated_from_the_yaml() -> None:
    assert BASELINE_JSON.read_text(encoding="utf-8") == compiled_text(BASELINE_YAML), \
        "policies/ma-telework-baseline.json is stale: run `python -m agent.policy build`"
    assert baseline() == load_policy_file(BASELINE_YAML)


def test_schema_file_is_generated_from_the_declarations() -> None:
    path = POLICIES_DIR / "policy.schema.json"
    assert path.read_text(encoding="utf-8") == schema_text(), \
        "policies/policy.schema.json is stale: run `python -m agent.policy build`"


def test_schema_lists_every_declared_check_and_expectable_fact() -> None:
    from agent.checks.collectors import REGISTRY
    from agent.policy.validate import RULE_KEYS

    schema = json.loads(schema_text())
    rule = schema["properties"]["rules"]["items"]
    assert set(rule["properties"]) == set(RULE_KEYS)
    assert rule["properties"]["check"]["enum"] == sorted(REGISTRY)
    by_check = {part["if"]["properties"]["check"]["const"]: part["then"]["properties"] for part in rule["allOf"]}
    assert set(by_check) == set(REGISTRY)
    vpn_expect = by_check["vpn"]["expect"]["properties"]
    assert "tunnel_up" in vpn_expect and "tunnels" not in vpn_expect  # lists are not expectable
    assert by_check["vpn"]["params"]["properties"]["corporate_networks"]["type"] == "array"
    assert vpn_expect["tunnel_up"]["anyOf"][0] == {"$ref": "#/$defs/bool"}
    assert schema["$defs"]["bool"] == {"type": "boolean"}
    assert "warn" in schema["$defs"]["number"]["oneOf"][1]["properties"]
    # a `when` condition is met or not: no warning band
    when = by_check["antivirus"]["when"]["properties"]
    assert when["signature_age_days"]["anyOf"][0] == {"$ref": "#/$defs/number_condition"}
    assert "warn" not in schema["$defs"]["number_condition"]["oneOf"][1]["properties"]


def test_baseline_encodes_the_telework_requirements() -> None:
    policy = baseline()
    assert policy.id == "ma-telework-baseline" and policy.version == 3
    assert policy.intervals == {"check": 3600, "upload": 300, "policy_refresh": 3600, "vpn_sample": 60}
    rules = {rule.id: rule for rule in policy.rules}
    assert rules["disk-encryption"].severity == "critical"
    assert dict(rules["disk-encryption"].expect) == {"system_volume_encrypted": True}
    assert rules["disk-encryption"].grace_seconds == 0
    assert check_params(policy) == {"vpn": {"corporate_networks": ["203.0.113.0/24", "198.51.100.0/24"]}}
    assert rules["vpn-corporate-traffic"].severity == "high"
    assert dict(rules["security-updates"].expect) == {"pending_security_updates": {"max": 0}}
    assert rules["security-updates"].grace_seconds > 0
    assert dict(rules["recent-updates"].expect) == {"days_since_last_update": {"max": 14, "warn": 7}}
    assert dict(rules["automatic-updates"].expect) == {"automatic_updates": True}
    assert dict(rules["firewall-enabled"].expect) == {"enabled": True}
    assert rules["firewall-enabled"].severity == "high"
    assert rules["screen-lock"].expect["idle_delay_seconds"]["max"] == 600
    assert rules["screen-lock"].severity == "medium"
    # XProtect updates every one to three weeks; Defender and ClamAV daily
    assert dict(rules["antimalware-signatures"].expect) == {
        "signature_age_days": {"darwin": {"max": 21, "warn": 14}, "default": {"max": 3, "warn": 1}}}
    # a product that publishes no signature age (Security Center) is judged by its own verdict instead
    assert dict(rules["antimalware-signatures"].when) == {"running": True,
                                                          "signature_source": {"in": ["age", "none"]}}
    assert dict(rules["antimalware-signatures-state"].when) == {"running": True, "signature_source": "product_state"}
    assert dict(rules["antimalware-signatures-state"].expect) == {"signatures_up_to_date": True}
    assert [rule.id for rule in policy.rules if rule.when] == ["antimalware-signatures",
                                                               "antimalware-signatures-state", "wifi-security"]
    # real-time protection off is not protecting (Windows Defender, macOS); Linux's on-access is optional
    assert dict(rules["antimalware-running"].expect) == {"running": True,
                                                         "realtime_protection": {"windows": True, "darwin": True}}
    # version 3: end of life, and the five checks of issue 15
    assert dict(rules["os-end-of-life"].expect) == {"os_support_days_left": {"min": 0, "warn": 90}}
    assert dict(rules["no-local-admin"].expect) == {"is_admin": False}
    assert dict(rules["secure-boot"].expect) == {"secure_boot_enabled": True}
    assert dict(rules["no-remote-access"].expect) == {"exposed": False}
    assert dict(rules["time-sync"].expect) == {"service_running": True, "synchronized": True}
    assert dict(rules["wifi-security"].expect) == {"encrypted": True}
    # an open or WEP network fails only while the VPN is down
    assert dict(rules["wifi-security"].when) == {"connected": True, "vpn.tunnel_up": False}
    assert rules["supported-os-version"].expect["os_version"] == {"darwin": {"min": "14.0"},
                                                                  "windows": {"min_build": 19045}}
    assert set(checks_used(policy)) == {"disk_encryption", "vpn", "patches", "os_identity", "firewall",
                                        "screen_lock", "antivirus", "local_admin", "secure_boot", "remote_access",
                                        "time_sync", "wifi"}
    for rule in policy.rules:
        assert set(rule.title) >= {"en", "fr", "ar"} and set(rule.remediation) >= {"en", "fr", "ar"}
        assert any("800-46" in ref for ref in rule.references), rule.id
        # Arabic text is Arabic, not a copy of the English one
        assert any("\u0600" <= ch <= "\u06ff" for ch in rule.remediation["ar"]), rule.id
        assert rule.remediation["fr"] != rule.remediation["en"]


def test_baseline_yaml_validates_clean() -> None:
    assert validate_text(BASELINE_YAML.read_text(encoding="utf-8"), str(BASELINE_YAML)) == []


def test_baseline_yaml_says_the_networks_are_placeholders() -> None:
    text = BASELINE_YAML.read_text(encoding="utf-8")
    assert "PLACEHOLDERS" in text and "203.0.113.0/24" in text


@pytest.mark.parametrize("text, line, fragment", [
    ("schema: x\n  id: [\n", 2, "YAML syntax error"),
    ("rules:\n  - id: a\n    check: vpn\n   bad: indent\n", 4, "YAML syntax error"),
    ("key: 'unterminated\n", 2, "YAML syntax error"),
    ("a: 1\na: 2\n", 2, "duplicate key 'a' (first on line 1)"),
    ("", 1, "empty"),
    ('{"a": 1,,}', 1, "not valid JSON"),
    ('{\n "a": 1,\n "b": }\n', 3, "not valid JSON"),
    ('{"a": 1, "a": 2}', 1, "duplicate key 'a'"),
    ("- just\n- a list\n", 1, "a policy document is a mapping"),
    ("\t- tab\n", 1, "YAML syntax error"),
])
def test_broken_text_names_its_line_and_never_raises_anything_else(text: str, line: int, fragment: str) -> None:
    source = "p.json" if text.startswith("{") else "p.yaml"
    problems = validate_text(text, source)
    assert problems, text
    assert problems[0].startswith(f"{source}:{line}: "), problems
    assert fragment in problems[0], problems


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_file(tmp_path / "absent.yaml")
    assert "cannot read" in info.value.problems[0]


def test_yaml_without_pyyaml_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_yaml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "yaml" or name.startswith("yaml."):
            raise ImportError("No module named 'yaml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(PolicyError) as info:
        load_policy_text(MINIMAL, "min.yaml")
    assert YAML_MISSING in info.value.problems[0] and "teleposture[yaml]" in info.value.problems[0]
    # JSON (what the collector sends, and the bundled baseline) needs no PyYAML
    data = json.loads(BASELINE_JSON.read_text(encoding="utf-8"))
    assert isinstance(policy_from_json(data), Policy)
    assert load_policy_text(json.dumps(data, indent=1), "b.json").id == BASELINE_ID


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_gives_problems_or_a_policy_never_a_crash(text: str) -> None:
    problems = validate_text(text, "fuzz.yaml")
    assert all(p.startswith("fuzz.yaml:") for p in problems)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=80, deadline=None)
@given(_json_values)
def test_any_json_value_is_judged_without_crashing(value: Any) -> None:
    problems = validate_text(json.dumps(value), "fuzz.json")
    assert problems and all(p.startswith("fuzz.json:") for p in problems)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["rules", "title", "intervals", "expect", "grace", "severity", "check", "in"]),
       _json_values)
def test_mutated_baseline_never_crashes(key: str, value: Any) -> None:
    document = baseline().to_json()
    rule = document["rules"][1]
    if key in ("expect", "grace", "severity", "check"):
        rule[key] = value
    elif key == "in":
        rule["expect"] = {"tunnel_up": value}
    else:
        document[key] = value
    problems = validate_text(json.dumps(document), "m.json")
    assert all(p.startswith("m.json:") for p in problems)


def test_generated_schema_accepts_the_baseline_and_refuses_what_validate_refuses() -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.Draft202012Validator(json.loads(schema_text()))
    document = baseline().to_json()
    assert validator.is_valid(document)
    signatures = next(r for r in document["rules"] if r["id"] == "antimalware-signatures")
    for field, value in [("expect", {"signature_age_days": {"default": {"max": 3}}}),  # default alone
                         ("when", {"signature_age_days": {"max": 3, "warn": 1}}),     # warn in a condition
                         ("when", {"runing": True}),                                   # unknown fact
                         ("when", {"running": {"darwin": "yes"}})]:                    # wrong type
        saved = signatures[field]
        signatures[field] = value
        assert not validator.is_valid(document), (field, value)
        signatures[field] = saved
    assert validator.is_valid(document)
