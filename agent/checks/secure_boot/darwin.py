"""Secure Boot on macOS: the boot policy the security chip reports (T2 or Apple silicon).

``system_profiler SPiBridgeDataType`` describes the security controller: "Model Name: Apple T2 Security
Chip" on T2 Intel Macs, an Apple silicon controller otherwise, with "Secure Boot: Full Security",
"Medium Security", "Reduced Security", "Permissive Security" or "No Security". An Intel Mac without T2
prints no controller at all: it has no Secure Boot.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "secure_boot"
IBRIDGE = ["system_profiler", "SPiBridgeDataType"]
POLICIES = {"full": True, "medium": True, "reduced": True, "permissive": False, "no": False}


def parse_ibridge(text: str) -> Tuple[str, Optional[str]]:
    """(firmware, policy) from ``system_profiler SPiBridgeDataType``; policy None without a controller."""
    if not text.strip():
        return "apple_intel", None
    model = re.search(r"Model Name:\s*(.+)", text)
    boot = re.search(r"Secure Boot:\s*(\w+)", text)
    if model is None or boot is None:
        raise ParseError(f"system_profiler SPiBridgeDataType: expected 'Model Name:' and 'Secure Boot:' lines, found "
                         f"{text.strip()[:100]!r}")
    firmware = "apple_t2" if "T2" in model.group(1) else "apple_silicon"
    policy = boot.group(1).lower()
    if policy not in POLICIES:
        raise ParseError(f"system_profiler SPiBridgeDataType: expected Secure Boot Full, Medium, Reduced, Permissive or No "
                         f"Security, found {boot.group(1)!r}")
    return firmware, policy


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(IBRIDGE, timeout=30)
    if not result.ok:
        return CheckOutcome.probe_failed(CHECK, result)
    firmware, policy = parse_ibridge(result.stdout)
    facts: Dict[str, Any] = {"firmware": firmware, "secure_boot_enabled": POLICIES.get(policy or "no", False),
                             "setup_mode": None, "policy": "off" if policy == "no" else policy,
                             "source": "system_profiler SPiBridgeDataType"}
    evidence = [f"system_profiler SPiBridgeDataType: {firmware}, Secure Boot {policy or 'not available (no T2 chip)'}"]
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
