"""Wi-Fi on Windows: ``netsh wlan show interfaces``, in whatever language Windows displays.

The labels are translated (Authentication / Authentification, Cipher / Chiffrement, State / État)
and so are some values (Open / Ouvrir, WPA2-Personal / WPA2 - Personnel). The block of an interface
starts at its Name line and contains a GUID line; "SSID" is printed only when connected (the BSSID
and AP BSSID labels are different words). Authentication values are read by their vendor-neutral
part (WPA, WPA2, WPA3, OWE) and the cipher by its name (CCMP, GCMP, TKIP, WEP): an "Open"
authentication with the WEP cipher is a WEP network. The WLAN service stopped, or no wireless
interface, means no Wi-Fi to judge.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.checks.wifi.common import facts as wifi_facts
from agent.probes import Host

CHECK = "wifi"
NETSH = ["netsh", "wlan", "show", "interfaces"]
AUTH_LABELS = ("authentication", "authentification", "authentifizierung", "autenticación", "autenticação",
               "المصادقة")
CIPHER_LABELS = ("cipher", "chiffrement", "verschlüsselung", "cifrado", "codificação", "التشفير")
OPEN_WORDS = ("open", "ouvrir", "ouvert", "offen", "abierta", "aberta", "مفتوح")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _blocks(text: str) -> List[Dict[str, str]]:
    """One {label (lower case): value} per interface; a block starts at the line before its GUID."""
    pairs: List[Tuple[str, str]] = []
    for line in text.splitlines():
        label, sep, value = line.partition(" : ") if " : " in line else line.partition(":")
        if sep and label.strip():
            pairs.append((label.strip().lower(), value.strip()))
    blocks: List[Dict[str, str]] = []
    for index, (label, value) in enumerate(pairs):
        if _GUID.match(value):
            block: Dict[str, str] = {"_name": pairs[index - 2][1] if index >= 2 else ""}
            for other_label, other_value in pairs[index:]:
                if other_label != label and _GUID.match(other_value):
                    break
                block.setdefault(other_label, other_value)
            blocks.append(block)
    return blocks


def classify(auth: str, cipher: str) -> Tuple[Optional[str], bool]:
    """(security, enterprise) from localised Authentication and Cipher values; None when unrecognised."""
    text = auth.lower()
    enterprise = bool(re.search(r"enterprise|entreprise|unternehmen|empresa|802\.1x", text))
    if cipher.strip().upper().startswith("WEP"):
        return "wep", False
    if "owe" in text:
        return "owe", False
    for word, name in (("wpa3", "wpa3"), ("wpa2", "wpa2"), ("wpa", "wpa")):
        if word in text.replace(" ", ""):
            return name, enterprise
    if text.strip() in OPEN_WORDS:
        return "open", False
    if text.strip() in ("shared", "partagée", "partagé", "gemeinsam"):
        return "wep", False
    return None, enterprise


def parse_interfaces(text: str) -> List[Dict[str, Any]]:
    interfaces = []
    for block in _blocks(text):
        auth = next((v for k, v in block.items() if k in AUTH_LABELS), None)
        cipher = next((v for k, v in block.items() if k in CIPHER_LABELS), "")
        connected = "ssid" in block
        security, enterprise = classify(auth, cipher) if connected and auth is not None else (None, False)
        if connected and security is None:
            raise ParseError(f"netsh wlan show interfaces: expected an authentication (WPA2-Personal, Open ...) and a "
                             f"cipher (CCMP, WEP ...), found {auth!r} / {cipher!r}")
        interfaces.append({"name": block["_name"], "connected": connected, "ssid": block.get("ssid") or None,
                           "security": security, "enterprise": enterprise})
    return interfaces


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(NETSH, timeout=15)
    if result.error is not None:
        return CheckOutcome.probe_failed(CHECK, result)
    output = result.stdout + result.stderr
    if result.rc != 0 and "wlansvc" in output.lower():
        return CheckOutcome.not_applicable(CHECK, message("wifi_no_interface"),
                                           ["netsh wlan: the WLAN AutoConfig service (wlansvc) is not running"])
    if result.rc != 0:
        return CheckOutcome.probe_failed(CHECK, result)
    interfaces = parse_interfaces(result.stdout)
    if not interfaces:
        return CheckOutcome.not_applicable(CHECK, message("wifi_no_interface"),
                                           ["netsh wlan show interfaces: no wireless interface"])
    names = [i["name"] for i in interfaces]
    active = next((i for i in interfaces if i["connected"]), None)
    evidence = [f"Wi-Fi interfaces: {', '.join(names)}",
                "netsh wlan show interfaces: " + (f"connected to {active['ssid']!r} ({active['security']}"
                                                  f"{', enterprise' if active['enterprise'] else ''})"
                                                  if active else "not connected")]
    if active is None:
        return CheckOutcome(CHECK, facts=wifi_facts(names, False, None, None, None), evidence=evidence)
    return CheckOutcome(CHECK, facts=wifi_facts(names, True, active["ssid"], active["security"], active["enterprise"]),
                        evidence=evidence)
