"""Secure Boot on Linux: EFI variables, with mokutil as the fallback.

No /sys/firmware/efi means the kernel was started by a legacy BIOS (or a UEFI's compatibility module):
there is no Secure Boot, and that is a fact, not an error. On UEFI, the global variables SecureBoot and
SetupMode (EFI_GLOBAL_VARIABLE GUID) hold four attribute bytes then one value byte: SecureBoot 1 means
enforced; SetupMode 1 means no platform key is enrolled, so nothing is enforced. A firmware without the
SecureBoot variable does not support Secure Boot (UEFI 2.x, section 3.3).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks.base import CheckOutcome, ParseError
from agent.probes import NOT_FOUND, Host

CHECK = "secure_boot"
EFI_DIR = "/sys/firmware/efi"
_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT_VAR = f"/sys/firmware/efi/efivars/SecureBoot-{_GLOBAL}"
SETUP_MODE_VAR = f"/sys/firmware/efi/efivars/SetupMode-{_GLOBAL}"
MOKUTIL = ["mokutil", "--sb-state"]


def parse_efivar_flag(text: str, name: str) -> bool:
    """efivarfs content: 4 attribute bytes (little endian) and the one-byte value, 0 or 1."""
    data = text.encode("utf-8", "replace")
    if len(data) != 5 or data[4] not in (0, 1):
        raise ParseError(f"efivars {name}: expected 4 attribute bytes and a value byte 0 or 1, found "
                         f"{data[:8].hex()}")
    return data[4] == 1


def parse_mokutil(text: str) -> Optional[bool]:
    """``mokutil --sb-state``: "SecureBoot enabled" / "SecureBoot disabled"; None when EFI variables
    are not supported (legacy boot)."""
    lowered = text.lower()
    if "not supported" in lowered:
        return None
    if "secureboot enabled" in lowered:
        return True
    if "secureboot disabled" in lowered:
        return False
    raise ParseError(f"mokutil --sb-state: expected 'SecureBoot enabled' or 'SecureBoot disabled', found "
                     f"{text.strip()[:80]!r}")


def _facts(firmware: str, enabled: bool, setup_mode: Optional[bool], source: str) -> Dict[str, Any]:
    return {"firmware": firmware, "secure_boot_enabled": enabled, "setup_mode": setup_mode, "policy": None,
            "source": source}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    efi = host.stat(EFI_DIR)
    if efi.error == NOT_FOUND:
        return CheckOutcome(CHECK, facts=_facts("bios", False, None, EFI_DIR),
                            evidence=[f"{EFI_DIR}: absent: started by a legacy BIOS (or UEFI compatibility mode), "
                                      "which has no Secure Boot"])
    if efi.error is not None:
        return CheckOutcome.probe_failed(CHECK, efi)
    evidence: List[str] = [f"{EFI_DIR}: present (UEFI boot)"]
    variable = host.read_text(SECURE_BOOT_VAR)
    if variable.error is None:
        enabled = parse_efivar_flag(variable.stdout, "SecureBoot")
        setup = host.read_text(SETUP_MODE_VAR)
        setup_mode = parse_efivar_flag(setup.stdout, "SetupMode") if setup.error is None else None
        evidence.append(f"efivars SecureBoot={int(enabled)}"
                        + (f" SetupMode={int(setup_mode)}" if setup_mode is not None else ""))
        return CheckOutcome(CHECK, facts=_facts("uefi", enabled and not setup_mode, setup_mode, "efivars"),
                            evidence=evidence)
    if variable.error != NOT_FOUND:
        return CheckOutcome.probe_failed(CHECK, variable)
    # efivarfs not mounted, or a firmware without the variable: ask mokutil, which reads them its own way.
    mok = host.run(MOKUTIL, timeout=10)
    if mok.error == NOT_FOUND:
        evidence.append(f"{SECURE_BOOT_VAR}: absent and mokutil not installed: the firmware does not support "
                        "Secure Boot")
        return CheckOutcome(CHECK, facts=_facts("uefi", False, None, "efivars"), evidence=evidence)
    if mok.error is not None:
        return CheckOutcome.probe_failed(CHECK, mok)
    state = parse_mokutil(mok.stdout + mok.stderr)
    evidence.append(f"mokutil --sb-state: {(mok.stdout or mok.stderr).strip()}")
    return CheckOutcome(CHECK, facts=_facts("uefi", bool(state), None, "mokutil"), evidence=evidence)
