"""`validate`: every kind of mistake is caught, and each message names the line it is on."""

from __future__ import annotations

import pytest

from agent.policy import load_policy_text, validate_text

HEAD = """\
schema: teleposture/policy/v1
id: test-policy
version: 1
title: {en: Test, fr: Test, ar: اختبار}
rules:
"""

TEXTS = """\
    title: {en: T, fr: T, ar: ت}
    remediation: {en: Do it, fr: Faites-le, ar: افعل ذلك}
"""


def rule(body: str, rule_id: str = "r1", check: str = "firewall", severity: str = "high") -> str:
    return f"  - id: {rule_id}\n    check: {check}\n    severity: {severity}\n{body}{TEXTS}"


def doc(*rules: str, head: str = HEAD) -> str:
    return head + "".join(rules)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            count += 1
            if count == nth:
                return number
    raise AssertionError(f"{needle!r} not in document")


def test_valid_document_has_no_problems() -> None:
    text = doc(rule("    expect: {enabled: true, inbound_policy: {in: [drop, reject]}, rule_count: {min: 1}}\n"))
    assert validate_text(text, "p.yaml") == []


# (rule body, the text on the line that must be named, fragment of the message)
CASES = [
    ("    expect: {enabled: true}\n    colour: red\n", "colour: red", "unknown key 'colour'"),
    ("    expect:\n      enabled: true\n      firewall_on: true\n", "firewall_on", "has no fact 'firewall_on'"),
    ("    expect:\n      enabled: {max: 1}\n", "enabled: {max", "boolean fact"),
    ("    expect:\n      enabled: \"yes\"\n", "enabled: \"yes\"", "boolean fact"),
    ("    expect:\n      rule_count: {max: true}\n", "rule_count", "`max` must be a number"),
    ("    expect:\n      rule_count: {max: 5, warn: 9}\n", "rule_count", "warn 9 must be below max 5"),
    ("    expect:\n      rule_count: {min: 5, warn: 2}\n", "rule_count", "warn 2 must be above min 5"),
    ("    expect:\n      rule_count: {most: 5}\n", "rule_count", "unknown bound 'most'"),
    ("    expect:\n      rule_count: 2.5\n", "rule_count", "integer fact"),
    ("    expect:\n      frontends: []\n", "frontends", "list fact: policies cannot set expectations"),
    ("    expect:\n      inbound_policy: {in: []}\n", "inbound_policy", "`in` must be a non-empty list"),
    ("    expect:\n      enabled: {linux: true, beos: false}\n", "enabled: {linux", "boolean fact"),
    ("    grace: soon\n    expect: {enabled: true}\n", "grace: soon", "grace must be a duration"),
    ("    grace: -5\n    expect: {enabled: true}\n", "grace: -5", "grace must be a duration"),
    ("    expect: [enabled]\n", "expect: [enabled]", "`expect` must be a mapping"),
    ("    expect: {}\n", "expect: {}", "`expect` is empty"),
    ("    references: reference\n    expect: {enabled: true}\n", "references: reference", "list of texts"),
]


@pytest.mark.parametrize("body, needle, fragment", CASES, ids=[c[2] for c in CASES])
def test_rule_mistakes_name_their_line(body: str, needle: str, fragment: str) -> None:
    text = doc(rule(body))
    problems = validate_text(text, "p.yaml")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"p.yaml:{line_of(text, needle)}: "), (problems, line_of(text, needle))
    assert fragment in problems[0]


def test_unknown_check_lists_the_known_ones() -> None:
    text = doc(rule("    expect: {enabled: true}\n", check="firewal"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'check: firewal')}: ")
    assert "unknown check 'firewal'" in problem and "firewall" in problem and "disk_encryption" in problem


def test_bad_severity() -> None:
    text = doc(rule("    expect: {enabled: true}\n", severity="urgent"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'severity: urgent')}: ")
    assert "critical, high, medium, low" in problem


