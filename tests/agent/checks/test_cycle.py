"""run_cycle: collects what the policy needs (with its params), evaluates, honours --only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytest

from agent.checks.cycle import CycleHost, run_cycle
from agent.policy import baseline, evaluate, load_policy_text
from agent.probes import DEFAULT_TIMEOUT, ProbeResult, Recording, ReplayHost

RECORDED_AT = 1_790_000_000.0


class CountingReplay(ReplayHost):
    """A replay of an empty recording that counts the questions it is asked."""

    def __init__(self, platform: str = "linux") -> None:
        super().__init__(Recording(platform=platform, recorded_at=RECORDED_AT))
        self.calls: List[Tuple[str, Tuple[str, ...]]] = []

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
        self.calls.append(("run", tuple(argv)))
        return super().run(argv, timeout, cache_on)

    def processes(self) -> ProbeResult:
        self.calls.append(("processes", ()))
        return super().processes()

    def interfaces(self) -> ProbeResult:
        self.calls.append(("interfaces", ()))
        return super().interfaces()


def test_cycle_runs_the_policys_checks_and_evaluates_every_rule() -> None:
    host = CountingReplay()
    cycle = run_cycle(host, baseline())
    assert list(cycle.outcomes)[0] == "os_identity"
    assert set(cycle.outcomes) == {"os_identity", "disk_encryption", "vpn", "patches", "firewall",
                                   "screen_lock", "antivirus", "local_admin", "secure_boot", "remote_access",
                                   "time_sync", "wifi"}
    assert [r.rule_id for r in cycle.results] == [r.id for r in baseline().rules]
    assert cycle.platform == "linux" and cycle.checked_at == RECORDED_AT
    # nothing was recorded, so nothing may pass: every verdict is an error or does not apply
    assert {r.status for r in cycle.results} <= {"error", "not_applicable"}
    assert cycle.status == "error"
    facts = cycle.facts_json()
    assert facts["disk_encryption"]["state"] == "error" and facts["disk_encryption"]["reason"]
    assert cycle.results_json()[0]["rule_id"] == "disk-encryption"
    json.dumps({"facts": facts, "results": cycle.results_json()})  # report-ready


def test_one_process_listing_per_cycle() -> None:
    host = CountingReplay()
    run_cycle(host, baseline())
    assert [c for c in host.calls if c[0] == "processes"] == [("processes", ())]
    host2 = CountingReplay()
    run_cycle(host2, baseline())  # a new cycle asks again
    assert len([c for c in host2.calls if c[0] == "processes"]) == 1


def test_cycle_host_delegates_everything_else() -> None:
    inner = CountingReplay("darwin")
    view = CycleHost(inner)
    assert view.platform == "darwin" and view.now() == RECORDED_AT
    view.run(["sw_vers"])
    view.run(["sw_vers"])
    assert inner.calls.count(("run", ("sw_vers",))) == 2  # commands are not memoised here (the host caches them)
    view.interfaces()
    view.interfaces()
    assert inner.calls.count(("interfaces", ())) == 1


def test_vpn_params_reach_the_collector() -> None:
    seen: Dict[str, Any] = {}
    from agent.checks.base import CheckFamily, CheckOutcome
    from agent.checks.collectors import REGISTRY

    original = REGISTRY["vpn"]

    def spy(host: Any, params: Any) -> CheckOutcome:
        seen.update(params)
        return CheckOutcome("vpn", facts={"tunnel_up": True, "corporate_routes": [
            {"network": "203.0.113.0/24", "interface": "tun0", "via_tunnel": True},
            {"network": "198.51.100.0/24", "interface": "tun0", "via_tunnel": True}],
            "corporate_networks_via_tunnel": True})

    REGISTRY["vpn"] = CheckFamily(original.spec, {"linux": spy})
    try:
        cycle = run_cycle(CountingReplay(), baseline(), only=["vpn"])
    finally:
        REGISTRY["vpn"] = original
    assert seen == {"corporate_networks": ["203.0.113.0/24", "198.51.100.0/24"]}
    [result] = cycle.results
    assert (result.rule_id, result.status) == ("vpn-corporate-traffic", "pass")
    assert cycle.status == "compliant"


def test_only_restricts_and_rejects_unknown_checks() -> None:
    cycle = run_cycle(CountingReplay(), baseline(), only=["firewall"])
    assert set(cycle.outcomes) == {"os_identity", "firewall"}
    assert [r.rule_id for r in cycle.results] == ["firewall-enabled"]
    # a check no rule uses still runs (its facts are shown), with no results
    policy = load_policy_text(json.dumps(baseline().to_json()), "b.json")
    cycle = run_cycle(CountingReplay(), policy, only=["os_identity"])
    assert list(cycle.outcomes) == ["os_identity"]
    assert [r.rule_id for r in cycle.results] == [r.id for r in policy.rules if r.check == "os_identity"]
    with pytest.raises(KeyError, match="unknown check nope; known: antivirus"):
        run_cycle(CountingReplay(), baseline(), only=["nope"])


DARWIN = Path(__file__).resolve().parents[2] / "fixtures" / "darwin"


@pytest.mark.parametrize("recording, status, fragment", [
    # XProtect 12 days old: within the baseline's 21 days for macOS (Apple ships it every 1-3 weeks) ...
    ("14-apple-silicon/automatic-updates-off.json", "pass", "signature age (days): 12.4 (at most 21)"),
    # ... and a fresh one passes as before
    ("14-apple-silicon/baseline.json", "pass", "(at most 21)"),
])
def test_recorded_mac_gets_the_macos_signature_limit(recording: str, status: str, fragment: str) -> None:
    cycle = run_cycle(ReplayHost(Recording.load(DARWIN / recording)), baseline())
    assert cycle.platform == "darwin"
    by_rule = {r.rule_id: r for r in cycle.results}
    assert (by_rule["antimalware-signatures"].status, by_rule["antimalware-running"].status) == (status, "pass")
    assert fragment in by_rule["antimalware-signatures"].reason
    # the same facts on another platform are judged by the default limit (3 days)
    age = cycle.facts_json()["antivirus"]["facts"]["signature_age_days"]
    [linux] = [r for r in evaluate(baseline(), cycle.facts_json(), "linux", cycle.checked_at)
               if r.rule_id == "antimalware-signatures"]
    assert linux.status == ("fail" if age > 3 else "warn" if age > 1 else "pass")
