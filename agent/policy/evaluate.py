"""Evaluation: facts (a report's "facts" object) + policy -> one Result per rule. Pure, never raises.

Per rule: a check that errored gives ``error`` with its reason; a check that does not apply gives
``not_applicable``; a rule whose ``when`` precondition is not met gives ``not_applicable``; a fact
the rule needs that is null or missing gives ``error`` ("unknown"), never a guess; otherwise the
worst verdict of the rule's expectations (fail > error > warn > pass), each judged by the operator
table of agent.policy.operators. A failure younger than the rule's grace period (``failing_since``) is
reported as ``warn`` with ``Result.within_grace`` set: the one place that decides it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from agent.checks.declarations import CheckSpec, row_problems, type_ok
from agent.checks.specs import SPECS
from agent.policy.messages import Message, message, render_en
from agent.policy.model import STATUSES, Policy, Rule, expectation_for
from agent.policy.operators import (
    PARAM_OPERATORS,
    Verdict,
    describe_expectation,
    judge_expectation,
    unknown_reason,
)
from agent.protocol import rfc3339

# Which verdict wins when a rule has several expectations: a known failure says more than an
# unknown, an unknown more than a warning.
_RANK = {"pass": 0, "not_applicable": 0, "warn": 1, "error": 2, "fail": 3}
_MAX_EVIDENCE = 40


@dataclass(frozen=True)
class Result:
    rule_id: str
    check: str
    status: str
    severity: str
    reason: str
    message: Mapping[str, Any]
    evidence: List[str] = field(default_factory=list)
    remediation: Mapping[str, str] = field(default_factory=dict)
    # A failure its rule's grace period still turns into ``warn`` (decided here, in evaluate, once for the
    # agent and the collector), and the moment that grace ends (the result then turns into ``fail``).
    within_grace: bool = False
    grace_until: Optional[float] = None

    @property
    def failing(self) -> bool:
        """The rule's facts fail, whether or not the failure is still inside its grace period."""
        return self.status == "fail" or self.within_grace

    def to_json(self) -> Dict[str, Any]:
        data = {**self.to_report_json(), "evidence": list(self.evidence), "remediation": dict(self.remediation)}
        if self.within_grace:
            data.update(within_grace=True, grace_until=self.grace_until)
        return data

    def to_report_json(self) -> Dict[str, Any]:
        """The compact form a signed report carries: the collector has the policy (titles, remediation)
        and the facts (evidence), so repeating them in every report only costs bandwidth and parsing."""
        return {
            "rule_id": self.rule_id,
            "check": self.check,
            "status": self.status,
            "severity": self.severity,
            "reason": self.reason,
            "message": {"key": self.message.get("key"), "params": dict(self.message.get("params") or {})},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        """Read a result back (from a report); raises ValueError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a result is an object, found {type(data).__name__}")
        for key in ("rule_id", "check", "status", "severity", "reason"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"result field {key!r} must be a string, found {data.get(key)!r}")
        if data["status"] not in STATUSES:
            raise ValueError(f"result status must be one of {', '.join(STATUSES)}, found {data['status']!r}")
        msg = data.get("message")
        if not isinstance(msg, Mapping) or not isinstance(msg.get("key"), str) \
                or not isinstance(msg.get("params", {}), Mapping):
            raise ValueError("result field 'message' must be {key: string, params: object}")
        evidence = data.get("evidence", [])
        remediation = data.get("remediation", {})
        if not isinstance(evidence, list) or not isinstance(remediation, Mapping):
            raise ValueError("result 'evidence' must be a list and 'remediation' an object")
        within_grace = data.get("within_grace", False)
        grace_until = data.get("grace_until")
        if not isinstance(within_grace, bool) or (within_grace and data["status"] != "warn") or not (
                grace_until is None or isinstance(grace_until, (int, float)) and not isinstance(grace_until, bool)):
            raise ValueError("result 'within_grace' must be a boolean (true only on a warn) and 'grace_until' "
                             "a time or null")
        return cls(rule_id=data["rule_id"], check=data["check"], status=data["status"],
                   severity=data["severity"], reason=data["reason"],
                   message={"key": msg["key"], "params": dict(msg.get("params") or {})},
                   evidence=[str(e) for e in evidence],
                   remediation={str(k): str(v) for k, v in remediation.items()},
                   within_grace=within_grace, grace_until=None if grace_until is None else float(grace_until))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _row_verdicts(check: Optional[CheckSpec], name: str, value: Any) -> List[Verdict]:
    """An error naming the rows of list fact ``name`` that do not have their declared shape; none when all do."""
    spec = check.fact(name) if check is not None else None
    if check is None or spec is None:
        return []
    problems = row_problems(check.id, spec, value)
    if not problems:
        return []
    return [("error", problems[0] if len(problems) == 1 else message("several", items=problems))]


def _param_row_verdicts(check: Optional[CheckSpec], param: str, facts: Mapping[str, Any]) -> List[Verdict]:
    """An error for the first list fact a parameter's judgement reads (`ParamSpec.reads`) whose rows do not
    have their declared shape: such rows are never read as if they did."""
    declared = check.param(param) if check is not None else None
    for name in declared.reads if declared is not None else ():
        verdicts = _row_verdicts(check, name, facts.get(name))
        if verdicts:
            return verdicts
    return []


def _judge_fact(check: Optional[CheckSpec], name: str, exp: Any, facts: Mapping[str, Any],
                outcome: Mapping[str, Any]) -> List[Verdict]:
    """Verdicts of one expectation on one fact: unknown (null), ill-typed values and rows that do not have
    their declared shape are errors, never guesses."""
    spec = check.fact(name) if check is not None else None
    fact_type = spec.type if spec is not None else "string"
    value = facts[name] if name in facts else (spec.absent if spec is not None else None)
    if value is None:
        return [("error", message("fact_unknown", fact=name, reason=unknown_reason(outcome)))]
    if not type_ok(fact_type, value) or (isinstance(value, float) and not math.isfinite(value)):
        return [("error", message("fact_bad_type", fact=name, expected=fact_type, found=type(value).__name__))]
    return _row_verdicts(check, name, value) or judge_expectation(fact_type, name, value, exp, facts)


def _other_check_fact(name: str, exp: Any, others: Mapping[str, Any], used: List[Tuple[str, Any]]
                      ) -> List[Verdict]:
    """A `when` on another check's fact ("vpn.tunnel_up"): judged on that check's outcome in the same report."""
    check_id, fact = name.split(".", 1)
    other = others.get(check_id)
    if not isinstance(other, Mapping) or other.get("state") != "ok" or not isinstance(other.get("facts"), Mapping):
        used.append((name, None))
        reason = unknown_reason(other) if isinstance(other, Mapping) else message("not_reported")
        return [("error", message("fact_unknown", fact=name, reason=reason))]
    used.append((name, other["facts"].get(fact)))
    return _judge_fact(SPECS.get(check_id), fact, exp, other["facts"], other)


def _precondition(rule: Rule, check: Optional[CheckSpec], facts: Mapping[str, Any],
                  outcome: Mapping[str, Any], platform: str,
                  used: List[Tuple[str, Any]], others: Optional[Mapping[str, Any]] = None) -> Optional[Verdict]:
    """None when the rule's `when` is met (or absent); else not_applicable, or error when it cannot be told.

    A condition that is known not to hold is enough to set the rule aside, even if another one is
    unknown; a warning band (which validation refuses in `when`) counts as met. A condition named
    ``check.fact`` is about another check of the same report (docs/policy.md).
    """
    unmet: List[Message] = []
    unknown: List[Verdict] = []
    for name, raw in rule.when.items():
        exp = expectation_for(raw, platform)
        if exp is None:
            continue  # no condition on this platform
        if "." in name:
            verdicts = _other_check_fact(name, exp, others or {}, used)
        else:
            used.append((name, facts.get(name)))
            verdicts = _judge_fact(check, name, exp, facts, outcome)
        if any(status == "fail" for status, _ in verdicts):
            unmet.extend(describe_expectation(name, exp))
        else:
            unknown.extend(v for v in verdicts if v[0] == "error")
    if unmet:
        notes = [message("when_not_met", condition=condition) for condition in unmet]
        return "not_applicable", notes[0] if len(notes) == 1 else message("several", items=notes)
    if unknown:
        return _combine(unknown)
    return None


def _combine(verdicts: List[Verdict]) -> Verdict:
    worst = max(_RANK[status] for status, _ in verdicts)
    status = next(s for s, _ in verdicts if _RANK[s] == worst)
    chosen = [m for s, m in verdicts if _RANK[s] == worst]
    return status, chosen[0] if len(chosen) == 1 else message("several", items=chosen)


def _evidence(outcome: Mapping[str, Any], used: List[Tuple[str, Any]]) -> List[str]:
    lines = [f"{name} = {_show(value)}" for name, value in used]
    raw = outcome.get("evidence")
    if isinstance(raw, list):
        lines.extend(str(item) for item in raw)
    return lines[:_MAX_EVIDENCE]


def evaluate_rule(rule: Rule, outcome: Any, platform: str, others: Optional[Mapping[str, Any]] = None,
                  ) -> Tuple[str, Message, List[str]]:
    """(status, message, evidence) of one rule against one check's outcome (``others``: the report's
    other outcomes, for `when` conditions on them), before grace."""
    if outcome is None:
        return "error", message("check_missing", check=rule.check), []
    if not isinstance(outcome, Mapping):
        return "error", message("facts_malformed", check=rule.check,
                                problem=f"expected an object, found {type(outcome).__name__}"), []
    state = outcome.get("state")
    if state == "error":
        return "error", message("check_error", check=rule.check, reason=unknown_reason(outcome)), \
            _evidence(outcome, [])
    if state == "not_applicable":
        return "not_applicable", message("check_not_applicable", reason=unknown_reason(outcome)), \
            _evidence(outcome, [])
    facts = outcome.get("facts")
    if state != "ok" or not isinstance(facts, Mapping):
        return "error", message("facts_malformed", check=rule.check,
                                problem=f"state {_show(state)} with facts of type {type(facts).__name__}"), []
    check = SPECS.get(rule.check)
    used: List[Tuple[str, Any]] = []
    precondition = _precondition(rule, check, facts, outcome, platform, used, others)
    if precondition is not None:
        return precondition[0], precondition[1], _evidence(outcome, used)
    verdicts: List[Verdict] = []
    for name, raw in rule.expect.items():
        exp = expectation_for(raw, platform)
        if exp is None:
            continue  # this expectation is about other platforms
        if name not in (seen for seen, _ in used):
            used.append((name, facts.get(name)))
        verdicts.extend(_judge_fact(check, name, exp, facts, outcome))
    for param, value in rule.params.items():
        judge = PARAM_OPERATORS.get(param)
        if judge is not None:
            verdicts.extend(_param_row_verdicts(check, param, facts) or judge(value, facts, outcome, used))
    if not verdicts:
        return "not_applicable", message("no_expectation_applies", platform=platform), _evidence(outcome, used)
    status, msg = _combine(verdicts)
    return status, msg, _evidence(outcome, used)


def evaluate(policy: Policy, facts: Mapping[str, Mapping[str, Any]], platform: str, now: float,
             failing_since: Optional[Mapping[str, float]] = None) -> List[Result]:
    """One Result per rule, in policy order.

    ``failing_since`` maps rule ids to the time they started failing. A fail within the rule's
    grace period becomes ``warn``; a rule absent from the mapping starts failing ``now``. Without
    a mapping (a one-off ``check``) there is no history, so failures are reported as they are.
    """
    results = []
    source = facts if isinstance(facts, Mapping) else {}
    for rule in policy.rules:
        try:
            status, msg, evidence = evaluate_rule(rule, source.get(rule.check), platform, source)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # Facts of a shape nobody foresaw (a number where a list belongs ...): an error result.
            status, msg, evidence = "error", message("facts_malformed", check=rule.check,
                                                     problem=f"{type(exc).__name__}: {exc}"), []
        grace_until: Optional[float] = None
        if status == "fail" and failing_since is not None and rule.grace_seconds > 0:
            since = failing_since.get(rule.id, now)
            if isinstance(since, (int, float)) and not isinstance(since, bool):
                until = float(since) + rule.grace_seconds
                if now < until:
                    status, msg, grace_until = "warn", message("within_grace", inner=msg, until=rfc3339(until)), until
        results.append(Result(rule_id=rule.id, check=rule.check, status=status, severity=rule.severity,
                              reason=render_en(msg), message=msg, evidence=evidence,
                              remediation=dict(rule.remediation), within_grace=grace_until is not None,
                              grace_until=grace_until))
    return results


def summarize(results: List[Result]) -> str:
    """compliant (no fail, no error) | not_compliant (any fail) | error (errors and no fail)."""
    statuses = {result.status for result in results}
    if "fail" in statuses:
        return "not_compliant"
    if "error" in statuses:
        return "error"
    return "compliant"
