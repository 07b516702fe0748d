"""Evaluation: facts (a report's "facts" object) + policy -> one Result per rule. Pure, never raises.

Per rule: a check that errored gives ``error`` with its reason; a check that does not apply gives
``not_applicable``; a rule whose ``when`` precondition is not met gives ``not_applicable``; a fact
the rule needs that is null or missing gives ``error`` ("unknown"), never a guess; otherwise the
worst verdict of the rule's expectations (fail > error > warn > pass). A failure younger than the
rule's grace period (``failing_since``) is reported as ``warn``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.declarations import CheckSpec, row_problems, type_ok
from agent.checks.specs import SPECS
from agent.policy.messages import TEMPLATES_EN, Message, is_message, message, render_en
from agent.policy.model import STATUSES, Policy, Rule, expectation_for
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

    def to_json(self) -> Dict[str, Any]:
        return {**self.to_report_json(), "evidence": list(self.evidence), "remediation": dict(self.remediation)}

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
        return cls(rule_id=data["rule_id"], check=data["check"], status=data["status"],
                   severity=data["severity"], reason=data["reason"],
                   message={"key": msg["key"], "params": dict(msg.get("params") or {})},
                   evidence=[str(e) for e in evidence],
                   remediation={str(k): str(v) for k, v in remediation.items()})


Verdict = Tuple[str, Message]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def version_tuple(text: Any) -> Optional[Tuple[int, ...]]:
    """(14, 5) from "14.5", (10, 0, 22631) from "10.0.22631"; a part's leading digits count ("24.04.1-LTS")."""
    if not isinstance(text, str) or not text.strip():
        return None
    parts = []
    for piece in text.strip().split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group(0)))
        if match.end() != len(piece):
            break
    return tuple(parts) if parts else None


def _compare_versions(left: Tuple[int, ...], right: Tuple[int, ...]) -> int:
    width = max(len(left), len(right))
    a = left + (0,) * (width - len(left))
    b = right + (0,) * (width - len(right))
    return (a > b) - (a < b)


def _judge_number(fact: str, value: Any, exp: Any) -> Verdict:
    if not isinstance(exp, Mapping):
        return ("pass", message("eq_pass", fact=fact, value=value)) if value == exp \
            else ("fail", message("eq_fail", fact=fact, value=value, expected=exp))
    low, high, warn = exp.get("min"), exp.get("max"), exp.get("warn")
    if high is not None and value > high:
        return "fail", message("max_fail", fact=fact, value=value, max=high)
    if low is not None and value < low:
        return "fail", message("min_fail", fact=fact, value=value, min=low)
    if warn is not None and high is not None and value > warn:
        return "warn", message("max_warn", fact=fact, value=value, warn=warn, max=high)
    if warn is not None and low is not None and value < warn:
        return "warn", message("min_warn", fact=fact, value=value, warn=warn, min=low)
    if high is not None:
        return "pass", message("max_pass", fact=fact, value=value, max=high)
    return "pass", message("min_pass", fact=fact, value=value, min=low)


def _judge_version(fact: str, value: Any, exp: Mapping[str, Any], facts: Mapping[str, Any]) -> List[Verdict]:
    verdicts: List[Verdict] = []
    if "min" in exp or "max" in exp:
        have = version_tuple(value)
        if have is None:
            return [("error", message("version_unparsable", fact=fact, value=value))]
        if "min" in exp:
            want = version_tuple(exp["min"]) or (0,)
            ok = _compare_versions(have, want) >= 0
            verdicts.append(("pass", message("min_pass", fact=fact, value=value, min=exp["min"])) if ok
                            else ("fail", message("min_fail", fact=fact, value=value, min=exp["min"])))
        if "max" in exp:
            want = version_tuple(exp["max"]) or (0,)
            ok = _compare_versions(have, want) <= 0
            verdicts.append(("pass", message("max_pass", fact=fact, value=value, max=exp["max"])) if ok
                            else ("fail", message("version_max_fail", fact=fact, value=value, max=exp["max"])))
    if "min_build" in exp:
        # Windows: the build is its own fact where the check reports it, else the third part of the version.
        build = facts.get("os_build_number")
        if not isinstance(build, int) or isinstance(build, bool):
            parts = version_tuple(value)
            build = parts[2] if parts is not None and len(parts) >= 3 else None
        if build is None:
            verdicts.append(("error", message("fact_unknown", fact="os_build_number",
                                              reason="no build number in the facts")))
        elif build >= exp["min_build"]:
            verdicts.append(("pass", message("build_pass", value=build, min=exp["min_build"])))
        else:
            verdicts.append(("fail", message("build_fail", value=build, min=exp["min_build"])))
    return verdicts


def _judge(fact_type: str, fact: str, value: Any, exp: Any, facts: Mapping[str, Any]) -> List[Verdict]:
    if fact_type == "version":
        return _judge_version(fact, value, exp, facts)
    if fact_type in ("int", "number"):
        return [_judge_number(fact, value, exp)]
    if isinstance(exp, Mapping) and "in" in exp:
        allowed = list(exp["in"])
        return [("pass", message("eq_pass", fact=fact, value=value)) if value in allowed
                else ("fail", message("in_fail", fact=fact, value=value, allowed=allowed))]
    return [("pass", message("eq_pass", fact=fact, value=value)) if value == exp
            else ("fail", message("eq_fail", fact=fact, value=value, expected=exp))]


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
        return [("error", message("fact_unknown", fact=name, reason=_unknown_reason(outcome)))]
    if not type_ok(fact_type, value) or (isinstance(value, float) and not math.isfinite(value)):
        return [("error", message("fact_bad_type", fact=name, expected=fact_type, found=type(value).__name__))]
    return _row_verdicts(check, name, value) or _judge(fact_type, name, value, exp, facts)


