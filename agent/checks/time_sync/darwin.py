"""Time synchronisation on macOS: timed running, network time on, and the measured offset.

``systemsetup -getusingnetworktime`` prints "Network Time: On|Off" and ``systemsetup
-getnetworktimeserver`` "Network Time Server: time.apple.com" (root). ``sntp SERVER`` queries the
server without setting the clock and prints "+0.012345 +/- 0.021853 time.apple.com 17.253.x.x": the
clock is synchronised when the offset is within a second. Offline, sntp cannot answer: unknown.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._host_json import parse_processes
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "time_sync"
USING_NETWORK_TIME = ["systemsetup", "-getusingnetworktime"]
NETWORK_TIME_SERVER = ["systemsetup", "-getnetworktimeserver"]
MAX_OFFSET_SECONDS = 1.0
_SNTP = re.compile(r"^([+-]?\d+\.\d+)\s+\+/-\s+\S+\s+(\S+)", re.MULTILINE)


def parse_switch(text: str, label: str) -> bool:
    match = re.search(rf"{label}:\s*(On|Off)", text)
    if match is None:
        raise ParseError(f"systemsetup: expected '{label}: On' or '{label}: Off', found {text.strip()[:80]!r}")
    return match.group(1) == "On"


def parse_server(text: str) -> Optional[str]:
    match = re.search(r"Network Time Server:\s*(\S+)", text)
    return match.group(1) if match else None


def parse_sntp(text: str) -> float:
    match = _SNTP.search(text)
    if match is None:
        raise ParseError(f"sntp: expected '+0.001234 +/- 0.02 server address', found {text.strip()[:80]!r}")
    return float(match.group(1))


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    procs = host.processes()
    if procs.error is not None:
        return CheckOutcome.probe_failed(CHECK, procs)
    running = any(row["name"] == "timed" for row in parse_processes(procs.stdout))
    using = host.run(USING_NETWORK_TIME, timeout=10)
    if not using.ok:
        return CheckOutcome.probe_failed(CHECK, using)
    network_time = parse_switch(using.stdout, "Network Time")
    evidence: List[str] = [f"timed {'running' if running else 'not running'}", f"systemsetup: {using.stdout.strip()}"]
    facts: Dict[str, Any] = {"service": "timed" if running else None, "service_running": running and network_time,
                             "synchronized": False, "source": None, "offset_seconds": None}
    if not (running and network_time):
        return CheckOutcome(CHECK, facts=facts, evidence=evidence)
    server_probe = host.run(NETWORK_TIME_SERVER, timeout=10)
    server = parse_server(server_probe.stdout) if server_probe.ok else None
    facts["source"] = server
    if server is None:
        facts["synchronized"] = None
        evidence.append(f"network time server unknown: {server_probe.describe_failure()}")
        return CheckOutcome(CHECK, facts=facts, evidence=evidence)
    sntp = host.run(["sntp", server], timeout=15)
    if not sntp.ok:
        facts["synchronized"] = None
        evidence.append(f"sntp {server}: {sntp.describe_failure()} (offline?)")
        return CheckOutcome(CHECK, facts=facts, evidence=evidence)
    offset = parse_sntp(sntp.stdout)
    # sntp prints the correction to apply: the clock is ahead when it is negative.
    facts.update({"offset_seconds": -offset, "synchronized": abs(offset) <= MAX_OFFSET_SECONDS})
    evidence.append(f"sntp {server}: offset {offset:+.6f} s")
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
