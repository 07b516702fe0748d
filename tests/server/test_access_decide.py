"""server.access.decide: the pure access decision, row by row."""

from __future__ import annotations

from typing import Optional

import pytest

from server.access import AccessException, DeviceAccessInput, RuleState, decide

NOW = 1_800_000_000.0
DAY = 86400.0


def device(*rules: RuleState, state: str = "active", last_seen: Optional[float] = NOW - 60) -> DeviceAccessInput:
    return DeviceAccessInput("d1", state, last_seen, list(rules))


def rule(rule_id: str, severity: str, status: str, within_grace: bool = False) -> RuleState:
    return RuleState(rule_id, severity, status, NOW - 3600, within_grace)


CASES = [
    # (id, device, blocked, exception, decision, cause codes, warning codes)
    ("compliant", device(rule("disk", "critical", "pass")), False, None, "allow", [], []),
    ("critical fails past grace", device(rule("disk", "critical", "fail")), False, None, "deny",
     ["rule_failed"], []),
    ("critical inside grace warns", device(rule("disk", "critical", "warn", within_grace=True)), False, None,
     "allow", [], ["within_grace"]),
    ("high fails: warning only", device(rule("fw", "high", "fail")), False, None, "allow", [], ["rule_failed"]),
    ("critical error: warning", device(rule("disk", "critical", "error")), False, None, "allow", [], ["rule_error"]),
    ("plain warn (not grace) is fine", device(rule("upd", "medium", "warn")), False, None, "allow", [], []),
    ("revoked", device(state="revoked"), False, None, "deny", ["device_revoked"], []),
    ("replaced", device(state="replaced"), False, None, "deny", ["device_replaced"], []),
    ("pending", device(state="pending"), False, None, "deny", ["device_pending"], []),
    ("never reported", device(last_seen=None), False, None, "deny", ["no_report"], []),
    ("stale beyond limit", device(last_seen=NOW - 4 * DAY), False, None, "deny", ["stale"], []),
    ("ladder block", device(), True, None, "deny", ["blocked"], []),
    ("exception overrides a failing rule", device(rule("disk", "critical", "fail")), False,
     AccessException("travel, fixed on return", NOW + DAY, "token:alice"), "allow", ["rule_failed"], []),
    ("expired exception does not", device(rule("disk", "critical", "fail")), False,
     AccessException("old", NOW - 1, "token:alice"), "deny", ["rule_failed"], []),
    ("exception never lifts a revocation", device(state="revoked"), False,
     AccessException("x", NOW + DAY, "token:alice"), "deny", ["device_revoked"], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide(case: tuple) -> None:
    _name, dev, blocked, exception, decision, causes, warnings = case
    result = decide(dev, now=NOW, stale_limit=3 * DAY, blocked=blocked, exception=exception)
    assert result.decision == decision
    assert [c["code"] for c in result.causes] == causes
    assert [w["code"] for w in result.warnings] == warnings
    assert (result.exception is not None) == (exception is not None and decision == "allow"
                                               and dev.state == "active")


def test_a_failing_critical_rule_names_the_rule() -> None:
    result = decide(device(rule("disk-encryption", "critical", "fail"), rule("fw", "high", "pass")), now=NOW,
                    stale_limit=DAY)
    assert result.causes == ({"code": "rule_failed", "rule_id": "disk-encryption", "severity": "critical",
                              "status": "fail", "since": NOW - 3600},)


@pytest.mark.parametrize("blocked, decision, causes, warnings", [
    (False, "allow", [], ["rule_failed"]),  # before the ladder's `block` deadline: allowed, warned
    (True, "deny", ["blocked"], ["rule_failed"]),  # the ladder reached `block`
], ids=["before-block-step", "block-step-reached"])
def test_a_ladder_with_a_block_step_governs_its_severity(blocked: bool, decision: str, causes: list[str],
                                                         warnings: list[str]) -> None:
    failing = device(rule("disk", "critical", "fail"))
    result = decide(failing, now=NOW, stale_limit=DAY, blocked=blocked, ladder_blocks=frozenset({"critical"}))
    assert (result.decision, [c["code"] for c in result.causes], [w["code"] for w in result.warnings]) == (
        decision, causes, warnings)
    # a ladder that blocks only other severities leaves the critical fallback in force
    assert decide(failing, now=NOW, stale_limit=DAY, ladder_blocks=frozenset({"high"})).decision == "deny"
