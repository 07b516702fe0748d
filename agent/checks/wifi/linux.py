"""Wi-Fi on Linux: wireless interfaces from sysfs, then NetworkManager or wpa_supplicant.

An interface is wireless when /sys/class/net/<name>/wireless (or phy80211) exists. ``nmcli -t -f
ACTIVE,SSID,SECURITY,DEVICE device wifi list --rescan no`` lists the networks in range; the ACTIVE one
is the connection, its SECURITY field says what the access point offers ("" or "--" open, "WEP",
"WPA1", "WPA2", "WPA3", "OWE", several separated by spaces, "802.1X" for enterprise). In terse mode
nmcli escapes ':' and '\\' in values with a backslash. Without NetworkManager, ``wpa_cli -i IFACE
status`` gives key_mgmt (NONE, WPA-PSK, WPA2-PSK, SAE, WPA2/IEEE 802.1X/EAP, OWE) and the ciphers.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.checks.wifi.common import facts as wifi_facts
from agent.checks.wifi.common import weakest
from agent.probes import NOT_FOUND, Host

CHECK = "wifi"
SYS_NET = "/sys/class/net"
NMCLI = ["nmcli", "-t", "-f", "ACTIVE,SSID,SECURITY,DEVICE", "device", "wifi", "list", "--rescan", "no"]


def split_terse(line: str) -> List[str]:
    """One nmcli -t line into fields, honouring the backslash escapes of ':' and '\\'."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def nm_security(text: str) -> Tuple[str, bool]:
    """nmcli SECURITY -> (weakest security, enterprise)."""
    words = text.split()
    if not words or words == ["--"]:
        return "open", False
    found = []
    for word in words:
        upper = word.upper()
        if upper == "WEP":
            found.append("wep")
        elif upper == "WPA1":
            found.append("wpa")
        elif upper == "WPA2":
            found.append("wpa2")
        elif upper == "WPA3":
            found.append("wpa3")
        elif upper == "OWE":
            found.append("owe")
    security = weakest(*found)
    if security is None:
        raise ParseError(f"nmcli SECURITY: expected WEP, WPA1, WPA2, WPA3, OWE or --, found {text!r}")
    return security, "802.1X" in words


def parse_nmcli(text: str) -> Optional[Dict[str, Any]]:
    """The active network {ssid, security, enterprise, device}, or None when none is active."""
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = split_terse(line)
        if len(fields) != 4 or fields[0] not in ("yes", "no"):
            raise ParseError(f"nmcli -t -f ACTIVE,SSID,SECURITY,DEVICE: expected 4 fields, found {line[:80]!r}")
        if fields[0] == "yes":
            security, enterprise = nm_security(fields[2])
            return {"ssid": fields[1] or None, "security": security, "enterprise": enterprise, "device": fields[3]}
    return None


def parse_wpa_cli_status(text: str) -> Optional[Dict[str, Any]]:
    """``wpa_cli status``: None unless wpa_state=COMPLETED."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "wpa_state" not in values:
        raise ParseError(f"wpa_cli status: expected wpa_state=..., found {text.strip()[:80]!r}")
    if values["wpa_state"] != "COMPLETED":
        return None
    key_mgmt = values.get("key_mgmt", "").upper()
    cipher = values.get("pairwise_cipher", "").upper()
    if key_mgmt == "NONE":
        security = "wep" if cipher.startswith("WEP") else "open"
    elif key_mgmt == "OWE":
        security = "owe"
    elif "SAE" in key_mgmt or "SUITE-B" in key_mgmt or "WPA3" in key_mgmt:
        security = "wpa3"
    elif key_mgmt.startswith("WPA2") or "FT-" in key_mgmt or "SHA256" in key_mgmt:
        security = "wpa2"
    elif key_mgmt.startswith("WPA"):
        security = "wpa2" if cipher == "CCMP" else "wpa"
    else:
        raise ParseError(f"wpa_cli status: expected key_mgmt NONE, OWE, SAE, WPA-PSK, WPA2-PSK or EAP, found {key_mgmt!r}")
    return {"ssid": values.get("ssid") or None, "security": security,
            "enterprise": "EAP" in key_mgmt or "802.1X" in key_mgmt}


def _wireless_interfaces(host: Host) -> Union[List[str], CheckOutcome]:
    listing = host.listdir(SYS_NET)
    if listing.error is not None:
        return CheckOutcome.probe_failed(CHECK, listing)
    found = []
    for name in listing.stdout.splitlines():
        if not name or name == "lo":
            continue
        if host.exists(f"{SYS_NET}/{name}/wireless") or host.exists(f"{SYS_NET}/{name}/phy80211"):
            found.append(name)
    return found


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    interfaces = _wireless_interfaces(host)
    if isinstance(interfaces, CheckOutcome):
        return interfaces
    if not interfaces:
        return CheckOutcome.not_applicable(CHECK, message("wifi_no_interface"),
                                           [f"{SYS_NET}: no interface with wireless or phy80211"])
    evidence = [f"Wi-Fi interfaces: {', '.join(interfaces)}"]
    nm = host.run(NMCLI, timeout=15)
    active: Optional[Dict[str, Any]]
    if nm.ok:
        active = parse_nmcli(nm.stdout)
        evidence.append("nmcli: " + (f"connected to {active['ssid']!r} ({active['security']}"
                                     f"{', 802.1X' if active['enterprise'] else ''})" if active else "no active network"))
    elif nm.error == NOT_FOUND or re.search(r"NetworkManager is not running", nm.stderr or ""):
        active = None
        for name in interfaces:
            status = host.run(["wpa_cli", "-i", name, "status"], timeout=10)
            if not status.ok:
                return CheckOutcome.error(CHECK, message("failure_and", first=nm.failure_message(),
                                                         second=status.failure_message()))
            active = parse_wpa_cli_status(status.stdout)
            evidence.append(f"wpa_cli -i {name} status: " + (f"connected to {active['ssid']!r} ({active['security']})"
                                                              if active else "not connected"))
            if active:
                break
    else:
        return CheckOutcome.probe_failed(CHECK, nm)
    if active is None:
        return CheckOutcome(CHECK, facts=wifi_facts(interfaces, False, None, None, None), evidence=evidence)
    return CheckOutcome(CHECK, facts=wifi_facts(interfaces, True, active["ssid"], active["security"],
                                                active["enterprise"]), evidence=evidence)
