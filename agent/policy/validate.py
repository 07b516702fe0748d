"""Validation of policy documents against the check declarations; every problem names its line.

The declarations in agent/checks/<family>/spec.py (agent.checks.specs) are the only source of what a policy may
say: a check id must be registered, an expectation must name a declared fact, and its form must
suit the fact's type. Nothing here is a second copy of the fact list.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec
from agent.checks.os_identity import lifecycle
from agent.checks.specs import SPECS
from agent.policy.loader import LineMap, Path_
from agent.policy.model import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVALS,
    LADDER_ACTIONS,
    LANGUAGES,
    MAX_LADDER_OFFSET_SECONDS,
    PLATFORM_DEFAULT,
    POLICY_SCHEMA,
    SEVERITIES,
    LadderStep,
    Policy,
    Rule,
    is_platform_keyed,
)
from agent.policy.operators import operator_keys
from common.settings import duration_seconds

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_PATTERN = re.compile(r"^\d+(\.\d+)*$")

# Every key is carried by Policy.to_json(): a key the model would drop is refused, not ignored.
TOP_KEYS = ("schema", "id", "version", "title", "intervals", "rules", "actions")
RULE_KEYS = ("id", "check", "severity", "grace", "when", "expect", "params", "title", "remediation", "references")
# The bounds each fact type takes, from the operator table the evaluator dispatches on.
NUMBER_KEYS = operator_keys("number")
VERSION_KEYS = operator_keys("version")
MAX_INTERVAL_SECONDS = 30 * 86400


def parse_duration(value: Any) -> Optional[int]:
    """Whole seconds from a duration (``72h``, ``7d``, ``30m``, ``90s``, ``2w``, ``1.5h`` or plain seconds, the
    grammar every setting uses); None if it is not one or not a whole number of seconds."""
    try:
        seconds = duration_seconds(value)
    except ValueError:
        return None
    return int(seconds) if seconds.is_integer() else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Validator:
    def __init__(self, lines: LineMap) -> None:
        self.lines = lines
        self.problems: List[str] = []
        self._ordered: List[Tuple[int, int, str]] = []

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(self.lines.at(path, message))
        self._ordered.append((self.lines.line(path), len(self._ordered), self.problems[-1]))

    def sorted_problems(self) -> List[str]:
        """Problems in the order of their lines, as an editor shows them."""
        return [text for _, _, text in sorted(self._ordered)]

    # -- pieces ------------------------------------------------------------------------------
    def texts(self, doc: Mapping[str, Any], key: str, path: Path_, what: str) -> Dict[str, str]:
        value = doc.get(key)
        here = path + (key,)
        if value is None:
            self.problem(path, f"{what}: missing `{key}` (give it in {', '.join(LANGUAGES)})")
            return {}
        if isinstance(value, str):
            self.problem(here, f"{what}: `{key}` must give every language ({', '.join(LANGUAGES)}), "
                               f"e.g. {key}: {{en: ..., fr: ..., ar: ...}}; found a single string")
            return {}
        if not isinstance(value, dict):
            self.problem(here, f"{what}: `{key}` must be a mapping of language to text, found {_kind(value)}")
            return {}
        out: Dict[str, str] = {}
        for lang in LANGUAGES:
            text = value.get(lang)
            if not isinstance(text, str) or not text.strip():
                self.problem(here + ((lang,) if lang in value else ()),
                             f"{what}: `{key}` lacks the {lang!r} text" if lang not in value
                             else f"{what}: `{key}.{lang}` must be non-empty text, found {_kind(text)}")
            else:
                out[lang] = text.strip()
        for lang, text in value.items():
            if lang in LANGUAGES:
                continue
            if not re.match(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$", lang) or not isinstance(text, str):
                self.problem(here + (lang,), f"{what}: `{key}` has {lang!r}, which is not a language code "
                                             "with a text (en, fr, ar ...)")
            else:
                out[lang] = text.strip()
        return out

    def intervals(self, value: Any) -> Dict[str, int]:
        out = dict(DEFAULT_INTERVALS)
        if value is None:
            return out
        if not isinstance(value, dict):
            self.problem(("intervals",), f"`intervals` must be a mapping, found {_kind(value)}")
            return out
        for name, raw in value.items():
            path: Path_ = ("intervals", name)
            if name not in DEFAULT_INTERVALS:
                self.problem(path, f"unknown interval {name!r}; known: {', '.join(DEFAULT_INTERVALS)}")
                continue
            seconds = parse_duration(raw)
            if seconds is None or not 10 <= seconds <= MAX_INTERVAL_SECONDS:
                self.problem(path, f"interval {name} must be between 10 seconds and 30 days "
                                   f"(seconds, or like 300s, 5m, 1h), found {raw!r}")
                continue
            out[name] = seconds
        return out

    def actions(self, value: Any, path: Path_ = ("actions",)) -> Dict[str, Tuple[LadderStep, ...]]:
        """The noncompliance ladder: {severity: [{after: 24h, do: notify_team}, ...]} (docs/actions.md)."""
        out: Dict[str, Tuple[LadderStep, ...]] = {}
        if value is None:
            return out
        if not isinstance(value, dict):
            self.problem(path, f"`actions` must be a mapping of severity to a list of steps, found {_kind(value)}")
            return out
        for severity, steps in value.items():
            here = path + (severity,)
            if severity not in SEVERITIES:
                self.problem(here, f"actions: unknown severity {severity!r}; one of {', '.join(SEVERITIES)}")
                continue
            if not isinstance(steps, list):
                self.problem(here, f"actions.{severity} must be a list of steps like "
                                   f"{{after: 24h, do: notify_team}}, found {_kind(steps)}")
                continue
            parsed: List[LadderStep] = []
            for index, step in enumerate(steps):
                at = here + (index,)
                if not isinstance(step, dict) or set(step) != {"after", "do"}:
                    self.problem(at, f"actions.{severity} step #{index + 1} must be {{after: DURATION, do: ACTION}}, "
                                     f"found {step!r}")
                    continue
                after = parse_duration(step["after"])
                if after is None or after > MAX_LADDER_OFFSET_SECONDS:
                    self.problem(at + ("after",), f"actions.{severity} step #{index + 1}: `after` must be a "
                                                  f"duration like 0s, 30m, 24h, 7d (at most a year), "
                                                  f"found {step['after']!r}")
                    continue
                action = step["do"]
                if action not in LADDER_ACTIONS:
                    self.problem(at + ("do",), f"actions.{severity} step #{index + 1}: unknown action {action!r}; "
                                               f"one of {', '.join(LADDER_ACTIONS)}")
                    continue
                if parsed and after < parsed[-1].after:
                    self.problem(at + ("after",), f"actions.{severity} step #{index + 1}: steps must be in order "
                                                  f"of `after`; {step['after']!r} comes before the previous step")
                    continue
                if any(earlier.action == action for earlier in parsed):
                    self.problem(at + ("do",), f"actions.{severity} step #{index + 1}: {action} is already a "
                                               "step of this ladder")
                    continue
                parsed.append(LadderStep(after, str(action)))
            if parsed:
                out[severity] = tuple(parsed)
        return out

    # -- expectations ------------------------------------------------------------------------
    def expectation(self, spec: CheckSpec, fact: FactSpec, value: Any, path: Path_,
                    platform: Optional[str] = None, condition: bool = False) -> None:
        """One fact's expectation; ``condition`` for a `when` precondition (met or not: no `warn`)."""
        where = f"{spec.id}.{fact.name}" + (f" on {platform}" if platform else "")
        if platform is None and is_platform_keyed(value):
            named = [plat for plat in value if plat != PLATFORM_DEFAULT]
            if not named:
                self.problem(path, f"{where}: `{PLATFORM_DEFAULT}` alone names no platform; write the "
                                   f"expectation directly, or name platforms ({', '.join(PLATFORMS)}) beside it")
            elif PLATFORM_DEFAULT in value and len(named) == len(PLATFORMS):
                self.problem(path + (PLATFORM_DEFAULT,), f"{where}: `{PLATFORM_DEFAULT}` is never used: every "
                                                         f"platform ({', '.join(PLATFORMS)}) is named")
            for plat, sub in value.items():
                label = "other platforms" if plat == PLATFORM_DEFAULT else plat
                self.expectation(spec, fact, sub, path + (plat,), label, condition)
            return
        ftype = fact.type
        if ftype == "bool":
            if not isinstance(value, bool):
                self.problem(path, f"{where} is a boolean fact: expect true or false, found {_kind(value)}"
                             + (" (min/max/warn only apply to numbers)" if isinstance(value, dict) else ""))
        elif ftype == "string":
            if isinstance(value, str):
                return
            if isinstance(value, dict) and set(value) == {"in"}:
                allowed = value["in"]
                if not isinstance(allowed, list) or not allowed or not all(isinstance(a, str) for a in allowed):
                    self.problem(path + ("in",), f"{where}: `in` must be a non-empty list of strings")
                return
            self.problem(path, f"{where} is a string fact: expect a string or {{in: [...]}}, found {_kind(value)}")
        elif ftype in ("int", "number"):
            if condition and isinstance(value, dict) and "warn" in value:
                self.problem(path + ("warn",), f"{where}: `warn` has no meaning in `when` (a condition is met "
                                               "or not); keep min and/or max")
                return
            self.number_expectation(where, ftype, value, path)
        elif ftype == "version":
            self.version_expectation(where, value, path)
        else:
            self.problem(path, f"{where} is a {ftype} fact: policies cannot set expectations on it "
                               "(use one of the check's boolean or numeric facts)")

    def number_expectation(self, where: str, ftype: str, value: Any, path: Path_) -> None:
        if _is_number(value):
            if ftype == "int" and not isinstance(value, int):
                self.problem(path, f"{where} is an integer fact: expect a whole number, found {value!r}")
            return
        if not isinstance(value, dict):
            self.problem(path, f"{where} is a numeric fact: expect a number or {{max: N, warn: N}} / "
                               f"{{min: N, warn: N}}, found {_kind(value)}")
            return
        unknown = [k for k in value if k not in NUMBER_KEYS]
        for key in unknown:
            self.problem(path + (key,), f"{where}: unknown bound {key!r}; a numeric fact takes min, max, warn")
        for key in NUMBER_KEYS:
            if key in value and not _is_number(value[key]):
                self.problem(path + (key,), f"{where}: `{key}` must be a number, found {_kind(value[key])}")
                return
        if unknown:
            return
        low, high, warn = value.get("min"), value.get("max"), value.get("warn")
        if low is None and high is None:
            self.problem(path, f"{where}: give `max` or `min` (with an optional `warn` threshold)")
            return
        if low is not None and high is not None and low > high:
            self.problem(path, f"{where}: min {low} is above max {high}")
        if warn is not None:
            if low is not None and high is not None:
                self.problem(path + ("warn",), f"{where}: `warn` is ambiguous with both min and max; keep one bound")
            elif high is not None and not warn < high:
                self.problem(path + ("warn",), f"{where}: warn {warn} must be below max {high} "
                                               "(values above warn and up to max are a warning)")
            elif low is not None and not warn > low:
                self.problem(path + ("warn",), f"{where}: warn {warn} must be above min {low} "
                                               "(values below warn and down to min are a warning)")

    def version_expectation(self, where: str, value: Any, path: Path_) -> None:
        if not isinstance(value, dict):
            self.problem(path, f"{where} is a version fact: expect {{min: \"14.0\"}}, {{min_build: 19045}} or "
                               f"one of those per platform (linux/darwin/windows), found {_kind(value)}")
            return
        if not value:
            self.problem(path, f"{where}: empty version expectation")
        for key, bound in value.items():
            if key not in VERSION_KEYS:
                self.problem(path + (key,), f"{where}: unknown bound {key!r}; a version fact takes "
                                            f"{', '.join(VERSION_KEYS)}")
            elif key == "min_build":
                if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                    self.problem(path + (key,), f"{where}: min_build must be a whole build number, found {bound!r}")
            elif not isinstance(bound, str) or not VERSION_PATTERN.match(bound):
                hint = " (quote versions: \"14.10\" and 14.10 differ)" if _is_number(bound) else ""
                self.problem(path + (key,), f"{where}: {key} must be a dotted version string like \"14.0\", "
                                            f"found {bound!r}{hint}")

    # -- params --------------------------------------------------------------------------------
    def params(self, spec: CheckSpec, value: Any, path: Path_) -> Dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(path, f"`params` must be a mapping, found {_kind(value)}")
            return {}
        out: Dict[str, Any] = {}
        for name, raw in value.items():
            param = spec.param(name)
            here = path + (name,)
            if param is None:
                known = ", ".join(p.name for p in spec.params) or "none"
                self.problem(here, f"check {spec.id} has no parameter {name!r} (its parameters: {known})")
                continue
            if param.type == "cidr_list":
                if not isinstance(raw, list) or not raw:
                    self.problem(here, f"{spec.id}.{name} must be a non-empty list of networks in CIDR "
                                       f"notation, found {_kind(raw)}")
                    continue
                networks = []
                for index, item in enumerate(raw):
                    try:
                        networks.append(str(ipaddress.ip_network(str(item), strict=False)))
                    except ValueError:
                        self.problem(here + (index,), f"{spec.id}.{name}: {item!r} is not a network in CIDR "
                                                      "notation (like 10.20.0.0/16)")
                out[name] = networks
            elif param.type == "os_lifecycle":
                try:
                    lifecycle.parse_table(raw, f"{spec.id}.{name}")
                except ValueError as exc:
                    self.problem(here, str(exc))
                    continue
                out[name] = raw
            else:
                out[name] = raw
        return out

    # -- rules ---------------------------------------------------------------------------------
    def rule(self, raw: Any, index: int) -> Optional[Rule]:
        path: Path_ = ("rules", index)
        if not isinstance(raw, dict):
            self.problem(path, f"rule #{index + 1} must be a mapping, found {_kind(raw)}")
            return None
        before = len(self.problems)
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not ID_PATTERN.match(rule_id):
            self.problem(path + (("id",) if "id" in raw else ()),
                         f"rule #{index + 1}: `id` must be lowercase letters, digits, '.', '_' or '-', "
                         f"found {rule_id!r}")
            rule_id = f"#{index + 1}"
        what = f"rule {rule_id}"
        for key in raw:
            if key not in RULE_KEYS:
                self.problem(path + (key,), f"{what}: unknown key {key!r}; a rule has {', '.join(RULE_KEYS)}")
        check_id = raw.get("check")
        spec = SPECS.get(check_id) if isinstance(check_id, str) else None
        if spec is None:
            self.problem(path + (("check",) if "check" in raw else ()),
                         f"{what}: unknown check {check_id!r}; known checks: {', '.join(sorted(SPECS))}")
        severity = raw.get("severity")
        if severity not in SEVERITIES:
            self.problem(path + (("severity",) if "severity" in raw else ()),
                         f"{what}: severity must be one of {', '.join(SEVERITIES)}, found {severity!r}")
            severity = "high"
        grace = DEFAULT_GRACE_SECONDS[severity]
        if "grace" in raw:
            parsed = parse_duration(raw["grace"])
            if parsed is None or parsed > 365 * 86400:
                self.problem(path + ("grace",), f"{what}: grace must be a duration like 0h, 24h, 72h, 7d "
                                                f"(at most a year), found {raw['grace']!r}")
            else:
                grace = parsed
        params: Dict[str, Any] = {}
        if "params" in raw and spec is not None:
            params = self.params(spec, raw["params"], path + ("params",))
        for param in spec.params if spec is not None else ():
            if param.required and param.name not in params and not (
                    isinstance(raw.get("params"), dict) and param.name in raw["params"]):
                self.problem(path, f"{what}: missing params: {param.name} ({param.description}); "
                                   f"{param.required}")
        expect = raw.get("expect")
        if expect is None:
            expect = {}
            if not params:
                self.problem(path, f"{what}: missing `expect` (fact: expectation, e.g. tunnel_up: true)")
        elif not isinstance(expect, dict):
            self.problem(path + ("expect",), f"{what}: `expect` must be a mapping of fact to expectation, "
                                             f"found {_kind(expect)}")
            expect = {}
        elif not expect and not params:
            self.problem(path + ("expect",), f"{what}: `expect` is empty: the rule would check nothing")
        when = raw.get("when")
        if when is None:
            when = {}
        elif not isinstance(when, dict):
            self.problem(path + ("when",), f"{what}: `when` must be a mapping of fact to expectation (the "
                                           f"rule applies only where they are met), found {_kind(when)}")
            when = {}
        elif not when:
            self.problem(path + ("when",), f"{what}: `when` is empty: give a condition (e.g. running: true) "
                                           "or remove it")
        if spec is not None:
            self.fact_expectations(spec, what, when, path + ("when",), condition=True)
            self.fact_expectations(spec, what, expect, path + ("expect",))
        title = self.texts(raw, "title", path, what)
        remediation = self.texts(raw, "remediation", path, what)
        references = raw.get("references", [])
        if not isinstance(references, list) or not all(isinstance(r, str) and r.strip() for r in references):
            self.problem(path + ("references",), f"{what}: `references` must be a list of texts")
            references = []
        if len(self.problems) > before or spec is None:
            return None
        return Rule(id=rule_id, check=spec.id, severity=str(severity), grace_seconds=grace, expect=expect,
                    title=title, remediation=remediation, references=tuple(r.strip() for r in references),
                    params=params, when=when)

    def fact_expectations(self, spec: CheckSpec, what: str, expectations: Mapping[str, Any], path: Path_,
                          condition: bool = False) -> None:
        """`expect` or `when`: each key a declared fact of the rule's check, each value a form its type takes."""
        for name, expectation in expectations.items():
            here = path + (name,)
            if condition and isinstance(name, str) and "." in name:
                self.other_check_condition(what, name, expectation, here)
                continue
            fact = spec.fact(name)
            if fact is None:
                if spec.param(name) is not None:
                    self.problem(here, f"{what}: {name} is a parameter of check {spec.id}, not a fact: "
                                       "put it under `params:`")
                else:
                    self.problem(here, f"{what}: check {spec.id} has no fact {name!r}; its facts: "
                                       f"{', '.join(f.name for f in spec.facts)}")
                continue
            self.expectation(spec, fact, expectation, here, condition=condition)

    def other_check_condition(self, what: str, name: str, expectation: Any, here: Path_) -> None:
        """`when: {vpn.tunnel_up: false}`: a condition on another check's fact in the same report."""
        check_id, _, fact_name = name.partition(".")
        other = SPECS.get(check_id)
        if other is None:
            self.problem(here, f"{what}: condition {name!r} names unknown check {check_id!r}; known checks: "
                               f"{', '.join(sorted(SPECS))}")
            return
        fact = other.fact(fact_name)
        if fact is None:
            self.problem(here, f"{what}: check {check_id} has no fact {fact_name!r}; its facts: "
                               f"{', '.join(f.name for f in other.facts)}")
            return
        self.expectation(other, fact, expectation, here, condition=True)

    # -- document --------------------------------------------------------------------------------
    def document(self, doc: Any) -> Optional[Policy]:
        if not isinstance(doc, dict):
            self.problem((), f"a policy document is a mapping (schema, id, version, title, rules), found {_kind(doc)}")
            return None
        for key in doc:
            if key not in TOP_KEYS:
                self.problem((key,), f"unknown top-level key {key!r}; a policy has {', '.join(TOP_KEYS)}")
        if doc.get("schema") != POLICY_SCHEMA:
            self.problem(("schema",) if "schema" in doc else (),
                         f"`schema` must be {POLICY_SCHEMA!r}, found {doc.get('schema')!r}")
        policy_id = doc.get("id")
        if not isinstance(policy_id, str) or not ID_PATTERN.match(policy_id):
            self.problem(("id",) if "id" in doc else (),
                         f"`id` must be lowercase letters, digits, '.', '_' or '-', found {policy_id!r}")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            self.problem(("version",) if "version" in doc else (),
                         f"`version` must be a whole number >= 1 (raise it with every change), found {version!r}")
        title = self.texts(doc, "title", (), "policy")
        intervals = self.intervals(doc.get("intervals"))
        actions = self.actions(doc.get("actions"))
        raw_rules = doc.get("rules")
        rules: List[Rule] = []
        if not isinstance(raw_rules, list) or not raw_rules:
            self.problem(("rules",) if "rules" in doc else (), "`rules` must be a non-empty list of rules")
            raw_rules = []
        seen: Dict[str, int] = {}
        params_by_check: Dict[str, Tuple[int, Dict[str, Any]]] = {}
        for index, raw in enumerate(raw_rules):
            rule = self.rule(raw, index)
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(raw_id, str):
                if raw_id in seen:
                    self.problem(("rules", index, "id"), f"duplicate rule id {raw_id!r} (first on line "
                                                         f"{self.lines.line(('rules', seen[raw_id], 'id'))})")
                    rule = None
                else:
                    seen[raw_id] = index
            if rule is not None and rule.params:
                # The collector of a check runs once per cycle, so its inputs must agree.
                earlier = params_by_check.get(rule.check)
                if earlier is not None and earlier[1] != dict(rule.params):
                    self.problem(("rules", index, "params"),
                                 f"rule {rule.id}: params for check {rule.check} differ from those on line "
                                 f"{self.lines.line(('rules', earlier[0], 'params'))}; a check runs once "
                                 "per cycle, so give the same params")
                    rule = None
                else:
                    params_by_check[rule.check] = (index, dict(rule.params))
            if rule is not None:
                rules.append(rule)
        if self.problems or not isinstance(version, int):
            return None
        return Policy(id=str(policy_id), version=version, title=title, rules=tuple(rules),
                      intervals=intervals, actions=actions)


def validate_document(doc: Any, lines: LineMap) -> Tuple[List[str], Optional[Policy]]:
    """All problems of a parsed document (empty when valid) and the Policy when valid."""
    validator = _Validator(lines)
    policy = validator.document(doc)
    return validator.sorted_problems(), policy


def validate_actions(value: Any, lines: LineMap) -> Tuple[List[str], Dict[str, Tuple[LadderStep, ...]]]:
    """Problems of a ladder given alone (an org unit's override) and the parsed ladder."""
    validator = _Validator(lines)
    actions = validator.actions(value, ())
    return validator.sorted_problems(), actions
