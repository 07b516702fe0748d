"""Remote access on Linux: TCP listening sockets (``ss -Hltnp``) matched to remote-login services.

``ss -H -l -t -n -p`` prints one line per listening TCP socket: State Recv-Q Send-Q Local:Port Peer:Port
and, when the agent may see the owning process (root), ``users:(("sshd",pid=812,fd=3))``. Local addresses
are 0.0.0.0, [::], *, an address, or an address with a scope (``[fe80::1]%eth0``, ``127.0.0.53%lo``).
Whether a firewall admits the port is not judged here (the firewall check reports the ruleset).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.remote_access.common import reachable, service_for, summarise
from agent.probes import Host

CHECK = "remote_access"
SS = ["ss", "-Hltnp"]
_PROCESS = re.compile(r'users:\(\("([^"]+)"')


def parse_ss(text: str) -> List[Dict[str, Any]]:
    """Listening sockets: {address, port, process}."""
    sockets = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4 or fields[0] != "LISTEN":
            raise ParseError(f"ss -Hltnp: expected 'LISTEN recv send local:port peer:port [users:...]', "
                             f"found {line[:80]!r}")
        local = fields[3]
        address, sep, port = local.rpartition(":")
        if not sep or not port.isdigit():
            raise ParseError(f"ss -Hltnp: expected a local address:port, found {local!r}")
        process = _PROCESS.search(line)
        sockets.append({"address": address, "port": int(port), "process": process.group(1) if process else None})
    return sockets


def listeners_from(sockets: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    found: Dict[tuple, Dict[str, Any]] = {}
    for sock in sockets:
        service = service_for(sock["port"], sock["process"])
        if service is None:
            continue
        key = (service, sock["address"], sock["port"])
        found[key] = {"service": service, "address": sock["address"], "port": sock["port"],
                      "process": sock["process"], "reachable": reachable(sock["address"]), "firewall_allows": None}
    return sorted(found.values(), key=lambda item: (item["service"], item["port"], item["address"]))


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(SS, timeout=10)
    if not result.ok:
        return CheckOutcome.probe_failed(CHECK, result)
    sockets = parse_ss(result.stdout)
    listeners = listeners_from(sockets)
    exposed, names = summarise(listeners)
    evidence = [f"ss -Hltnp: {len(sockets)} listening TCP socket(s)"]
    evidence.extend(f"{item['service']} ({item['process'] or 'process not visible'}) listens on "
                    f"{item['address']}:{item['port']}" + ("" if item["reachable"] else " (loopback only)")
                    for item in listeners)
    if not listeners:
        evidence.append("no remote-login or file-sharing service listens")
    return CheckOutcome(CHECK, facts={"exposed": exposed, "exposed_services": names, "listeners": listeners},
                        evidence=evidence)
