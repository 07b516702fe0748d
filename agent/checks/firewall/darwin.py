"""Firewall on macOS: the Application Firewall's global state and stealth mode.

``socketfilterfw --getglobalstate`` prints "Firewall is enabled. (State = 1)" (the wording moved across
releases; the State number did not: 0 off, 1 on, 2 block all incoming). When the tool is missing, the
older preference ``com.apple.alf globalstate`` (same numbers) is read instead. No root needed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import NOT_FOUND, Host

CHECK = "firewall"

SOCKETFILTERFW = "/usr/libexec/ApplicationFirewall/socketfilterfw"
GLOBAL_STATE = [SOCKETFILTERFW, "--getglobalstate"]
STEALTH = [SOCKETFILTERFW, "--getstealthmode"]
BLOCK_ALL = [SOCKETFILTERFW, "--getblockall"]
ALF_DEFAULTS = ["defaults", "read", "/Library/Preferences/com.apple.alf", "globalstate"]

_STATE = re.compile(r"State\s*=\s*(\d)")


def parse_global_state(text: str) -> int:
    """0 off, 1 on, 2 blocking all incoming connections."""
    match = _STATE.search(text)
    if match:
        return int(match.group(1))
    lowered = text.lower()
    if "block" in lowered and "all" in lowered and "enabled" in lowered:
        return 2
    if "disabled" in lowered or " is off" in lowered:
        return 0
    if "enabled" in lowered or " is on" in lowered:
        return 1
    raise ParseError(f"socketfilterfw --getglobalstate: expected 'Firewall is enabled. (State = 1)' or similar, "
                     f"found {text.strip()[:100]!r}")


def parse_alf_defaults(text: str) -> int:
    value = text.strip()
    if value not in ("0", "1", "2"):
        raise ParseError(f"defaults read com.apple.alf globalstate: expected 0, 1 or 2, found {value[:40]!r}")
    return int(value)


def parse_switch(text: str) -> Optional[bool]:
    """Stealth mode / block all answers: "Stealth mode enabled", "Firewall stealth mode is on",
    "Block all DISABLED!" ... -> bool (None: unrecognised)."""
    lowered = text.lower()
    if "disabled" in lowered or re.search(r"\bis off\b", lowered) or "set to disabled" in lowered:
        return False
    if "enabled" in lowered or re.search(r"\bis on\b", lowered):
        return True
    return None


def facts_for(state: int, stealth: Optional[bool], block_all: Optional[bool]) -> Dict[str, Any]:
    enabled = state in (1, 2)
    if not enabled:
        inbound = "accept"
    else:
        # enabled: connections to apps the user has not allowed are refused (block all: every app)
        inbound = "drop"
    return {"enabled": enabled, "backend": "macos-alf", "inbound_policy": inbound, "rule_count": None,
            "profiles": None, "stealth_mode": stealth, "frontends": [],
            "_block_all": bool(block_all) or state == 2}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    result = host.run(GLOBAL_STATE)
    if result.ok:
        state = parse_global_state(result.stdout)
        evidence.append(f"socketfilterfw --getglobalstate: {result.stdout.strip()}")
    elif result.error == NOT_FOUND:
        fallback = host.run(ALF_DEFAULTS)
        if not fallback.ok:
            return CheckOutcome.error(CHECK, message("several", items=[result.failure_message(),
                                                                       fallback.failure_message()]))
        state = parse_alf_defaults(fallback.stdout)
        evidence.append(f"{result.describe_failure()}; com.apple.alf globalstate = {state}")
    else:
        return CheckOutcome.probe_failed(CHECK, result)

    stealth: Optional[bool] = None
    block_all: Optional[bool] = None
    for argv, label in ((STEALTH, "stealth"), (BLOCK_ALL, "block all")):
        probe = host.run(argv)
        if probe.ok:
            value = parse_switch(probe.stdout)
            evidence.append(f"socketfilterfw {argv[1]}: {probe.stdout.strip()}")
            if label == "stealth":
                stealth = value
            else:
                block_all = value
        else:
            evidence.append(f"{label} unknown: {probe.describe_failure()}")
    facts = facts_for(state, stealth, block_all)
    if facts.pop("_block_all"):
        evidence.append("all incoming connections are blocked")
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
