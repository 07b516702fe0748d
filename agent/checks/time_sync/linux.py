"""Time synchronisation on Linux: which time service runs, and what it says about the clock.

The process list tells which service runs (systemd-timesyncd, chronyd, ntpd, openntpd). Then the
service is asked: ``chronyc -n tracking`` (Leap status "Not synchronised" when it has no source;
"System time : X seconds fast/slow of NTP time"), ``ntpq -pn`` (a peer marked '*' is the selected
source), ``timedatectl show`` (NTPSynchronized=yes once timesyncd, or any service, set the kernel's
synchronised flag) or timesyncd's /run/systemd/timesync/synchronized stamp. No service running means
the clock is not synchronised by one, whatever it shows now.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks._host_json import parse_processes
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import NOT_FOUND, Host

CHECK = "time_sync"
# Process name -> service name, in order of preference when several run.
SERVICES: Tuple[Tuple[str, str], ...] = (("chronyd", "chronyd"), ("ntpd", "ntpd"), ("openntpd", "ntpd"),
                                         ("systemd-timesyncd", "systemd-timesyncd"),
                                         ("systemd-timesyn", "systemd-timesyncd"))
CHRONYC = ["chronyc", "-n", "tracking"]
NTPQ = ["ntpq", "-pn"]
TIMEDATECTL = ["timedatectl", "show", "-p", "NTP", "-p", "NTPSynchronized"]
TIMESYNCD_STAMP = "/run/systemd/timesync/synchronized"


def running_services(processes_json: str) -> List[str]:
    names = {row["name"] for row in parse_processes(processes_json)}
    found: List[str] = []
    for process, service in SERVICES:
        if process in names and service not in found:
            found.append(service)
    return found


def parse_chronyc_tracking(text: str) -> Tuple[bool, Optional[str], Optional[float]]:
    """(synchronised, source, offset seconds) from ``chronyc -n tracking``."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    leap = values.get("Leap status")
    if leap is None:
        raise ParseError(f"chronyc tracking: expected a 'Leap status' line, found {text.strip()[:80]!r}")
    synced = leap.lower() != "not synchronised"
    reference = values.get("Reference ID", "")
    match = re.search(r"\(([^)]*)\)", reference)
    source = match.group(1) if match and match.group(1) and synced else None
    offset: Optional[float] = None
    system = re.match(r"([0-9.]+) seconds (fast|slow)", values.get("System time", ""))
    if system:
        offset = float(system.group(1)) * (1 if system.group(2) == "fast" else -1)
    return synced, source, offset


def parse_ntpq_peers(text: str) -> Tuple[bool, Optional[str], Optional[float]]:
    """``ntpq -pn``: the line starting with '*' is the selected peer; offset is in milliseconds."""
    lines = text.splitlines()
    if not any(line.lstrip().startswith("remote") for line in lines):
        raise ParseError(f"ntpq -pn: expected the peer table header, found {text.strip()[:80]!r}")
    for line in lines:
        if line.startswith("*"):
            fields = line[1:].split()
            # ntpq's offset is the source's time minus ours, in milliseconds: positive when we are behind.
            offset = -float(fields[8]) / 1000.0 if len(fields) >= 10 else None
            return True, fields[0], offset
    return False, None, None


def parse_timedatectl(text: str) -> Dict[str, str]:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "NTPSynchronized" not in values:
        raise ParseError(f"timedatectl show: expected NTPSynchronized=yes|no, found {text.strip()[:80]!r}")
    return values


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    procs = host.processes()
    if procs.error is not None:
        return CheckOutcome.probe_failed(CHECK, procs)
    services = running_services(procs.stdout)
    evidence: List[str] = [f"time services running: {', '.join(services) or 'none'}"]
    facts: Dict[str, Any] = {"service": services[0] if services else None, "service_running": bool(services),
                             "synchronized": False, "source": None, "offset_seconds": None}
    if not services:
        evidence.append("no time service (systemd-timesyncd, chronyd, ntpd) runs: nothing keeps the clock right")
        return CheckOutcome(CHECK, facts=facts, evidence=evidence)
    service = services[0]
    if service == "chronyd":
        result = host.run(CHRONYC, timeout=10)
        if not result.ok:
            return CheckOutcome.probe_failed(CHECK, result)
        synced, source, offset = parse_chronyc_tracking(result.stdout)
        evidence.append(f"chronyc tracking: {'synchronised to ' + str(source) if synced else 'not synchronised'}")
    elif service == "ntpd":
        result = host.run(NTPQ, timeout=10)
        if not result.ok:
            return CheckOutcome.probe_failed(CHECK, result)
        synced, source, offset = parse_ntpq_peers(result.stdout)
        evidence.append(f"ntpq -pn: {'selected peer ' + str(source) if synced else 'no selected peer'}")
    else:
        source, offset = None, None
        shown = host.run(TIMEDATECTL, timeout=10)
        if shown.ok:
            synced = parse_timedatectl(shown.stdout)["NTPSynchronized"] == "yes"
            evidence.append(f"timedatectl: NTPSynchronized={'yes' if synced else 'no'}")
        else:
            stamp = host.stat(TIMESYNCD_STAMP)
            if stamp.error not in (None, NOT_FOUND):
                return CheckOutcome.probe_failed(CHECK, stamp)
            synced = stamp.error is None
            evidence.append(f"{shown.describe_failure()}; {TIMESYNCD_STAMP}: {'present' if synced else 'absent'}")
    facts.update({"synchronized": synced, "source": source, "offset_seconds": offset})
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
