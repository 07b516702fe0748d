"""Secure Boot: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec

SPEC = CheckSpec(
    id="secure_boot",
    title="Secure Boot",
    description=(
        "Whether the firmware only starts signed boot loaders: UEFI Secure Boot on Linux (efivars, mokutil) "
        "and Windows (Confirm-SecureBootUEFI), the Secure Boot policy of T2 and Apple silicon Macs. A machine "
        "started by a legacy BIOS (or a UEFI in compatibility mode) has no Secure Boot: that is reported as "
        "firmware bios with secure_boot_enabled false, not as an error."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("firmware", "string", "uefi, bios (legacy or compatibility mode), apple_t2, apple_silicon, "
                                       "apple_intel (no Secure Boot chip)"),
        FactSpec("secure_boot_enabled", "bool", "the firmware enforces Secure Boot"),
        FactSpec("setup_mode", "bool", "UEFI setup mode (no platform key enrolled: nothing is enforced)"),
        FactSpec("policy", "string", "macOS: full, medium, permissive, off (Secure Boot policy)"),
        FactSpec("source", "string", "where the answer comes from (efivars, mokutil, Confirm-SecureBootUEFI, bputil ...)"),
    ),
)
