"""The policy's operators: what each expectation key (and each judged rule parameter) means, in one table.

An expectation on a fact is a bare value (equality) or a mapping of operator keys ({min: 3, warn: 5},
{in: [...]}, {min: "14.0", min_build: 22631}). ``EXPECTATION_OPERATORS`` declares, per operator, the
fact types it applies to, the keys it reads, how it judges a value and how it reads as a `when` condition;
the evaluator (agent.policy.evaluate) dispatches on it and knows no operator by name. ``PARAM_OPERATORS``
declares the rule parameters the evaluator verifies against the facts (the VPN rule's corporate networks).
Pure: no I/O, never raises on odd facts (each verdict says what it saw).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.policy.messages import TEMPLATES_EN, Message, is_message, message

Verdict = Tuple[str, Message]
# (fact name, value, the expectation mapping or bare value, all facts of the check) -> verdicts
Judge = Callable[[str, Any, Any, Mapping[str, Any]], List[Verdict]]
# (fact name, expectation) -> the condition in words, one message per bound
Words = Callable[[str, Any], List[Message]]
# (the parameter's value, the check's facts, the check's outcome, facts used so far (evidence, appended to))
ParamJudge = Callable[[Any, Mapping[str, Any], Mapping[str, Any], List[Tuple[str, Any]]], List[Verdict]]


class Unreadable(Exception):
    """An operator cannot read the fact's value at all (a version with no digits): the expectation is
    this one error, and the operators after it are not asked."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict[1].get("key"))
        self.verdict = verdict


@dataclass(frozen=True)
class Operator:
    """One expectation operator. ``keys`` empty: it takes the bare value (equality), only when no
    operator with keys matches; otherwise it runs when the expectation mapping has any of ``keys``."""

    name: str
    types: Tuple[str, ...]
    keys: Tuple[str, ...]
    judge: Judge
    words: Words


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


def _equal(fact: str, value: Any, exp: Any, facts: Mapping[str, Any]) -> List[Verdict]:
    return [("pass", message("eq_pass", fact=fact, value=value)) if value == exp
            else ("fail", message("eq_fail", fact=fact, value=value, expected=exp))]


def _equal_words(fact: str, exp: Any) -> List[Message]:
    return [message("when_eq", fact=fact, expected=exp)]


def _one_of(fact: str, value: Any, exp: Mapping[str, Any], facts: Mapping[str, Any]) -> List[Verdict]:
    allowed = list(exp["in"])
    return [("pass", message("eq_pass", fact=fact, value=value)) if value in allowed
            else ("fail", message("in_fail", fact=fact, value=value, allowed=allowed))]


def _one_of_words(fact: str, exp: Mapping[str, Any]) -> List[Message]:
    return [message("when_in", fact=fact, allowed=list(exp["in"]))]


def _number_range(fact: str, value: Any, exp: Mapping[str, Any], facts: Mapping[str, Any]) -> List[Verdict]:
    low, high, warn = exp.get("min"), exp.get("max"), exp.get("warn")
    if high is not None and value > high:
        return [("fail", message("max_fail", fact=fact, value=value, max=high))]
    if low is not None and value < low:
        return [("fail", message("min_fail", fact=fact, value=value, min=low))]
    if warn is not None and high is not None and value > warn:
        return [("warn", message("max_warn", fact=fact, value=value, warn=warn, max=high))]
    if warn is not None and low is not None and value < warn:
        return [("warn", message("min_warn", fact=fact, value=value, warn=warn, min=low))]
    if high is not None:
        return [("pass", message("max_pass", fact=fact, value=value, max=high))]
    return [("pass", message("min_pass", fact=fact, value=value, min=low))]


def _bounds_words(fact: str, exp: Mapping[str, Any]) -> List[Message]:
    words = [message("when_min", fact=fact, min=exp["min"])] if "min" in exp else []
    if "max" in exp:
        words.append(message("when_max", fact=fact, max=exp["max"]))
    return words


def _version_range(fact: str, value: Any, exp: Mapping[str, Any], facts: Mapping[str, Any]) -> List[Verdict]:
    have = version_tuple(value)
    if have is None:
        raise Unreadable(("error", message("version_unparsable", fact=fact, value=value)))
    verdicts: List[Verdict] = []
    if "min" in exp:
        ok = _compare_versions(have, version_tuple(exp["min"]) or (0,)) >= 0
        verdicts.append(("pass", message("min_pass", fact=fact, value=value, min=exp["min"])) if ok
                        else ("fail", message("min_fail", fact=fact, value=value, min=exp["min"])))
    if "max" in exp:
        ok = _compare_versions(have, version_tuple(exp["max"]) or (0,)) <= 0
        verdicts.append(("pass", message("max_pass", fact=fact, value=value, max=exp["max"])) if ok
                        else ("fail", message("version_max_fail", fact=fact, value=value, max=exp["max"])))
    return verdicts


