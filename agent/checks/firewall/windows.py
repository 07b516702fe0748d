"""Firewall on Windows: the effective (ActiveStore, GPO applied) state of the three profiles.

Every profile — Domain, Private, Public — must be enabled: the laptop moves between networks and Windows
switches profile without asking. ``Enabled`` is a GpoBoolean (True, False, NotConfigured — which in the
active store means the default, on); ``DefaultInboundAction`` NotConfigured means the default, Block.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks._windows_ps import as_dict_list, parse_ps_json, ps_failure_message, ps_int, ps_str, run_ps
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "firewall"

PROFILES_PS = ("Get-NetFirewallProfile -PolicyStore ActiveStore | Select-Object Name,"
               "@{n='Enabled';e={[string]$_.Enabled}},"
               "@{n='DefaultInboundAction';e={[string]$_.DefaultInboundAction}}")
# Numeric forms PowerShell 5.1 prints when enums are not turned into names (GpoBoolean, Action).
_GPO_BOOLEAN = {0: "False", 1: "True", 2: "NotConfigured"}
_ACTION = {0: "NotConfigured", 2: "Allow", 4: "Block"}
EXPECTED_PROFILES = ("Domain", "Private", "Public")


def _enabled(value: Any) -> Optional[bool]:
    number = ps_int(value)
    if isinstance(value, bool):
        return value
    text = _GPO_BOOLEAN.get(number, "") if number is not None else (ps_str(value) or "")
    lowered = text.lower()
    if lowered in ("true", "notconfigured"):
        return True
    if lowered == "false":
        return False
    return None


def _inbound(value: Any) -> str:
    number = ps_int(value)
    text = _ACTION.get(number, "") if number is not None else (ps_str(value) or "")
    lowered = text.lower()
    if lowered in ("block", "notconfigured"):
        return "drop"
    if lowered == "allow":
        return "accept"
    return "unknown"


def parse_profiles(text: str) -> List[Dict[str, Any]]:
    rows = as_dict_list(parse_ps_json(text, "Get-NetFirewallProfile"), "Get-NetFirewallProfile")
    profiles = []
    for row in rows:
        name = ps_str(row.get("Name"))
        if not name:
            raise ParseError("Get-NetFirewallProfile: expected a Name for every profile")
        profiles.append({"name": name, "enabled": _enabled(row.get("Enabled")),
                         "inbound_action": _inbound(row.get("DefaultInboundAction"))})
    return profiles


def facts_from_profiles(profiles: List[Dict[str, Any]]) -> Dict[str, Any]:
    if not profiles:
        raise ParseError("Get-NetFirewallProfile: expected the Domain, Private and Public profiles, found none")
    names = {p["name"].lower() for p in profiles}
    missing = [n for n in EXPECTED_PROFILES if n.lower() not in names]
    if missing:
        raise ParseError(f"Get-NetFirewallProfile: expected the Domain, Private and Public profiles, missing {', '.join(missing)}")
    all_on = all(p["enabled"] is True for p in profiles)
    actions = {p["inbound_action"] for p in profiles if p["enabled"]}
    if not all_on and not actions:
        inbound = "accept"
    elif not all_on:
        inbound = "mixed"
    elif actions == {"drop"}:
        inbound = "drop"
    elif actions == {"accept"}:
        inbound = "accept"
    else:
        inbound = "mixed"
    return {"enabled": all_on, "backend": "windows-firewall", "inbound_policy": inbound, "rule_count": None,
            "profiles": profiles, "stealth_mode": None, "frontends": []}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, PROFILES_PS)
    failure = ps_failure_message(result, "Get-NetFirewallProfile")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    profiles = parse_profiles(result.stdout)
    facts = facts_from_profiles(profiles)
    evidence = [f"Get-NetFirewallProfile -PolicyStore ActiveStore: {p['name']} enabled={p['enabled']} "
                f"inbound={p['inbound_action']}" for p in profiles]
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
