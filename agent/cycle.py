"""One check cycle: collect the checks a policy uses, evaluate their facts, summarise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from agent.checks import REGISTRY, collect
from agent.checks.base import CheckOutcome
from agent.policy import Policy, Result, check_params, checks_used, evaluate, summarize
from agent.probes import DEFAULT_TIMEOUT, Host, ProbeResult


class CycleHost(Host):
    """One cycle's view of a host: the process list and the interfaces are read once per cycle.

    Several checks look at processes (VPN clients, display servers, anti-malware); listing them
    is the dearest probe of a warm cycle, and within one cycle one snapshot is also the consistent
    answer. Everything else goes straight to the wrapped host (live, recording or replay).
    """

    def __init__(self, inner: Host) -> None:
        self.inner = inner
        self.platform = inner.platform
        self._processes: Optional[ProbeResult] = None
        self._interfaces: Optional[ProbeResult] = None

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        return self.inner.run(argv, timeout, cache_on)

    def read_text(self, path: str) -> ProbeResult:
        return self.inner.read_text(path)

    def listdir(self, path: str) -> ProbeResult:
        return self.inner.listdir(path)

    def stat(self, path: str) -> ProbeResult:
        return self.inner.stat(path)

    def processes(self) -> ProbeResult:
        if self._processes is None:
            self._processes = self.inner.processes()
        return self._processes

    def interfaces(self) -> ProbeResult:
        if self._interfaces is None:
            self._interfaces = self.inner.interfaces()
        return self._interfaces

    def now(self) -> float:
        return self.inner.now()

    def which(self, name: str) -> Optional[str]:
        return self.inner.which(name)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        return self.inner.cached(argv, cache_on)

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        self.inner.remember(argv, cache_on, result)

    def recorded_runs(self) -> List[ProbeResult]:
        return self.inner.recorded_runs()


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
