"""Anti-malware on macOS: XProtect (built in; its version and the age of its signature bundle) and known
EDR / anti-malware agents by their running processes.

XProtect lives in /Library/Apple/System/Library/CoreServices/XProtect.bundle; since macOS 15 updates may
arrive through /private/var/protected/xprotect/XProtect.bundle: the newer of the two counts. Its age is
the modification time of the bundle's Info.plist. XProtect scans on launch and on file download
(real time) and cannot be turned off by the user.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks._host_json import days_between, parse_processes, running_names
from agent.checks._plist import parse_plist_dict
from agent.checks.antivirus.linux import parse_mdatp_health
from agent.checks.antivirus.signatures import signature_facts
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import Message, english, message
from agent.probes import Host

CHECK = "antivirus"

DEFENDER = "Microsoft Defender for Endpoint"
MDATP_HEALTH = ["mdatp", "health", "--output", "json"]

XPROTECT_PLISTS = (
    "/Library/Apple/System/Library/CoreServices/XProtect.bundle/Contents/Info.plist",
    "/private/var/protected/xprotect/XProtect.bundle/Contents/Info.plist",
)

EDR_PROCESSES: Dict[str, List[str]] = {
    "CrowdStrike Falcon": ["falcond", "com.crowdstrike.falcon.Agent"],
    "SentinelOne": ["sentineld", "SentinelAgent"],
    DEFENDER: ["wdavdaemon"],
    "Sophos": ["SophosScanD", "SophosAntiVirus", "SophosEndpointSecurity"],
    "ESET": ["esets_daemon", "ESET Endpoint Security"],
    "Jamf Protect": ["JamfProtect"],
    "VMware Carbon Black": ["CbOsxSensorService"],
    "Malwarebytes": ["RTProtectionDaemon"],
    "Trend Micro": ["iCoreService"],
    "Elastic Defend": ["elastic-endpoint"],
    "Cortex XDR": ["cortex-xdr", "pmd"],
}


def plutil(path: str) -> List[str]:
    return ["plutil", "-convert", "xml1", "-o", "-", path]


def parse_xprotect_version(text: str) -> str:
    info = parse_plist_dict(text, "XProtect Info.plist")
    version = info.get("CFBundleShortVersionString") or info.get("CFBundleVersion")
    if not version:
        raise ParseError("XProtect Info.plist: expected CFBundleShortVersionString")
    return str(version)


def parse_mtime(text: str) -> Optional[float]:
    try:
        value = json.loads(text).get("mtime")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _version_key(version: str) -> Tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def summarise(xprotect: Optional[Dict[str, Any]], edrs: List[str],
              details: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """The facts; ``details`` adds what a product says about itself (Defender's mdatp health)."""
    products: List[Dict[str, Any]] = []
    if xprotect is not None:
        products.append({"name": "XProtect", "kind": "builtin", "running": True, "realtime": True,
                         "signature_age_days": xprotect["age"], "version": xprotect["version"]})
    for name in edrs:
        entry: Dict[str, Any] = {"name": name, "kind": "edr", "running": True, "realtime": None,
                                 "signature_age_days": None, "version": None}
        entry.update((details or {}).get(name, {}))
        products.append(entry)
    ages = [p["signature_age_days"] for p in products if p["signature_age_days"] is not None]
    return {"running": bool(products), "products": products,
            "realtime_protection": True if products else False,
            "signature_age_days": min(ages) if ages else None,
            **signature_facts(products)}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    now = host.now()
    evidence: List[str] = []
    best: Optional[Dict[str, Any]] = None
    failures: List[Message] = []
    for path in XPROTECT_PLISTS:
        probe = host.run(plutil(path))
        if not probe.ok:
            failures.append(probe.failure_message())
            continue
        version = parse_xprotect_version(probe.stdout)
        stat = host.stat(path)
        mtime = parse_mtime(stat.stdout) if stat.error is None else None
        candidate = {"version": version, "age": days_between(mtime, now), "path": path}
        evidence.append(f"XProtect {version} at {path}, updated {candidate['age']} days ago")
        if best is None or _version_key(version) > _version_key(best["version"]):
            best = candidate

    edrs: List[str] = []
    details: Dict[str, Dict[str, Any]] = {}
    procs = host.processes()
    if procs.error is None:
        edrs = running_names(parse_processes(procs.stdout), EDR_PROCESSES)
        evidence.extend(f"process of {name} running" for name in edrs)
        if DEFENDER in edrs:
            health = host.run(MDATP_HEALTH, timeout=20.0)
            if health.ok:
                parsed = parse_mdatp_health(health.stdout)
                details[DEFENDER] = {k: parsed[k] for k in ("realtime", "signature_age_days", "version")}
                evidence.append(f"mdatp health: real-time {parsed['realtime']}, definitions "
                                f"{parsed['signature_age_days']} days old")
            else:
                evidence.append(f"Defender details unavailable: {health.describe_failure()}")
    elif best is None:
        return CheckOutcome.error(CHECK, message("several", items=[*failures, procs.failure_message()]), evidence)
    else:
        evidence.append(f"process list unavailable: {procs.describe_failure()}")
    if best is None:
        evidence.append("XProtect not found: " + "; ".join(english(f) for f in failures))
    return CheckOutcome(CHECK, facts=summarise(best, edrs, details), evidence=evidence)