def test_duplicate_rule_ids_name_both_lines() -> None:
    text = doc(rule("    expect: {enabled: true}\n", rule_id="same"), rule("    expect: {enabled: false}\n", rule_id="same"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'id: same', 2)}: ")
    assert f"first on line {line_of(text, 'id: same')}" in problem


def test_missing_language_in_remediation() -> None:
    text = doc(rule("    expect: {enabled: true}\n")).replace(", ar: افعل ذلك}", "}")
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'remediation:')}: ")
    assert "lacks the 'ar' text" in problem


def test_remediation_as_a_single_string_asks_for_every_language() -> None:
    text = doc(rule("    expect: {enabled: true}\n")).replace(
        "remediation: {en: Do it, fr: Faites-le, ar: افعل ذلك}", "remediation: Do it")
    [problem] = validate_text(text, "p.yaml")
    assert "must give every language (en, fr, ar)" in problem


def test_top_level_schema_id_version_missing_or_wrong() -> None:
    text = doc(rule("    expect: {enabled: true}\n"),
               head=HEAD.replace("schema: teleposture/policy/v1\n", "").replace("id: test-policy\n", "id: Test Policy\n")
               .replace("version: 1\n", "version: 0\n"))
    problems = validate_text(text, "p.yaml")
    assert any(p.startswith("p.yaml:1: `schema` must be 'teleposture/policy/v1'") for p in problems), problems
    assert any(p.startswith(f"p.yaml:{line_of(text, 'id: Test Policy')}: `id` must be") for p in problems)
    assert any(p.startswith(f"p.yaml:{line_of(text, 'version: 0')}: `version` must be") for p in problems)


def test_all_problems_are_reported_at_once() -> None:
    text = doc(rule("    expect: {enabled: 3}\n", check="firewall"), rule("    expect: {nope: 1}\n", rule_id="r2"),
               rule("    expect: {enabled: true}\n", rule_id="r3", severity="huge"))
    assert len(validate_text(text, "p.yaml")) == 3


def test_intervals_are_checked() -> None:
    text = doc(rule("    expect: {enabled: true}\n"), head=HEAD + "").replace(
        "rules:\n", "intervals:\n  check: 1s\n  upload: 5m\n  heartbeat: 60\nrules:\n")
    problems = validate_text(text, "p.yaml")
    assert len(problems) == 2
    assert problems[0].startswith(f"p.yaml:{line_of(text, 'check: 1s')}: interval check must be between")
    assert problems[1].startswith(f"p.yaml:{line_of(text, 'heartbeat')}: unknown interval 'heartbeat'")


VPN_HEAD = "    expect: {tunnel_up: true}\n"


def test_vpn_params_are_validated_networks() -> None:
    good = doc(rule(VPN_HEAD + "    params:\n      corporate_networks: [10.20.0.0/16, '2001:db8::/32']\n",
                    check="vpn"))
    policy = load_policy_text(good, "p.yaml")
    assert policy.rules[0].params == {"corporate_networks": ["10.20.0.0/16", "2001:db8::/32"]}
    bad = doc(rule(VPN_HEAD + "    params:\n      corporate_networks:\n        - 10.20.0.0/16\n        - intranet\n",
                   check="vpn"))
    [problem] = validate_text(bad, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(bad, '- intranet')}: ")
    assert "'intranet' is not a network in CIDR notation" in problem


def test_param_written_as_an_expectation_is_redirected() -> None:
    text = doc(rule("    expect:\n      corporate_networks: [10.0.0.0/8]\n", check="vpn"))
    redirected, missing = sorted(validate_text(text, "p.yaml"), key=lambda p: "missing params" in p)
    assert "is a parameter of check vpn, not a fact: put it under `params:`" in redirected
    assert "missing params: corporate_networks" in missing


