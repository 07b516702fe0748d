"""Wi-Fi on macOS: ``system_profiler SPAirPortDataType -json`` (the airport tool is gone since 14.4).

Each interface of ``spairport_airport_interfaces`` has ``spairport_status_information``
(spairport_status_connected ...) and, when associated, ``spairport_current_network_information`` with
``spairport_security_mode``: spairport_security_mode_none, _wep, _wpa_personal, _wpa2_personal,
_wpa3_personal, _wpa2_enterprise, _wpa3_transition, _owe ... The SSID (``_name``) reads "<redacted>"
when the process lacks Location Services permission: the security is still reported.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.checks.wifi.common import facts as wifi_facts
from agent.probes import Host

CHECK = "wifi"
AIRPORT = ["system_profiler", "SPAirPortDataType", "-json"]


def security_mode(mode: str) -> Tuple[str, bool]:
    """spairport_security_mode_* -> (security, enterprise)."""
    text = mode.lower().replace("spairport_security_mode_", "")
    enterprise = "enterprise" in text
    if text in ("none", "open"):
        return "open", False
    if "owe" in text:
        return "owe", False
    if "wep" in text:
        return "wep", False
    if "wpa3" in text:
        return ("wpa2" if "transition" in text else "wpa3"), enterprise
    if "wpa2" in text:
        return "wpa2", enterprise
    if "wpa" in text:
        return "wpa", enterprise
    raise ParseError(f"system_profiler SPAirPortDataType: expected a spairport_security_mode_* value (none, wep, wpa*, "
                     f"owe), found {mode!r}")


def parse_airport(text: str) -> Tuple[List[str], Optional[Dict[str, Any]]]:
    """(Wi-Fi interface names, the connected network {ssid, security, enterprise} or None)."""
    try:
        entries = json.loads(text)["SPAirPortDataType"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"system_profiler SPAirPortDataType -json: expected SPAirPortDataType, found "
                         f"{text.strip()[:80]!r}") from exc
    names: List[str] = []
    connected: Optional[Dict[str, Any]] = None
    for entry in entries if isinstance(entries, list) else []:
        for interface in entry.get("spairport_airport_interfaces", []) if isinstance(entry, dict) else []:
            if not isinstance(interface, dict):
                continue
            names.append(str(interface.get("_name")))
            network = interface.get("spairport_current_network_information")
            if (connected is None and isinstance(network, dict)
                    and interface.get("spairport_status_information") == "spairport_status_connected"):
                security, enterprise = security_mode(str(network.get("spairport_security_mode", "")))
                ssid = network.get("_name")
                connected = {"ssid": None if ssid in (None, "<redacted>") else str(ssid), "security": security,
                             "enterprise": enterprise}
    return names, connected


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(AIRPORT, timeout=30)
    if not result.ok:
        return CheckOutcome.probe_failed(CHECK, result)
    names, network = parse_airport(result.stdout)
    if not names:
        return CheckOutcome.not_applicable(CHECK, message("wifi_no_interface"),
                                           ["system_profiler SPAirPortDataType: no Wi-Fi interface"])
    evidence = [f"Wi-Fi interfaces: {', '.join(names)}",
                "system_profiler SPAirPortDataType: " + (f"connected ({network['security']})" if network
                                                         else "not connected")]
    if network is None:
        return CheckOutcome(CHECK, facts=wifi_facts(names, False, None, None, None), evidence=evidence)
    return CheckOutcome(CHECK, facts=wifi_facts(names, True, network["ssid"], network["security"],
                                                network["enterprise"]), evidence=evidence)
