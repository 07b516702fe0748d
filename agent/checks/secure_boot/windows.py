"""Secure Boot on Windows: Confirm-SecureBootUEFI, the firmware type, and the SecureBoot\\State key.

Confirm-SecureBootUEFI answers True or False on UEFI; on a legacy BIOS it throws "Cmdlet not supported
on this platform" (category NotImplemented), and without administrator rights "Access was denied"
(PermissionDenied). The script keeps the error's category (never localised) beside the firmware type
Windows exposes in %firmware_type% (UEFI or Legacy) and UEFISecureBootEnabled from the registry.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from agent.checks._windows_ps import (
    parse_ps_object,
    ps_bool,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome
from agent.checks.messages import message
from agent.probes import Host

CHECK = "secure_boot"
SECURE_BOOT_PS = (
    "$state = $null; $category = $null; $err = $null; "
    "try { $state = Confirm-SecureBootUEFI -ErrorAction Stop } "
    "catch { $category = [string]$_.CategoryInfo.Category; $err = $_.Exception.Message }; "
    "[pscustomobject]@{SecureBoot = $state; Category = $category; Error = $err; FirmwareType = $env:firmware_type; "
    "Registry = (Get-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecureBoot\\State' "
    "-ErrorAction SilentlyContinue).UEFISecureBootEnabled}"
)


def parse_secure_boot(text: str) -> Dict[str, Any]:
    data = parse_ps_object(text, "Confirm-SecureBootUEFI", ("SecureBoot", "Category", "FirmwareType", "Registry"))
    return {"state": ps_bool(data.get("SecureBoot")), "category": ps_str(data.get("Category")),
            "error": ps_str(data.get("Error")), "firmware": (ps_str(data.get("FirmwareType")) or "").lower(),
            "registry": ps_int(data.get("Registry"))}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, SECURE_BOOT_PS)
    failure = ps_failure_message(result, "Confirm-SecureBootUEFI")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    data = parse_secure_boot(result.stdout)
    evidence = [f"Confirm-SecureBootUEFI: {data['state'] if data['category'] is None else data['category']}; "
                f"firmware_type={data['firmware'] or '?'}; UEFISecureBootEnabled={data['registry']}"]
    if data["firmware"] == "legacy" or data["category"] == "NotImplemented":
        evidence.append("legacy BIOS boot: no Secure Boot")
        return CheckOutcome(CHECK, facts={"firmware": "bios", "secure_boot_enabled": False, "setup_mode": None,
                                          "policy": None, "source": "Confirm-SecureBootUEFI"}, evidence=evidence)
    state = data["state"]
    if state is None and data["registry"] in (0, 1):
        state = data["registry"] == 1  # the cmdlet was denied; the registry mirrors the firmware's answer
    if state is None:
        return CheckOutcome.error(CHECK, message("ps_probe_failed", what="Confirm-SecureBootUEFI",
                                                 failure=data["error"] or data["category"] or "no answer"), evidence)
    return CheckOutcome(CHECK, facts={"firmware": "uefi", "secure_boot_enabled": state, "setup_mode": None,
                                      "policy": None, "source": "Confirm-SecureBootUEFI"}, evidence=evidence)
