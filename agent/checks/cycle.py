"""One check cycle: collect the checks a policy uses, evaluate their facts, summarise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from agent.checks.base import CheckOutcome
from agent.checks.collectors import REGISTRY, collect
from agent.policy import Policy, Result, check_params, checks_used, evaluate, summarize
from agent.probes import Host, ProbeResult, WrappedHost


class CycleHost(WrappedHost):
    """One cycle's view of a host: the process list and the interfaces are read once per cycle.

    Several checks look at processes (VPN clients, display servers, anti-malware); listing them
    is the dearest probe of a warm cycle, and within one cycle one snapshot is also the consistent
    answer. Everything else goes straight to the wrapped host (live, recording or replay).
    """

    def __init__(self, inner: Host) -> None:
        super().__init__(inner)
        self._processes: Optional[ProbeResult] = None
        self._interfaces: Optional[ProbeResult] = None

    def processes(self) -> ProbeResult:
        if self._processes is None:
            self._processes = self.inner.processes()
        return self._processes

    def interfaces(self) -> ProbeResult:
        if self._interfaces is None:
            self._interfaces = self.inner.interfaces()
        return self._interfaces


@dataclass
class Cycle:
    outcomes: Dict[str, CheckOutcome]
    results: List[Result]
    status: str
    platform: str = ""
    checked_at: float = 0.0
    checks: List[str] = field(default_factory=list)

    def facts_json(self) -> Dict[str, Any]:
        """The report's ``facts``: check id -> {state, reason, facts, evidence}."""
        return {check_id: outcome.to_json() for check_id, outcome in self.outcomes.items()}

    def results_json(self) -> List[Dict[str, Any]]:
        return [result.to_json() for result in self.results]


def run_cycle(host: Host, policy: Policy, only: Optional[List[str]] = None,
              failing_since: Optional[Dict[str, float]] = None) -> Cycle:
    """Run the policy's checks (restricted to ``only`` when given) on ``host`` and evaluate them.

    Raises KeyError naming the known checks when ``only`` names an unknown one. os_identity is
    always collected: it identifies the machine in reports.
    """
    wanted = checks_used(policy)
    if only is not None:
        unknown = [check_id for check_id in only if check_id not in REGISTRY]
        if unknown:
            raise KeyError(f"unknown check {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}")
        wanted = [check_id for check_id in wanted if check_id in only] + \
            [check_id for check_id in only if check_id not in wanted]
    outcomes = collect(CycleHost(host), wanted, check_params(policy))
    now = host.now()
    facts = {check_id: outcome.to_json() for check_id, outcome in outcomes.items()}
    results = [r for r in evaluate(policy, facts, host.platform, now, failing_since)
               if only is None or r.check in only]
    return Cycle(outcomes=outcomes, results=results, status=summarize(results), platform=host.platform,
                 checked_at=now, checks=wanted)
