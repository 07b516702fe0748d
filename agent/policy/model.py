"""The policy data model: a policy is an id, a version, intervals and typed rules over declared facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.declarations import PLATFORMS
from agent.protocol import canonical_json, digest

POLICY_SCHEMA = "teleposture/policy/v1"
SEVERITIES = ("critical", "high", "medium", "low")
LANGUAGES = ("en", "fr", "ar")
STATUSES = ("pass", "warn", "fail", "not_applicable", "error")
# What a step of the noncompliance ladder does (docs/actions.md).
LADDER_ACTIONS = ("notify_employee", "notify_team", "notify_manager", "block")
MAX_LADDER_OFFSET_SECONDS = 365 * 86400

# In a platform-keyed expectation ({darwin: {max: 21}, default: {max: 3}}), what the platforms
# not named get; without it an expectation keyed by platform applies only to the platforms named.
PLATFORM_DEFAULT = "default"
PLATFORM_KEYS = PLATFORMS + (PLATFORM_DEFAULT,)

# How long a failure may last before it counts, when a rule does not say (seconds).
DEFAULT_GRACE_SECONDS: Mapping[str, int] = {
    "critical": 0,
    "high": 24 * 3600,
    "medium": 72 * 3600,
    "low": 7 * 24 * 3600,
}

# Agent schedule (seconds); a policy document may override any of them under `intervals:`.
DEFAULT_INTERVALS: Mapping[str, int] = {
    "check": 3600,
    "upload": 300,
    "policy_refresh": 3600,
    "vpn_sample": 60,
}


def is_platform_keyed(expectation: Any) -> bool:
    """True for {darwin: ..., windows: ...} (optionally with `default`); no expectation form uses these keys."""
    return isinstance(expectation, Mapping) and bool(expectation) and all(k in PLATFORM_KEYS for k in expectation)


def expectation_for(expectation: Any, platform: str) -> Optional[Any]:
    """The expectation that holds on ``platform``; None when a platform-keyed one says nothing about it."""
    if not is_platform_keyed(expectation):
        return expectation
    if platform in expectation:
        return expectation[platform]
    return expectation.get(PLATFORM_DEFAULT)


class PolicyError(ValueError):
    """A policy document that cannot be used. ``problems`` are "SOURCE:LINE: message" lines."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid policy")


@dataclass(frozen=True)
class Rule:
    """One requirement: expectations on the facts of one check.

    ``expect`` maps fact names to expectations (see docs/policy.md); ``params`` are inputs the
    check's collector needs (the VPN check's ``corporate_networks``), which the evaluator then
    also verifies against the matching facts. ``when`` (same form as ``expect``, facts of the same
    check) is a precondition: where it is not met the rule is ``not_applicable``.
    """

    id: str
    check: str
    severity: str
    grace_seconds: int
    expect: Mapping[str, Any]
    title: Mapping[str, str]
    remediation: Mapping[str, str]
    references: Tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    when: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "id": self.id,
            "check": self.check,
            "severity": self.severity,
            "grace": self.grace_seconds,
            "expect": _plain(self.expect),
            "title": dict(self.title),
            "remediation": dict(self.remediation),
            "references": list(self.references),
        }
        if self.params:
            data["params"] = _plain(self.params)
        # Only when given, so that the canonical text (and digest) of a policy without it is unchanged.
        if self.when:
            data["when"] = _plain(self.when)
        return data


@dataclass(frozen=True)
class LadderStep:
    """One step of the noncompliance ladder: ``action`` once the rule has failed for ``after`` seconds."""

    after: int
    action: str

    def to_json(self) -> Dict[str, Any]:
        return {"after": self.after, "do": self.action}


@dataclass(frozen=True)
class Policy:
    id: str
    version: int
    title: Mapping[str, str]
    rules: Tuple[Rule, ...]
    intervals: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))
    # severity -> the ladder's steps in order of their offsets; a severity not named has no ladder.
    actions: Mapping[str, Tuple[LadderStep, ...]] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        """The whole document as plain JSON (grace and intervals in seconds, defaults filled in)."""
        data: Dict[str, Any] = {
            "schema": POLICY_SCHEMA,
            "id": self.id,
            "version": self.version,
            "title": dict(self.title),
            "intervals": dict(self.intervals),
            "rules": [rule.to_json() for rule in self.rules],
        }
        # Only when given, so that the canonical text (and digest) of a policy without it is unchanged.
        if self.actions:
            data["actions"] = ladder_to_json(self.actions)
        return data

    def canonical_text(self) -> str:
        # A policy is immutable, so its canonical text (and digest) is computed once.
        cached = self.__dict__.get("_canonical_text")
        if cached is None:
            cached = canonical_json(self.to_json())
            object.__setattr__(self, "_canonical_text", cached)
        return cached

    def digest(self) -> str:
        return digest(self.canonical_text())

    def ref(self) -> Dict[str, Any]:
        """What a report's ``policy`` field carries."""
        return {"id": self.id, "version": self.version, "digest": self.digest()}

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def _plain(value: Any) -> Any:
    """A deep copy made only of dict/list/scalars (rules must not share mutable state with callers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def ladder_to_json(actions: Mapping[str, Tuple[LadderStep, ...]]) -> Dict[str, Any]:
    return {severity: [step.to_json() for step in steps] for severity, steps in actions.items()}
