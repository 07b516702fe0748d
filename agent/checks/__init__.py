"""The check registry: every check family, registered explicitly (no discovery)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from agent.checks import (
    antivirus,
    disk_encryption,
    firewall,
    local_admin,
    os_identity,
    patches,
    remote_access,
    screen_lock,
    secure_boot,
    time_sync,
    vpn,
    wifi,
)
from agent.checks._windows_batch import batched_host
from agent.checks.base import CheckFamily, CheckOutcome, CheckSpec, run_collector
from agent.probes import Host

REGISTRY: Dict[str, CheckFamily] = {
    family.spec.id: family
    for family in (
        os_identity.FAMILY,
        disk_encryption.FAMILY,
        vpn.FAMILY,
        patches.FAMILY,
        firewall.FAMILY,
        screen_lock.FAMILY,
        antivirus.FAMILY,
        local_admin.FAMILY,
        secure_boot.FAMILY,
        remote_access.FAMILY,
        time_sync.FAMILY,
        wifi.FAMILY,
    )
}


def spec(check_id: str) -> Optional[CheckSpec]:
    family = REGISTRY.get(check_id)
    return family.spec if family else None


def collect(host: Host, checks: Iterable[str], params: Optional[Mapping[str, Mapping[str, Any]]] = None,
            ) -> Dict[str, CheckOutcome]:
    """Run the named checks (os_identity always) and return their outcomes by check id."""
    wanted: List[str] = ["os_identity"] + [c for c in checks if c != "os_identity"]
    params = params or {}
    # on Windows every PowerShell probe of these checks runs in one powershell.exe
    host = batched_host(host, wanted, params)
    outcomes: Dict[str, CheckOutcome] = {}
    for check_id in wanted:
        family = REGISTRY.get(check_id)
        if family is None:
            raise KeyError(f"unknown check {check_id!r}; known: {', '.join(sorted(REGISTRY))}")
        outcomes[check_id] = run_collector(family, host, params.get(check_id, {}))
    return outcomes