def test_a_vpn_rule_must_name_the_organisations_networks() -> None:
    """Issue 15: without corporate networks any tunnel passes "VPN connected", a Tailscale overlay too."""
    text = doc(rule(VPN_HEAD, check="vpn"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, '- id: r1')}: ")
    assert "missing params: corporate_networks" in problem and "Tailscale" in problem
    assert validate_text(doc(rule(VPN_HEAD + "    params: {corporate_networks: [10.0.0.0/8]}\n", check="vpn")),
                         "p.yaml") == []


def test_params_of_one_check_must_agree_across_rules() -> None:
    text = doc(rule(VPN_HEAD + "    params: {corporate_networks: [10.0.0.0/8]}\n", check="vpn"),
               rule(VPN_HEAD + "    params: {corporate_networks: [10.1.0.0/16]}\n", check="vpn", rule_id="r2"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'params:', 2)}: ")
    assert f"differ from those on line {line_of(text, 'params:')}" in problem


def test_unknown_param() -> None:
    text = doc(rule("    expect: {enabled: true}\n    params: {zones: [home]}\n"))
    [problem] = validate_text(text, "p.yaml")
    assert "check firewall has no parameter 'zones' (its parameters: none)" in problem


@pytest.mark.parametrize("expectation, fragment", [
    ('{min: 14.0}', "quote versions"),
    ('{min: "fourteen"}', "dotted version string"),
    ('{min_build: "19045"}', "whole build number"),
    ('{darwin: {min: "14.0"}, windows: {newest: true}}', "unknown bound 'newest'"),
    ('"14.0"', "version fact"),
])
def test_version_expectations(expectation: str, fragment: str) -> None:
    text = doc(rule(f"    expect:\n      os_version: {expectation}\n", check="os_identity"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'os_version:')}: ") and fragment in problem


def test_durations_and_default_grace_per_severity() -> None:
    text = doc(rule("    grace: 2w\n    expect: {enabled: true}\n"),
               rule("    expect: {enabled: true}\n", rule_id="r2", severity="critical"),
               rule("    expect: {enabled: true}\n", rule_id="r3", severity="medium"),
               rule("    expect: {enabled: true}\n", rule_id="r4", severity="low"),
               rule("    grace: 90\n    expect: {enabled: true}\n", rule_id="r5"))
    graces = [r.grace_seconds for r in load_policy_text(text, "p.yaml").rules]
    assert graces == [14 * 86400, 0, 72 * 3600, 7 * 86400, 90]


def test_json_documents_report_problems_too() -> None:
    text = '{"schema": "teleposture/policy/v1", "id": "j", "version": 1,\n "title": {"en": "a", "fr": "b", "ar": "c"},\n "rules": [\n  {"id": "x", "check": "nope"}\n ]\n}\n'
    problems = validate_text(text, "p.json")
    assert any("unknown check 'nope'" in p for p in problems)
    # pretty-printed JSON borrows line numbers from the YAML composer
    assert any(p.startswith("p.json:4: ") and "unknown check" in p for p in problems), problems


AV_EXPECT = "    expect: {signature_age_days: {max: 3}}\n"

