"""Remote access on Windows: listening TCP sockets, their processes, and the inbound firewall rules.

Get-NetTCPConnection -State Listen gives LocalAddress, LocalPort and OwningProcess; the process name
says what serves the port (RDP runs in svchost with TermService, so port 3389 names it). The enabled
inbound allow rules of the profiles in use (Get-NetConnectionProfile: Public, Private, Domain) say
whether the firewall admits the port: the default "File and Printer Sharing (SMB-In)" rule of the Domain
profile does not open port 445 on a home network.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Set

from agent.checks._windows_ps import (
    as_dict_list,
    parse_ps_object,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.remote_access.common import reachable, service_for, summarise
from agent.probes import Host

CHECK = "remote_access"
LISTEN_PS = (
    "$procs = @{}; Get-Process | ForEach-Object { $procs[$_.Id] = $_.ProcessName }; "
    "$listen = @(Get-NetTCPConnection -State Listen | Select-Object LocalAddress,LocalPort,"
    "@{n='Process';e={$procs[[int]$_.OwningProcess]}}); "
    "$active = @(Get-NetConnectionProfile | ForEach-Object { ([string]$_.NetworkCategory) -replace "
    "'DomainAuthenticated','Domain' }); "
    "$allowed = @(Get-NetFirewallRule -Enabled True -Direction Inbound -Action Allow | Where-Object { "
    "$p = [string]$_.Profile; $p -eq 'Any' -or @($active | Where-Object { $p -match $_ }).Count -gt 0 } | "
    "Get-NetFirewallPortFilter | "
    "Where-Object { $_.Protocol -eq 'TCP' -or $_.Protocol -eq 'Any' } | ForEach-Object { $_.LocalPort } | "
    "ForEach-Object { [string]$_ } | Sort-Object -Unique); "
    "[pscustomobject]@{Listen = $listen; AllowedPorts = $allowed}"
)


def parse_listen(text: str) -> Dict[str, Any]:
    data = parse_ps_object(text, "Get-NetTCPConnection -State Listen", ("Listen", "AllowedPorts"), required=("Listen",))
    sockets = []
    for row in as_dict_list(data.get("Listen"), "Get-NetTCPConnection"):
        port = ps_int(row.get("LocalPort"))
        if port is None:
            raise ParseError(f"Get-NetTCPConnection: expected a numeric LocalPort, found {row.get('LocalPort')!r}")
        sockets.append({"address": ps_str(row.get("LocalAddress")) or "", "port": port,
                        "process": ps_str(row.get("Process"))})
    allowed = data.get("AllowedPorts") or []
    return {"sockets": sockets, "allowed": {str(p) for p in (allowed if isinstance(allowed, list) else [allowed])}}


def _allows(port: int, allowed: Set[str]) -> bool:
    if "Any" in allowed or str(port) in allowed or (port == 3389 and "RPC" in allowed):
        return True
    for item in allowed:
        low, sep, high = item.partition("-")
        if sep and low.isdigit() and high.isdigit() and int(low) <= port <= int(high):
            return True
    return False


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, LISTEN_PS)
    failure = ps_failure_message(result, "Get-NetTCPConnection")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    data = parse_listen(result.stdout)
    found: Dict[tuple, Dict[str, Any]] = {}
    for sock in data["sockets"]:
        # svchost serves many things: only its port can say it is RDP (TermService) or SMB.
        process = None if (sock["process"] or "").lower() in ("svchost", "system") else sock["process"]
        service = service_for(sock["port"], process)
        if service is None:
            continue
        found[(service, sock["address"], sock["port"])] = {
            "service": service, "address": sock["address"], "port": sock["port"], "process": sock["process"],
            "reachable": reachable(sock["address"]), "firewall_allows": _allows(sock["port"], data["allowed"])}
    listeners: List[Dict[str, Any]] = sorted(found.values(), key=lambda i: (i["service"], i["port"], i["address"]))
    exposed, names = summarise(listeners)
    evidence = [f"Get-NetTCPConnection -State Listen: {len(data['sockets'])} listening socket(s)"]
    evidence.extend(f"{i['service']} ({i['process']}) listens on {i['address']}:{i['port']}, firewall "
                    f"{'allows' if i['firewall_allows'] else 'blocks'} it" for i in listeners)
    return CheckOutcome(CHECK, facts={"exposed": exposed, "exposed_services": names, "listeners": listeners},
                        evidence=evidence)
