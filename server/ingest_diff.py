"""The pure part of ingest: a device's stored check state + one evaluation -> what to write and what changed.

No database, no clock: ``diff_states`` takes the old rows (check_state of one device), the evaluation's
results (agent.policy.evaluate, which decided grace) and the agent's own statuses, and returns typed
writes (state rows to insert or update, rows whose rule left the policy, transitions), the rule changes
that drive events and the noncompliance ladder (server.actions.ladder), and the device summary.
server.ingest stores them with server.store.ingest_sql.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from agent.policy import Result, summarize

COUNTED = ("fail", "warn", "error")


@dataclass(frozen=True)
class StateRow:
    """One rule's stored state (a check_state row without its keys)."""

    status: str
    since: float  # when the rule took this status
    failing_since: Optional[float]  # when its facts started failing (fail, or warn within grace); else None
    reason: str
    message: str  # JSON {key, params}
    evidence: str  # JSON list
    agent_status: Optional[str]  # what the agent itself said
    check_id: str
    severity: str


@dataclass(frozen=True)
class StateWrite:
    rule_id: str
    row: StateRow
    insert: bool  # no row yet for this rule (else an update of the existing one)


@dataclass(frozen=True)
class RuleChange:
    """A rule whose status changed in an evaluation: a transition row, and what events and the ladder see."""

    rule_id: str
    severity: str
    old_status: Optional[str]
    new_status: str
    failing_since: Optional[float]
    reason: str = ""
    # The rule's facts fail (fail, or warn within its grace period: Result.failing).
    failing: bool = False
    check_id: str = ""
    message: str = ""


@dataclass(frozen=True)
class Summary:
    """The device row's evaluation columns."""

    compliance: str
    fail_count: int
    warn_count: int
    error_count: int
    disagreements: int  # rules where the agent's own status differs from the collector's
    # The first moment a failure inside its grace period turns into fail: until then the evaluation holds.
    eval_valid_until: Optional[float]


@dataclass(frozen=True)
class Diff:
    writes: tuple[StateWrite, ...]
    changes: tuple[RuleChange, ...]  # status changes, in policy order
    gone: tuple[str, ...]  # rules with state that the policy no longer has
    summary: Summary
    states: dict[str, StateRow]  # the device's state after the writes

    @property
    def changed(self) -> bool:
        return bool(self.writes or self.gone)


# One encoder for every call: json.dumps with these options builds a new JSONEncoder each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def diff_states(old: Mapping[str, StateRow], results: Sequence[Result], agent_statuses: Mapping[str, str],
                at: float) -> Diff:
    """What one evaluation at ``at`` (the report's time) changes in a device's state ``old``.

    A rule's row is written only when something of it changed; ``since`` is kept while the status stays;
    ``failing_since`` is kept while the facts keep failing (grace counts from it), ``at`` when they start."""
    states = dict(old)
    writes: list[StateWrite] = []
    changes: list[RuleChange] = []
    counts = dict.fromkeys(COUNTED, 0)
    disagreements = 0
    valid_until: Optional[float] = None
    for result in results:
        if result.status in counts:
            counts[result.status] += 1
        agent_status = agent_statuses.get(result.rule_id)
        if agent_status is not None and agent_status != result.status:
            disagreements += 1
        if result.grace_until is not None:
            valid_until = result.grace_until if valid_until is None else min(valid_until, result.grace_until)
        before = old.get(result.rule_id)
        started: Optional[float] = None
        if result.failing:
            started = before.failing_since if before is not None and before.failing_since is not None else at
        message = dumps({"key": result.message.get("key"), "params": result.message.get("params") or {}})
        same_status = before is not None and before.status == result.status
        row = StateRow(result.status, before.since if same_status and before is not None else at, started,
                       result.reason, message, dumps(list(result.evidence)), agent_status, result.check,
                       result.severity)
        if row == before:
            continue
        writes.append(StateWrite(result.rule_id, row, insert=before is None))
        states[result.rule_id] = row
        if not same_status:
            changes.append(RuleChange(result.rule_id, row.severity, None if before is None else before.status,
                                      row.status, row.failing_since, row.reason, result.failing, row.check_id,
                                      row.message))
    seen = {result.rule_id for result in results}
    gone = tuple(rule for rule in old if rule not in seen)
    for rule in gone:
        del states[rule]
    summary = Summary(summarize(list(results)), counts["fail"], counts["warn"], counts["error"], disagreements,
                      valid_until)
    return Diff(tuple(writes), tuple(changes), gone, summary, states)
