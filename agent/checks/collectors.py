"""The collector registry (agent side only): every check's declaration with its per-platform
collectors, registered explicitly (no discovery), and `collect`, which runs them.

The collector (server/) and the policy package never import this module: they read the declarations
(agent/checks/specs.py), which load no probe and no collector.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from agent.checks._windows_batch import batched_host
from agent.checks.antivirus import darwin as antivirus_darwin
from agent.checks.antivirus import linux as antivirus_linux
from agent.checks.antivirus import windows as antivirus_windows
from agent.checks.base import CheckFamily, CheckOutcome, Collector, run_collector
from agent.checks.disk_encryption import darwin as disk_encryption_darwin
from agent.checks.disk_encryption import linux as disk_encryption_linux
from agent.checks.disk_encryption import windows as disk_encryption_windows
from agent.checks.firewall import darwin as firewall_darwin
from agent.checks.firewall import linux as firewall_linux
from agent.checks.firewall import windows as firewall_windows
from agent.checks.local_admin import darwin as local_admin_darwin
from agent.checks.local_admin import linux as local_admin_linux
from agent.checks.local_admin import windows as local_admin_windows
from agent.checks.os_identity import darwin as os_identity_darwin
from agent.checks.os_identity import linux as os_identity_linux
from agent.checks.os_identity import windows as os_identity_windows
from agent.checks.os_identity.support import with_lifecycle
from agent.checks.patches import darwin as patches_darwin
from agent.checks.patches import linux as patches_linux
from agent.checks.patches import windows as patches_windows
from agent.checks.remote_access import darwin as remote_access_darwin
from agent.checks.remote_access import linux as remote_access_linux
from agent.checks.remote_access import windows as remote_access_windows
from agent.checks.screen_lock import darwin as screen_lock_darwin
from agent.checks.screen_lock import linux as screen_lock_linux
from agent.checks.screen_lock import windows as screen_lock_windows
from agent.checks.secure_boot import darwin as secure_boot_darwin
from agent.checks.secure_boot import linux as secure_boot_linux
from agent.checks.secure_boot import windows as secure_boot_windows
from agent.checks.specs import SPECS
from agent.checks.time_sync import darwin as time_sync_darwin
from agent.checks.time_sync import linux as time_sync_linux
from agent.checks.time_sync import windows as time_sync_windows
from agent.checks.vpn import darwin as vpn_darwin
from agent.checks.vpn import linux as vpn_linux
from agent.checks.vpn import windows as vpn_windows
from agent.checks.wifi import darwin as wifi_darwin
from agent.checks.wifi import linux as wifi_linux
from agent.checks.wifi import windows as wifi_windows
from agent.probes import Host


def _family(check_id: str, linux: Collector, darwin: Collector, windows: Collector) -> CheckFamily:
    return CheckFamily(SPECS[check_id], {"linux": linux, "darwin": darwin, "windows": windows})


REGISTRY: Dict[str, CheckFamily] = {family.spec.id: family for family in (
    _family("os_identity", with_lifecycle(os_identity_linux.collect), with_lifecycle(os_identity_darwin.collect),
            with_lifecycle(os_identity_windows.collect)),
    _family("disk_encryption", disk_encryption_linux.collect, disk_encryption_darwin.collect,
            disk_encryption_windows.collect),
    _family("vpn", vpn_linux.collect, vpn_darwin.collect, vpn_windows.collect),
    _family("patches", patches_linux.collect, patches_darwin.collect, patches_windows.collect),
    _family("firewall", firewall_linux.collect, firewall_darwin.collect, firewall_windows.collect),
    _family("screen_lock", screen_lock_linux.collect, screen_lock_darwin.collect, screen_lock_windows.collect),
    _family("antivirus", antivirus_linux.collect, antivirus_darwin.collect, antivirus_windows.collect),
    _family("local_admin", local_admin_linux.collect, local_admin_darwin.collect, local_admin_windows.collect),
    _family("secure_boot", secure_boot_linux.collect, secure_boot_darwin.collect, secure_boot_windows.collect),
    _family("remote_access", remote_access_linux.collect, remote_access_darwin.collect,
            remote_access_windows.collect),
    _family("time_sync", time_sync_linux.collect, time_sync_darwin.collect, time_sync_windows.collect),
    _family("wifi", wifi_linux.collect, wifi_darwin.collect, wifi_windows.collect),
)}


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
