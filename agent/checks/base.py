"""How a check runs on the agent: per-platform collectors that produce the facts a check declares.

The declaration (`CheckSpec`: id, platforms, typed facts, parameters) lives apart, in
agent/checks/declarations.py and each family's spec.py, so that the collector and the policy package
can read it without loading probes; this module is the agent side: outcomes and running collectors.

A collector is ``collect(host, params) -> CheckOutcome``: it asks the `Host` for probe results and
hands them to pure parse functions. ``params`` are inputs a policy gives the check (for example the
corporate networks whose routes the VPN check must look up); they are declared too.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from agent.checks.declarations import CheckSpec, conform
from agent.checks.messages import Message, english, message
from agent.probes import Host, ProbeResult

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"
NOT_APPLICABLE = "not_applicable"
OUTCOME_STATES = (OK, ERROR, NOT_APPLICABLE)


class ParseError(ValueError):
    """A probe's output did not have the expected shape. The message says what was expected."""


# A collector's reason: a translatable message (agent/checks/messages.py), or plain English text.
Reason = Union[str, Message]


@dataclass
class CheckOutcome:
    """What one check found on one machine: facts, or why there are none.

    ``reason`` is English text (what the collector and old readers show); ``message`` is the same
    reason as a catalogue key and parameters, which the engine nests so that renderers translate it.
    """

    check: str
    state: str = OK
    reason: Optional[str] = None
    facts: Dict[str, Any] = field(default_factory=dict)
    # Short human-readable lines saying what was observed (probe names and key values).
    evidence: List[str] = field(default_factory=list)
    message: Optional[Message] = None

    def to_json(self) -> Dict[str, Any]:
        data = {"state": self.state, "reason": self.reason, "facts": self.facts, "evidence": self.evidence}
        if self.message is not None:
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, check: str, data: Mapping[str, Any]) -> CheckOutcome:
        state = data.get("state")
        if state not in OUTCOME_STATES:
            raise ValueError(f"facts for {check}: state must be one of {OUTCOME_STATES}, found {state!r}")
        facts = data.get("facts") or {}
        evidence = data.get("evidence") or []
        if not isinstance(facts, dict) or not isinstance(evidence, list):
            raise ValueError(f"facts for {check}: 'facts' must be an object and 'evidence' a list")
        reason = data.get("reason")
        msg = data.get("message")  # absent in recordings and reports made before reasons were translatable
        if msg is not None and not (isinstance(msg, dict) and isinstance(msg.get("key"), str)
                                    and isinstance(msg.get("params", {}), dict)):
            raise ValueError(f"facts for {check}: 'message' must be {{key: string, params: object}}, found {msg!r}")
        return cls(check=check, state=state, reason=None if reason is None else str(reason),
                   facts=dict(facts), evidence=[str(e) for e in evidence],
                   message=None if msg is None else {"key": msg["key"], "params": dict(msg.get("params") or {})})

    @classmethod
    def _without_facts(cls, check: str, state: str, reason: Reason, evidence: Sequence[str]) -> CheckOutcome:
        if isinstance(reason, str):
            return cls(check=check, state=state, reason=reason, evidence=list(evidence))
        return cls(check=check, state=state, reason=english(reason), evidence=list(evidence), message=reason)

    @classmethod
    def error(cls, check: str, reason: Reason, evidence: Sequence[str] = ()) -> CheckOutcome:
        return cls._without_facts(check, ERROR, reason, evidence)

    @classmethod
    def not_applicable(cls, check: str, reason: Reason, evidence: Sequence[str] = ()) -> CheckOutcome:
        return cls._without_facts(check, NOT_APPLICABLE, reason, evidence)

    @classmethod
    def probe_failed(cls, check: str, probe: ProbeResult) -> CheckOutcome:
        return cls.error(check, probe.failure_message())


Collector = Callable[[Host, Mapping[str, Any]], CheckOutcome]


@dataclass(frozen=True)
class CheckFamily:
    spec: CheckSpec
    collectors: Mapping[str, Collector]


def run_collector(family: CheckFamily, host: Host, params: Optional[Mapping[str, Any]] = None) -> CheckOutcome:
    """Run a check's collector for the host's platform; never raises for bad probe output."""
    spec = family.spec
    collector = family.collectors.get(host.platform)
    if host.platform not in spec.platforms or collector is None:
        return CheckOutcome.not_applicable(spec.id, message("check_not_on_platform", check=spec.id,
                                                            platform=host.platform))
    try:
        outcome = collector(host, params or {})
    except ParseError as exc:
        return CheckOutcome.error(spec.id, message("probe_output_unexpected", problem=str(exc)))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeError) as exc:
        # A parser bug or an output shape nobody foresaw: an error result, never a verdict.
        log.warning("check %s failed to parse probe output", spec.id, exc_info=True)
        return CheckOutcome.error(spec.id, message("probe_output_uninterpretable",
                                                   problem=f"{type(exc).__name__}: {exc}"))
    problems = conform(spec, outcome.facts) if outcome.state == OK else []
    if problems:
        log.error("check %s produced facts that do not match its declaration: %s", spec.id, problems)
        return CheckOutcome.error(spec.id, message("check_internal_error", problem="; ".join(problems)),
                                  outcome.evidence)
    return outcome


def network_list(value: Any) -> List[str]:
    """Normalise a policy's list of CIDR networks (used by params of type cidr_list)."""
    if not isinstance(value, list):
        raise ValueError("expected a list of networks in CIDR notation")
    return [str(ipaddress.ip_network(str(item), strict=False)) for item in value]