def _conditions(fact: str, exp: Any) -> List[Message]:
    """A `when` expectation in words ("anti-malware running is yes"), one message per bound."""
    if not isinstance(exp, Mapping):
        return [message("when_eq", fact=fact, expected=exp)]
    if "in" in exp:
        return [message("when_in", fact=fact, allowed=list(exp["in"]))]
    words = [message("when_min", fact=fact, min=exp["min"])] if "min" in exp else []
    if "max" in exp:
        words.append(message("when_max", fact=fact, max=exp["max"]))
    if "min_build" in exp:
        words.append(message("when_build", min=exp["min_build"]))
    return words


def _other_check_fact(name: str, exp: Any, others: Mapping[str, Any], used: List[Tuple[str, Any]]
                      ) -> List[Verdict]:
    """A `when` on another check's fact ("vpn.tunnel_up"): judged on that check's outcome in the same report."""
    check_id, fact = name.split(".", 1)
    other = others.get(check_id)
    if not isinstance(other, Mapping) or other.get("state") != "ok" or not isinstance(other.get("facts"), Mapping):
        used.append((name, None))
        reason = _unknown_reason(other) if isinstance(other, Mapping) else message("not_reported")
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
            unmet.extend(_conditions(name, exp))
        else:
            unknown.extend(v for v in verdicts if v[0] == "error")
    if unmet:
        notes = [message("when_not_met", condition=condition) for condition in unmet]
        return "not_applicable", notes[0] if len(notes) == 1 else message("several", items=notes)
    if unknown:
        return _combine(unknown)
    return None


def _unknown_reason(outcome: Mapping[str, Any]) -> Any:
    """The check's own reason: its message when it has one this catalog knows (renderers translate it),
    else its English text (reports of older agents, keys of newer ones), else a translatable "not reported"."""
    msg: Any = outcome.get("message")
    if is_message(msg) and msg["key"] in TEMPLATES_EN:
        return {"key": msg["key"], "params": dict(msg["params"])}
    reason = outcome.get("reason")
    return str(reason) if reason else message("not_reported")


def _judge_corporate_networks(networks: List[str], facts: Mapping[str, Any],
                              outcome: Mapping[str, Any]) -> List[Verdict]:
    """Every listed network must appear in the VPN facts and be routed through a tunnel."""
    via_all = facts.get("corporate_networks_via_tunnel")
    routes = facts.get("corporate_routes")
    if routes is None:
        return [("error", message("fact_unknown", fact="corporate_routes", reason=_unknown_reason(outcome)))]
    if not isinstance(routes, list):
        return [("error", message("fact_bad_type", fact="corporate_routes", expected="list",
                                  found=type(routes).__name__))]
    by_network: Dict[str, Mapping[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Mapping):
            continue
        try:
            by_network[str(ipaddress.ip_network(str(route.get("network")), strict=False))] = route
        except ValueError:
            continue
    verdicts: List[Verdict] = []
    for network in networks:
        route = by_network.get(network)
        if route is None:
            verdicts.append(("error", message("network_not_measured", network=network)))
        elif route.get("via_tunnel") is not True:
            verdicts.append(("fail", message("network_not_via_tunnel", network=network,
                                             interface=route.get("interface") or "?")))
    if not verdicts and via_all is not True:
        # The per-network facts say yes but the summary fact does not: trust neither.
        if via_all is None:
            verdicts.append(("error", message("fact_unknown", fact="corporate_networks_via_tunnel",
                                              reason=_unknown_reason(outcome))))
        else:
            verdicts.append(("fail", message("networks_not_via_tunnel")))
    if not verdicts:
        verdicts.append(("pass", message("networks_pass", networks=networks)))
    return verdicts


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
        return "error", message("check_error", check=rule.check, reason=_unknown_reason(outcome)), \
            _evidence(outcome, [])
    if state == "not_applicable":
        return "not_applicable", message("check_not_applicable", reason=_unknown_reason(outcome)), \
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
    networks = rule.params.get("corporate_networks")
    if rule.check == "vpn" and isinstance(networks, list) and networks:
        used.append(("corporate_networks_via_tunnel", facts.get("corporate_networks_via_tunnel")))
        verdicts.extend(_param_row_verdicts(check, "corporate_networks", facts)
                        or _judge_corporate_networks(list(networks), facts, outcome))
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
        if status == "fail" and failing_since is not None and rule.grace_seconds > 0:
            since = failing_since.get(rule.id, now)
            if isinstance(since, (int, float)) and not isinstance(since, bool):
                until = float(since) + rule.grace_seconds
                if now < until:
                    status, msg = "warn", message("within_grace", inner=msg, until=rfc3339(until))
        results.append(Result(rule_id=rule.id, check=rule.check, status=status, severity=rule.severity,
                              reason=render_en(msg), message=msg, evidence=evidence,
                              remediation=dict(rule.remediation)))
    return results


def summarize(results: List[Result]) -> str:
    """compliant (no fail, no error) | not_compliant (any fail) | error (errors and no fail)."""
    statuses = {result.status for result in results}
    if "fail" in statuses:
        return "not_compliant"
    if "error" in statuses:
        return "error"
    return "compliant"
