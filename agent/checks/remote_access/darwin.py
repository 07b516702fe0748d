"""Remote access on macOS: listening TCP sockets from ``lsof -nP -iTCP -sTCP:LISTEN``.

Remote Login, Screen Sharing and File Sharing are started on demand by launchd, so the socket on 22,
5900 or 445 belongs to ``launchd`` (not sshd): the port says which service it is. Remote Management
adds ARDAgent on 3283. AirPlay Receiver (ControlCenter on 5000/7000) and rapportd are not remote login.
lsof lines: COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME, NAME like ``*:22 (LISTEN)`` or
``127.0.0.1:5900 (LISTEN)`` or ``[::1]:22 (LISTEN)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.remote_access.common import reachable, service_for, summarise
from agent.probes import Host

CHECK = "remote_access"
LSOF = ["lsof", "-nP", "-iTCP", "-sTCP:LISTEN"]


def parse_lsof(text: str) -> List[Dict[str, Any]]:
    sockets = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "COMMAND":
            continue
        if len(fields) < 10 or fields[-1] != "(LISTEN)":
            raise ParseError(f"lsof -iTCP -sTCP:LISTEN: expected 'COMMAND PID USER ... NAME (LISTEN)', found "
                             f"{line[:80]!r}")
        address, _, port = fields[-2].rpartition(":")
        if not port.isdigit():
            raise ParseError(f"lsof: expected ADDRESS:PORT, found {fields[-2]!r}")
        sockets.append({"address": address, "port": int(port), "process": fields[0]})
    return sockets


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(LSOF, timeout=20)
    # lsof exits 1 when nothing matches (no listening socket at all).
    if result.error is not None or (result.rc not in (0, 1)) or (result.rc == 1 and result.stdout.strip()):
        return CheckOutcome.probe_failed(CHECK, result)
    sockets = parse_lsof(result.stdout)
    found: Dict[tuple, Dict[str, Any]] = {}
    for sock in sockets:
        process = None if sock["process"] == "launchd" else sock["process"]
        service = service_for(sock["port"], process)
        if service is None:
            continue
        found[(service, sock["address"], sock["port"])] = {
            "service": service, "address": sock["address"], "port": sock["port"], "process": sock["process"],
            "reachable": reachable(sock["address"]), "firewall_allows": None}
    listeners = sorted(found.values(), key=lambda item: (item["service"], item["port"], item["address"]))
    exposed, names = summarise(listeners)
    evidence = [f"lsof -iTCP -sTCP:LISTEN: {len(sockets)} listening socket(s)"]
    evidence.extend(f"{i['service']} ({i['process']}) listens on {i['address']}:{i['port']}" for i in listeners)
    return CheckOutcome(CHECK, facts={"exposed": exposed, "exposed_services": names, "listeners": listeners},
                        evidence=evidence)
