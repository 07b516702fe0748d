"""Time synchronisation on Windows: the W32Time service and ``w32tm /query /status``.

Both commands print in the display language, so only what is not translated is read: the service state
number of ``sc.exe query w32time`` ("STATE : 4  RUNNING", "ÉTAT : 4  RUNNING"), and in w32tm's status
the leap indicator (first line, 3 = not synchronised) and the stratum (second line, 0 = unspecified,
16 = unsynchronised), in their fixed order. The source is the line with the peer's flags (",0x9") or
the local clock.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "time_sync"
SC_QUERY = ["sc.exe", "query", "w32time"]
W32TM_STATUS = ["w32tm", "/query", "/status"]
_STATE = re.compile(r":\s*(\d)\s+(RUNNING|STOPPED|START_PENDING|STOP_PENDING|PAUSED)")
_NUMBER = re.compile(r":\s*(\d+)")


def parse_sc_state(text: str) -> bool:
    match = _STATE.search(text)
    if match is None:
        raise ParseError(f"sc.exe query w32time: expected a 'STATE : 4  RUNNING' line, found {text.strip()[:80]!r}")
    return match.group(1) == "4"


def parse_w32tm_status(text: str) -> Tuple[bool, Optional[str]]:
    """(synchronised, source) from ``w32tm /query /status`` in any display language."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ParseError(f"w32tm /query /status: expected the leap indicator and stratum lines, found "
                         f"{text.strip()[:80]!r}")
    leap, stratum = _NUMBER.search(lines[0]), _NUMBER.search(lines[1])
    if leap is None or stratum is None:
        raise ParseError(f"w32tm /query /status: expected 'Leap Indicator: N(...)' and 'Stratum: N (...)', found "
                         f"{lines[0][:60]!r} / {lines[1][:60]!r}")
    source = None
    for line in lines:
        value = line.split(":", 1)[1].strip() if ":" in line else ""
        if re.search(r",0x[0-9a-fA-F]+$", value) or value in ("Local CMOS Clock", "Free-running System Clock"):
            source = value.split(",")[0]
    synced = int(leap.group(1)) != 3 and 1 <= int(stratum.group(1)) <= 15 and source not in (
        "Local CMOS Clock", "Free-running System Clock")
    return synced, source


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    service = host.run(SC_QUERY, timeout=10)
    if service.error is not None:
        return CheckOutcome.probe_failed(CHECK, service)
    running = parse_sc_state(service.stdout) if service.rc == 0 else False
    evidence: List[str] = [f"sc.exe query w32time: {'running' if running else 'not running'}"]
    facts: Dict[str, Any] = {"service": "w32time" if running else None, "service_running": running,
                             "synchronized": False, "source": None, "offset_seconds": None}
    if not running:
        return CheckOutcome(CHECK, facts=facts, evidence=evidence)
    status = host.run(W32TM_STATUS, timeout=15)
    if not status.ok:
        return CheckOutcome.probe_failed(CHECK, status)
    synced, source = parse_w32tm_status(status.stdout)
    facts.update({"synchronized": synced, "source": source})
    evidence.append(f"w32tm /query /status: {'synchronised' if synced else 'not synchronised'}, source {source}")
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