# (antivirus rule body, the text on the line that must be named, fragment of the message)
WHEN_CASES = [
    ("    when: {runing: true}\n" + AV_EXPECT, "when: {runing", "check antivirus has no fact 'runing'; its facts: "
     "running, products"),
    ("    when:\n      running: 1\n" + AV_EXPECT, "running: 1", "antivirus.running is a boolean fact"),
    ("    when:\n      running: \"yes\"\n" + AV_EXPECT, "running: \"yes\"", "boolean fact: expect true or false, "
     "found a string"),
    ("    when:\n      signature_age_days: {max: 3, warn: 1}\n    expect: {realtime_protection: true}\n",
     "signature_age_days: {max: 3, warn", "`warn` has no meaning in `when`"),
    ("    when:\n      signature_age_days: {max: yes}\n    expect: {realtime_protection: true}\n",
     "signature_age_days: {max: yes", "`max` must be a number"),
    ("    when:\n      products: [clamav]\n" + AV_EXPECT, "products: [clamav]", "list fact: policies cannot set"),
    ("    when:\n      running: {darwin: true, beos: false}\n" + AV_EXPECT, "running: {darwin", "boolean fact"),
    ("    when:\n      running: {darwin: true, default: 1}\n" + AV_EXPECT, "running: {darwin",
     "antivirus.running on other platforms is a boolean fact"),
    ("    when: [running]\n" + AV_EXPECT, "when: [running]", "`when` must be a mapping of fact to expectation"),
    ("    when: {}\n" + AV_EXPECT, "when: {}", "`when` is empty"),
    # platform-keyed expectations with `default`
    ("    expect:\n      signature_age_days: {default: {max: 3}}\n", "signature_age_days: {default",
     "`default` alone names no platform"),
    ("    expect:\n      signature_age_days:\n        linux: {max: 3}\n        darwin: {max: 21}\n"
     "        windows: {max: 3}\n        default: {max: 5}\n", "default: {max: 5}", "`default` is never used"),
    ("    expect:\n      signature_age_days:\n        darwin: {max: 21}\n        default: {max: 3, warn: 7}\n",
     "default: {max: 3, warn: 7}", "antivirus.signature_age_days on other platforms: warn 7 must be below max 3"),
]


@pytest.mark.parametrize("body, needle, fragment", WHEN_CASES, ids=[c[2][:50] for c in WHEN_CASES])
def test_when_and_default_mistakes_name_their_line(body: str, needle: str, fragment: str) -> None:
    text = doc(rule(body, check="antivirus"))
    problems = validate_text(text, "p.yaml")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"p.yaml:{line_of(text, needle)}: "), (problems, line_of(text, needle))
    assert fragment in problems[0]


def test_when_names_a_param_as_a_fact() -> None:
    text = doc(rule("    when:\n      corporate_networks: [10.0.0.0/8]\n" + VPN_HEAD
                    + "    params: {corporate_networks: [10.0.0.0/8]}\n", check="vpn"))
    [problem] = validate_text(text, "p.yaml")
    assert problem.startswith(f"p.yaml:{line_of(text, 'corporate_networks:')}: ")
    assert "is a parameter of check vpn, not a fact" in problem


def test_valid_when_and_default_are_kept_and_round_trip() -> None:
    from agent.policy import policy_from_json

    text = doc(rule("    when: {running: true, signature_age_days: {darwin: {max: 60}}}\n"
                    "    expect:\n      signature_age_days: {darwin: {max: 21, warn: 14}, default: {max: 3, warn: 1}}\n",
                    check="antivirus"),
               rule("    expect: {enabled: true}\n", rule_id="r2"))
    policy = load_policy_text(text, "p.yaml")
    with_when, without = policy.rules
    assert dict(with_when.when) == {"running": True, "signature_age_days": {"darwin": {"max": 60}}}
    assert with_when.to_json()["when"] == {"running": True, "signature_age_days": {"darwin": {"max": 60}}}
    # a rule without `when` serialises as before, so digests of existing policies do not change
    assert without.when == {} and "when" not in without.to_json()
    assert policy_from_json(policy.to_json()) == policy


def test_when_problems_in_a_json_upload_name_their_line() -> None:
    # the collector validates uploads through the same function
    text = ('{"schema": "teleposture/policy/v1", "id": "j", "version": 1,\n'
            ' "title": {"en": "a", "fr": "b", "ar": "c"},\n'
            ' "rules": [\n'
            '  {"id": "x", "check": "antivirus", "severity": "high",\n'
            '   "when": {"running": "true"},\n'
            '   "expect": {"signature_age_days": {"max": 3}},\n'
            '   "title": {"en": "a", "fr": "b", "ar": "c"}, "remediation": {"en": "a", "fr": "b", "ar": "c"}}\n'
            ' ]\n}\n')
    [problem] = validate_text(text, "p.json")
    assert problem.startswith("p.json:5: ") and "antivirus.running is a boolean fact" in problem
