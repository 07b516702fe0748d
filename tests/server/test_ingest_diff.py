"""server.ingest_diff.diff_states alone: old state rows + one evaluation -> writes, changes, summary (no database)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from agent.policy import Result
from server.ingest_diff import Diff, StateRow, diff_states, dumps

T0 = 1_790_000_000.0
AT = T0 + 3600


def result(rule: str, status: str, *, grace_until: Optional[float] = None, reason: str = "",
           evidence: tuple[str, ...] = (), severity: str = "high", key: str = "k") -> Result:
    return Result(rule_id=rule, check=f"check-{rule}", status=status, severity=severity,
                  reason=reason or f"{rule} {status}", message={"key": key, "params": {}}, evidence=list(evidence),
                  within_grace=grace_until is not None, grace_until=grace_until)


def row(rule: str, status: str, *, since: float = T0, failing_since: Optional[float] = None, reason: str = "",
        agent_status: Optional[str] = None, severity: str = "high", key: str = "k") -> StateRow:
    """The row diff_states writes for ``result(rule, status, ...)``."""
    return StateRow(status, since, failing_since, reason or f"{rule} {status}", dumps({"key": key, "params": {}}),
                    "[]", agent_status, f"check-{rule}", severity)


def summary_of(diff: Diff) -> tuple[Any, ...]:
    s = diff.summary
    return s.compliance, s.fail_count, s.warn_count, s.error_count, s.disagreements, s.eval_valid_until


# (name, old rows, results, agent statuses,
#  expected writes [(rule, insert, row)], expected changes [(rule, old, new, failing_since, failing)],
#  expected gone, expected summary)
CASES: list[tuple[str, dict[str, StateRow], list[Result], dict[str, str], list[tuple[str, bool, StateRow]],
                  list[tuple[str, Optional[str], str, Optional[float], bool]], tuple[str, ...], tuple[Any, ...]]] = [
    ("first report: every rule inserted, one transition each",
     {}, [result("a", "pass"), result("b", "fail")], {},
     [("a", True, row("a", "pass", since=AT)), ("b", True, row("b", "fail", since=AT, failing_since=AT))],
     [("a", None, "pass", None, False), ("b", None, "fail", AT, True)], (),
     ("not_compliant", 1, 0, 0, 0, None)),
    ("nothing changed: no write at all",
     {"a": row("a", "pass")}, [result("a", "pass")], {},
     [], [], (), ("compliant", 0, 0, 0, 0, None)),
    ("pass -> fail: updated, failing from the report's time",
     {"a": row("a", "pass")}, [result("a", "fail")], {},
     [("a", False, row("a", "fail", since=AT, failing_since=AT))], [("a", "pass", "fail", AT, True)], (),
     ("not_compliant", 1, 0, 0, 0, None)),
    ("fail with a new reason: updated, no transition, since and failing_since kept",
     {"a": row("a", "fail", failing_since=T0)}, [result("a", "fail", reason="other")], {},
     [("a", False, row("a", "fail", failing_since=T0, reason="other"))], [], (),
     ("not_compliant", 1, 0, 0, 0, None)),
    ("a failure inside its grace period: warn, failing, the evaluation holds until grace ends",
     {"a": row("a", "pass")}, [result("a", "warn", grace_until=AT + 7200)], {},
     [("a", False, row("a", "warn", since=AT, failing_since=AT))], [("a", "pass", "warn", AT, True)], (),
     ("compliant", 0, 1, 0, 0, AT + 7200)),
    ("grace ended: warn -> fail keeps when the failure started",
     {"a": row("a", "warn", failing_since=T0)}, [result("a", "fail")], {},
     [("a", False, row("a", "fail", since=AT, failing_since=T0))], [("a", "warn", "fail", T0, True)], (),
     ("not_compliant", 1, 0, 0, 0, None)),
    ("a warning band is not a failure: no failing_since",
     {"a": row("a", "pass")}, [result("a", "warn")], {},
     [("a", False, row("a", "warn", since=AT))], [("a", "pass", "warn", None, False)], (),
     ("compliant", 0, 1, 0, 0, None)),
    ("fixed: fail -> pass clears failing_since",
     {"a": row("a", "fail", failing_since=T0)}, [result("a", "pass")], {},
     [("a", False, row("a", "pass", since=AT))], [("a", "fail", "pass", None, False)], (),
     ("compliant", 0, 0, 0, 0, None)),
    ("a rule the policy dropped is gone",
     {"a": row("a", "pass"), "old": row("old", "fail", failing_since=T0)}, [result("a", "pass")], {},
     [], [], ("old",), ("compliant", 0, 0, 0, 0, None)),
    ("the agent's own status: stored, and counted when it disagrees",
     {}, [result("a", "pass"), result("b", "error")], {"a": "fail", "b": "error"},
     [("a", True, row("a", "pass", since=AT, agent_status="fail")),
      ("b", True, row("b", "error", since=AT, agent_status="error"))],
     [("a", None, "pass", None, False), ("b", None, "error", None, False)], (),
     ("error", 0, 0, 1, 1, None)),
    ("the earliest grace end of several rules",
     {}, [result("a", "warn", grace_until=AT + 50), result("b", "warn", grace_until=AT + 10),
          result("c", "warn")], {},
     [("a", True, row("a", "warn", since=AT, failing_since=AT)),
      ("b", True, row("b", "warn", since=AT, failing_since=AT)), ("c", True, row("c", "warn", since=AT))],
     [("a", None, "warn", AT, True), ("b", None, "warn", AT, True), ("c", None, "warn", None, False)], (),
     ("compliant", 0, 3, 0, 0, AT + 10)),
]


@pytest.mark.parametrize("name,old,results,agent,writes,changes,gone,summary", CASES, ids=[c[0] for c in CASES])
def test_diff_states(name: str, old: dict[str, StateRow], results: list[Result], agent: dict[str, str],
                     writes: list[tuple[str, bool, StateRow]],
                     changes: list[tuple[str, Optional[str], str, Optional[float], bool]], gone: tuple[str, ...],
                     summary: tuple[Any, ...]) -> None:
    before = dict(old)
    diff = diff_states(old, results, agent, AT)
    assert [(w.rule_id, w.insert, w.row) for w in diff.writes] == writes
    assert [(c.rule_id, c.old_status, c.new_status, c.failing_since, c.failing) for c in diff.changes] == changes
    assert diff.gone == gone
    assert summary_of(diff) == summary
    assert diff.changed == bool(writes or gone)
    assert old == before  # pure: the caller's rows are untouched
    expected_states = {**old, **{rule: new for rule, _, new in writes}}
    assert diff.states == {rule: r for rule, r in expected_states.items() if rule not in gone}


def test_a_change_carries_what_the_ladder_and_the_transition_row_need() -> None:
    diff = diff_states({}, [result("a", "fail", reason="disk not encrypted", severity="critical", key="eq_fail")],
                       {}, AT)
    [change] = diff.changes
    assert (change.severity, change.reason, change.check_id) == ("critical", "disk not encrypted", "check-a")
    assert change.message == dumps({"key": "eq_fail", "params": {}})


def test_evidence_change_alone_is_written() -> None:
    diff = diff_states({"a": row("a", "fail", failing_since=T0)}, [result("a", "fail", evidence=("x = 1",))], {}, AT)
    assert [w.row.evidence for w in diff.writes] == [dumps(["x = 1"])]
    assert diff.changes == ()