def _windows_build(fact: str, value: Any, exp: Mapping[str, Any], facts: Mapping[str, Any]) -> List[Verdict]:
    """Windows: the build is its own fact where the check reports it, else the third part of the version."""
    build = facts.get("os_build_number")
    if not isinstance(build, int) or isinstance(build, bool):
        parts = version_tuple(value)
        build = parts[2] if parts is not None and len(parts) >= 3 else None
    if build is None:
        return [("error", message("fact_unknown", fact="os_build_number", reason="no build number in the facts"))]
    if build >= exp["min_build"]:
        return [("pass", message("build_pass", value=build, min=exp["min_build"]))]
    return [("fail", message("build_fail", value=build, min=exp["min_build"]))]


def _build_words(fact: str, exp: Mapping[str, Any]) -> List[Message]:
    return [message("when_build", min=exp["min_build"])]


# In dispatch order: a fact type's operators run in this order, their verdicts in this order.
EXPECTATION_OPERATORS: Tuple[Operator, ...] = (
    Operator("version_range", ("version",), ("min", "max"), _version_range, _bounds_words),
    Operator("windows_build", ("version",), ("min_build",), _windows_build, _build_words),
    Operator("number_range", ("int", "number"), ("min", "max", "warn"), _number_range, _bounds_words),
    Operator("one_of", ("string", "bool"), ("in",), _one_of, _one_of_words),
    Operator("equal", ("string", "bool", "int", "number"), (), _equal, _equal_words),
)


def operators_for(fact_type: str) -> Tuple[Operator, ...]:
    return _BY_TYPE.get(fact_type, _BY_TYPE["string"])


_BY_TYPE: Dict[str, Tuple[Operator, ...]] = {
    fact_type: tuple(op for op in EXPECTATION_OPERATORS if fact_type in op.types)
    for fact_type in {t for op in EXPECTATION_OPERATORS for t in op.types}}


def operator_keys(fact_type: str) -> Tuple[str, ...]:
    """The expectation keys a fact type takes, in declared order (what validation accepts)."""
    keys: List[str] = []
    for op in operators_for(fact_type):
        keys.extend(key for key in op.keys if key not in keys)
    return tuple(keys)


def judge_expectation(fact_type: str, fact: str, value: Any, exp: Any, facts: Mapping[str, Any]) -> List[Verdict]:
    """Verdicts of one expectation on a known, well-typed value: every operator of the fact type whose
    keys the expectation names, in declared order; the keyless operator when none does."""
    ops = operators_for(fact_type)
    verdicts: List[Verdict] = []
    matched = False
    if isinstance(exp, Mapping):
        for op in ops:
            if op.keys and any(key in exp for key in op.keys):
                matched = True
                try:
                    verdicts.extend(op.judge(fact, value, exp, facts))
                except Unreadable as unreadable:
                    return [unreadable.verdict]
    if not matched:
        for op in ops:
            if not op.keys:
                return op.judge(fact, value, exp, facts)
    return verdicts


def describe_expectation(fact: str, exp: Any) -> List[Message]:
    """A `when` expectation in words ("anti-malware running is yes"), one message per bound, in declared
    order (validation has checked the keys against the fact's type)."""
    if not isinstance(exp, Mapping):
        return _equal_words(fact, exp)
    words: List[Message] = []
    said: List[Words] = []
    for op in EXPECTATION_OPERATORS:
        if op.keys and op.words not in said and any(key in exp for key in op.keys):
            said.append(op.words)
            words.extend(op.words(fact, exp))
    return words


def unknown_reason(outcome: Mapping[str, Any]) -> Any:
    """The check's own reason: its message when it has one this catalog knows (renderers translate it),
    else its English text (reports of older agents, keys of newer ones), else a translatable "not reported"."""
    msg: Any = outcome.get("message")
    if is_message(msg) and msg["key"] in TEMPLATES_EN:
        return {"key": msg["key"], "params": dict(msg["params"])}
    reason = outcome.get("reason")
    return str(reason) if reason else message("not_reported")


def _corporate_networks(value: Any, facts: Mapping[str, Any], outcome: Mapping[str, Any],
                        used: List[Tuple[str, Any]]) -> List[Verdict]:
    """Every listed network must appear in the VPN facts and be routed through a tunnel."""
    if not isinstance(value, list) or not value:
        return []
    networks = list(value)
    via_all = facts.get("corporate_networks_via_tunnel")
    used.append(("corporate_networks_via_tunnel", via_all))
    routes = facts.get("corporate_routes")
    if routes is None:
        return [("error", message("fact_unknown", fact="corporate_routes", reason=unknown_reason(outcome)))]
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
                                              reason=unknown_reason(outcome))))
        else:
            verdicts.append(("fail", message("networks_not_via_tunnel")))
    if not verdicts:
        verdicts.append(("pass", message("networks_pass", networks=networks)))
    return verdicts


# Rule parameters the evaluator verifies against the check's facts (validation admits a parameter only
# where the check declares it: corporate_networks belongs to the VPN check). Others only feed collectors.
PARAM_OPERATORS: Mapping[str, ParamJudge] = {
    "corporate_networks": _corporate_networks,
}
