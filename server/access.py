"""The access decision: pure, from a device's state to allow / allow with warnings / deny with causes.

``decide`` does no I/O. Its inputs are what the collector already keeps (the device row, its
``check_state`` rows, an admin exception) plus the noncompliance ladder (server.actions.ladder):
``blocked`` (a ``block`` step holds for the device) and ``ladder_blocks`` (the severities whose ladder has a
``block`` step). A failing rule of such a severity is the ladder's to judge: it is a warning until the
ladder's deadline, then ``blocked`` denies. Where the ladder has no ``block`` step for a severity, a rule
of severity ``critical`` that has failed past its grace period (status ``fail``; inside the grace period
the collector's status is ``warn``) denies at once.

Order of precedence:
1. a device that is not active (revoked, replaced, pending, ...) is denied, and no exception lifts that;
2. an unexpired admin exception allows (the causes it overrides are kept, for the record);
3. never reported, stale beyond the limit, blocked by the ladder, or a critical rule failing that no
   ladder ``block`` step governs: deny;
4. otherwise allow, with a warning per rule that fails (inside its grace period or below critical)
   or could not be checked (``error``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

ALLOW, DENY = "allow", "deny"
DENYING_SEVERITIES = frozenset({"critical"})


@dataclass(frozen=True)
class RuleState:
    rule_id: str
    severity: str
    status: str  # the collector's verdict: pass warn fail not_applicable error
    since: float
    within_grace: bool = False  # a failure the grace period still turns into warn


@dataclass(frozen=True)
class DeviceAccessInput:
    device_id: str
    state: str  # DEVICE_STATES (or "pending")
    last_seen: Optional[float]
    rules: Sequence[RuleState]


@dataclass(frozen=True)
class AccessException:
    reason: str
    expires_at: float
    created_by: str


@dataclass(frozen=True)
class AccessDecision:
    decision: str
    causes: tuple[dict[str, Any], ...]
    warnings: tuple[dict[str, Any], ...]
    exception: Optional[dict[str, Any]] = None

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    def key(self) -> tuple[str, tuple[str, ...]]:
        """What makes a decision 'the same' for its ``since``: the outcome and the causes' codes/rules."""
        return self.decision, tuple(sorted(f"{c['code']}:{c.get('rule_id', '')}" for c in self.causes))


def _rule_cause(code: str, rule: RuleState) -> dict[str, Any]:
    return {"code": code, "rule_id": rule.rule_id, "severity": rule.severity, "status": rule.status,
            "since": rule.since}


def decide(device: DeviceAccessInput, *, now: float, stale_limit: float, blocked: bool = False,
           exception: Optional[AccessException] = None,
           ladder_blocks: frozenset[str] = frozenset()) -> AccessDecision:
    """The device's access decision at ``now`` (see the module docstring for the order of precedence)."""
    if device.state != "active":
        return AccessDecision(DENY, ({"code": f"device_{device.state}"},), ())
    causes: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    if device.last_seen is None:
        causes.append({"code": "no_report"})
    elif now - device.last_seen > stale_limit:
        causes.append({"code": "stale", "last_seen": device.last_seen, "limit": stale_limit})
    if blocked:
        causes.append({"code": "blocked"})
    for rule in sorted(device.rules, key=lambda r: r.rule_id):
        if rule.status == "fail" and rule.severity in DENYING_SEVERITIES and rule.severity not in ladder_blocks:
            causes.append(_rule_cause("rule_failed", rule))
        elif rule.status == "fail":
            warnings.append(_rule_cause("rule_failed", rule))
        elif rule.status == "warn" and rule.within_grace:
            warnings.append(_rule_cause("within_grace", rule))
        elif rule.status == "error":
            warnings.append(_rule_cause("rule_error", rule))
    if exception is not None and exception.expires_at > now:
        return AccessDecision(ALLOW, tuple(causes), tuple(warnings),
                              {"reason": exception.reason, "expires_at": exception.expires_at,
                               "created_by": exception.created_by})
    return AccessDecision(DENY if causes else ALLOW, tuple(causes), tuple(warnings))


def describe(cause: Mapping[str, Any], titles: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A cause with the rule's title in each language added (for the gate's message to the employee)."""
    described = dict(cause)
    rule_id = cause.get("rule_id")
    if rule_id and rule_id in titles:
        described["title"] = dict(titles[rule_id])
    return described
