"""The declared operator table (agent.policy.operators) and the typed grace fields of Result."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from agent.policy import Result, evaluate
from agent.policy.operators import (
    EXPECTATION_OPERATORS,
    PARAM_OPERATORS,
    describe_expectation,
    judge_expectation,
    operator_keys,
)
from agent.policy.validate import NUMBER_KEYS, VERSION_KEYS
from tests.agent.test_evaluate import NOW, VPN_ROUTED, ok, one, policy_with


def keys_of(verdicts: List[Any]) -> List[tuple[str, str]]:
    return [(status, msg["key"]) for status, msg in verdicts]


# (fact type, expectation, value, other facts, [(status, message key)])
JUDGED = [
    ("version", {"min": "14.0"}, "14.5", {}, [("pass", "min_pass")]),
    ("version", {"min": "14.0", "max": "15"}, "16.1", {}, [("pass", "min_pass"), ("fail", "version_max_fail")]),
    ("version", {"min_build": 22631}, "10.0.22000", {}, [("fail", "build_fail")]),
    # the build is its own fact where the check reports it
    ("version", {"min_build": 22631}, "10.0.22000", {"os_build_number": 22631}, [("pass", "build_pass")]),
    ("version", {"min_build": 22631}, "10.0", {}, [("error", "fact_unknown")]),
    ("version", {"min": "10.0", "min_build": 22631}, "10.0.22631", {}, [("pass", "min_pass"), ("pass", "build_pass")]),
    # a version that cannot be read ends the expectation: its other operators are not asked
    ("version", {"min": "10.0", "min_build": 1}, "beta", {"os_build_number": 5}, [("error", "version_unparsable")]),
    ("int", {"max": 5, "warn": 3}, 4, {}, [("warn", "max_warn")]),
    ("int", {"min": 2}, 1, {}, [("fail", "min_fail")]),
    ("int", 3, 3, {}, [("pass", "eq_pass")]),
    ("number", {"max": 1.5}, 2.0, {}, [("fail", "max_fail")]),
    ("string", {"in": ["a", "b"]}, "c", {}, [("fail", "in_fail")]),
    ("string", "a", "a", {}, [("pass", "eq_pass")]),
    ("bool", True, False, {}, [("fail", "eq_fail")]),
]


@pytest.mark.parametrize("fact_type,exp,value,facts,expected", JUDGED)
def test_judge_expectation_dispatches_on_the_table(fact_type: str, exp: Any, value: Any, facts: Dict[str, Any],
                                                   expected: List[tuple[str, str]]) -> None:
    assert keys_of(judge_expectation(fact_type, "f", value, exp, facts)) == expected


@pytest.mark.parametrize("exp,expected", [
    (True, ["when_eq"]),
    ({"in": ["x"]}, ["when_in"]),
    ({"min": 1, "max": 3}, ["when_min", "when_max"]),
    ({"min": "10.0", "min_build": 22631}, ["when_min", "when_build"]),
])
def test_describe_expectation(exp: Any, expected: List[str]) -> None:
    assert [m["key"] for m in describe_expectation("f", exp)] == expected


def test_validation_takes_its_bounds_from_the_table() -> None:
    assert NUMBER_KEYS == operator_keys("number") == ("min", "max", "warn")
    assert VERSION_KEYS == operator_keys("version") == ("min", "max", "min_build")
    assert {op.name for op in EXPECTATION_OPERATORS} >= {"version_range", "windows_build", "number_range", "one_of",
                                                         "equal"}


def test_the_vpn_rule_is_a_declared_parameter_operator() -> None:
    assert set(PARAM_OPERATORS) == {"corporate_networks"}
    policy = policy_with("vpn", "{tunnel_up: true}", params="{corporate_networks: [10.0.0.0/8, 172.16.0.0/12]}")
    facts = {"tunnel_up": True, **VPN_ROUTED}
    result = one(policy, "vpn", ok(facts))
    assert result.status == "error" and result.message["key"] == "network_not_measured"
    assert "corporate_networks_via_tunnel = true" in result.evidence
    assert one(policy_with("vpn", "{tunnel_up: true}"), "vpn", ok(facts)).status == "pass"


def test_grace_is_a_typed_field_decided_by_evaluate() -> None:
    policy = policy_with("firewall", "{enabled: true}", grace="1h")
    failing = ok({"enabled": False})
    inside = one(policy, "firewall", failing, failing_since={"r": NOW - 600})
    assert (inside.status, inside.within_grace, inside.grace_until, inside.failing) == ("warn", True, NOW - 600 + 3600,
                                                                                        True)
    after = one(policy, "firewall", failing, failing_since={"r": NOW - 7200})
    assert (after.status, after.within_grace, after.grace_until, after.failing) == ("fail", False, None, True)
    # without history (a one-off check) there is no grace
    assert one(policy, "firewall", failing).within_grace is False
    passing = one(policy, "firewall", ok({"enabled": True}), failing_since={})
    assert (passing.within_grace, passing.failing) == (False, False)


def test_a_warning_band_is_not_within_grace() -> None:
    policy = policy_with("screen_lock", "{idle_delay_seconds: {max: 900, warn: 600}}", grace="1h")
    [result] = evaluate(policy, {"screen_lock": ok({"idle_delay_seconds": 700})}, "linux", NOW, {})
    assert (result.status, result.within_grace, result.failing) == ("warn", False, False)


def test_result_json_carries_grace_and_refuses_it_on_other_statuses() -> None:
    policy = policy_with("firewall", "{enabled: true}", grace="1h")
    inside = one(policy, "firewall", ok({"enabled": False}), failing_since={})
    data = inside.to_json()
    assert data["within_grace"] is True and Result.from_json(data) == inside
    assert "within_grace" not in inside.to_report_json()  # the signed report's form is unchanged
    with pytest.raises(ValueError):
        Result.from_json({**data, "status": "fail"})
