"""Anti-malware on Windows: Microsoft Defender (Get-MpComputerStatus), the products registered with
Security Center (root/SecurityCenter2 AntiVirusProduct, client editions only) and known EDR processes.

Security Center's ``productState`` is a bit field: bits 12-15 say on (0x1000), snoozed (0x2000) or
expired (0x3000), bits 4-7 say whether signatures are out of date (0x10).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks._host_json import days_between, parse_processes, running_names
from agent.checks._windows_ps import (
    as_dict_list,
    is_missing,
    parse_ps_json,
    ps_bool,
    ps_date,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.antivirus.signatures import signature_facts
from agent.checks.base import CheckOutcome
from agent.checks.messages import Message, english, message
from agent.probes import Host

CHECK = "antivirus"

DEFENDER_PS = ("Get-MpComputerStatus | Select-Object AMServiceEnabled,AntivirusEnabled,RealTimeProtectionEnabled,"
               "OnAccessProtectionEnabled,AntivirusSignatureLastUpdated,AntivirusSignatureAge,"
               "AntivirusSignatureVersion,AMProductVersion,AMRunningMode,IsTamperProtected")
SECURITY_CENTER_PS = ("Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntiVirusProduct | "
                      "Select-Object displayName,productState,pathToSignedProductExe,timestamp")

EDR_PROCESSES: Dict[str, List[str]] = {
    "CrowdStrike Falcon": ["CSFalconService.exe", "CSFalconContainer.exe"],
    "SentinelOne": ["SentinelAgent.exe", "SentinelServiceHost.exe"],
    "Microsoft Defender for Endpoint": ["MsSense.exe"],
    "Sophos": ["SophosHealth.exe", "SEDService.exe", "SophosFileScanner.exe"],
    "ESET": ["ekrn.exe"],
    "Trellix/McAfee": ["mfemms.exe", "masvc.exe", "xagt.exe"],
    "Symantec Endpoint Protection": ["ccSvcHst.exe"],
    "VMware Carbon Black": ["RepMgr.exe", "cb.exe"],
    "Cortex XDR": ["cyserver.exe", "cytray.exe"],
    "Kaspersky": ["avp.exe"],
    "Bitdefender": ["bdservicehost.exe", "EPSecurityService.exe"],
    "Trend Micro": ["PccNTMon.exe", "TmListen.exe", "coreServiceShell.exe"],
    "Cylance": ["CylanceSvc.exe"],
}


def decode_product_state(state: int) -> Dict[str, Any]:
    """Security Center productState -> {enabled, snoozed, expired, up_to_date}."""
    activity = state & 0xF000
    return {"enabled": activity == 0x1000, "snoozed": activity == 0x2000, "expired": activity == 0x3000,
            "up_to_date": (state & 0x00F0) == 0x00}


def parse_defender(text: str, now: float) -> Optional[Dict[str, Any]]:
    """Get-MpComputerStatus -> a product entry for Microsoft Defender Antivirus (None: no answer)."""
    rows = as_dict_list(parse_ps_json(text, "Get-MpComputerStatus"), "Get-MpComputerStatus")
    if not rows:
        return None
    row = rows[0]
    service = ps_bool(row.get("AMServiceEnabled"))
    antivirus = ps_bool(row.get("AntivirusEnabled"))
    realtime = ps_bool(row.get("RealTimeProtectionEnabled"))
    mode = ps_str(row.get("AMRunningMode")) or ""
    # In passive / EDR block mode another product does the scanning; Defender is not the antivirus.
    active_mode = not mode or mode.lower() == "normal"
    updated = ps_date(row.get("AntivirusSignatureLastUpdated"))
    age = days_between(updated, now)
    if age is None:
        reported_age = ps_int(row.get("AntivirusSignatureAge"))
        # 65535 is what Defender says when it has never had signatures
        age = float(reported_age) if reported_age is not None and reported_age < 65535 else None
    running = bool(service and antivirus and active_mode)
    return {"name": "Microsoft Defender Antivirus", "kind": "builtin", "running": running,
            "realtime": bool(realtime) if running else False, "signature_age_days": age,
            "version": ps_str(row.get("AMProductVersion")), "_mode": mode or "Normal",
            "_signatures": ps_str(row.get("AntivirusSignatureVersion"))}


def parse_security_center(text: str) -> List[Dict[str, Any]]:
    """AntiVirusProduct instances -> product entries decoded from productState."""
    products = []
    for row in as_dict_list(parse_ps_json(text, "SecurityCenter2 AntiVirusProduct"), "SecurityCenter2 AntiVirusProduct"):
        name = ps_str(row.get("displayName")) or "unknown product"
        state = ps_int(row.get("productState"))
        decoded = decode_product_state(state) if state is not None else {"enabled": False, "up_to_date": False}
        products.append({"name": name, "kind": "antivirus", "running": decoded["enabled"],
                         "realtime": decoded["enabled"], "signature_age_days": None, "version": None,
                         "signatures_up_to_date": decoded["up_to_date"] if state is not None else None,
                         "_state": state})
    return products


def merge_products(defender: Optional[Dict[str, Any]], center: List[Dict[str, Any]],
                   edrs: List[str]) -> Dict[str, Any]:
    products: List[Dict[str, Any]] = []
    if defender is not None:
        products.append(defender)
    for product in center:
        if defender is not None and "defender" in product["name"].lower():
            continue  # the same product, already read in detail
        products.append(product)
    for name in edrs:
        products.append({"name": name, "kind": "edr", "running": True, "realtime": None,
                         "signature_age_days": None, "version": None})
    running = [p for p in products if p["running"]]
    ages = [p["signature_age_days"] for p in running if p.get("signature_age_days") is not None]
    realtime_known = [p["realtime"] for p in running if p.get("realtime") is not None]
    public = [{k: p.get(k) for k in ("name", "kind", "running", "realtime", "signature_age_days", "version",
                                     "signatures_up_to_date")}
              for p in products]
    return {
        "running": bool(running),
        "products": public,
        # Defender running with real-time protection off protects nothing: False, which the baseline fails
        "realtime_protection": any(realtime_known) if realtime_known else (None if running else False),
        "signature_age_days": min(ages) if ages else None,
        **signature_facts(running),
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    now = host.now()
    evidence: List[str] = []
    defender: Optional[Dict[str, Any]] = None
    center: List[Dict[str, Any]] = []
    failures: List[Message] = []

    result = run_ps(host, DEFENDER_PS)
    failure = ps_failure_message(result, "Get-MpComputerStatus")
    if failure:
        failures.append(failure)
    else:
        defender = parse_defender(result.stdout, now)
        if defender:
            evidence.append(f"Get-MpComputerStatus: mode {defender['_mode']}, real-time {defender['realtime']}, "
                            f"signatures {defender['_signatures']} age {defender['signature_age_days']} days")

    sc = run_ps(host, SECURITY_CENTER_PS)
    sc_failure = ps_failure_message(sc, "SecurityCenter2 AntiVirusProduct")
    if sc_failure:
        if sc.error is None and is_missing(sc):
            evidence.append("Security Center is not available (server edition)")
        else:
            failures.append(sc_failure)
    else:
        center = parse_security_center(sc.stdout)
        evidence.extend(f"Security Center: {p['name']} productState {p['_state']} -> "
                        f"{'on' if p['running'] else 'off'}, signatures "
                        f"{'up to date' if p['signatures_up_to_date'] else 'out of date'}" for p in center)

    procs = host.processes()
    edrs: List[str] = []
    if procs.error is None:
        edrs = running_names(parse_processes(procs.stdout), EDR_PROCESSES)
        evidence.extend(f"process of {name} running" for name in edrs)
    elif not any(p["running"] for p in ([defender] if defender else []) + center):
        # no product seen running and no way to look for EDR agents: unknown, not "none"
        failures.append(procs.failure_message())
        return CheckOutcome.error(CHECK, message("several", items=failures) if len(failures) > 1
                                  else procs.failure_message(), evidence)
    else:
        evidence.append(f"process list unavailable: {procs.describe_failure()}")

    if defender is None and not center and not edrs and failures:
        # nothing observed at all: that is not "no anti-malware", it is "could not look"
        return CheckOutcome.error(CHECK, message("several", items=failures), evidence)
    evidence.extend(f"not observed: {english(f)}" for f in failures)
    facts = merge_products(defender, center, edrs)
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
