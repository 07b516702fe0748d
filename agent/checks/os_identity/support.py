"""The OS support phase, added to what the platform collectors identified (agent side only)."""

from __future__ import annotations

from typing import Any, Mapping

from agent.checks.base import OK, CheckOutcome, Collector
from agent.checks.os_identity import lifecycle
from agent.probes import Host


def with_lifecycle(collector: Collector) -> Collector:
    """The platform collector, plus the support phase of the OS it identified (pure: table, facts, date)."""
    def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
        outcome = collector(host, params)
        if outcome.state == OK:
            support = lifecycle.support_facts(outcome.facts, lifecycle.effective_table(params.get("lifecycle")),
                                              host.now())
            outcome.facts.update(support)
            outcome.evidence.append(lifecycle.describe(support))
        return outcome
    return collect
