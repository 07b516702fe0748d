"""Disk encryption: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401
from agent.checks.disk_encryption import darwin, linux, windows

SPEC = CheckSpec(
    id="disk_encryption",
    title="Disk encryption",
    description=(
        "Whether the system volume and every fixed, writable volume sit on full-disk encryption "
        "(dm-crypt/LUKS, FileVault, BitLocker) that is active, not merely capable."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("system_volume_encrypted", "bool",
                 "the volume holding the OS (/, the APFS Data volume, C:) is encrypted and protection is on"),
        FactSpec("system_volume_state", "string",
                 "encrypted | not_encrypted | encrypting | decrypting | suspended | locked | unknown"),
        FactSpec("system_volume_method", "string",
                 "luks1, luks2, plain-dm-crypt, fscrypt, zfs-native, filevault, bitlocker-xts-aes-256, none ..."),
        FactSpec("all_fixed_volumes_encrypted", "bool", "every fixed writable volume checked is encrypted"),
        FactSpec("unencrypted_volumes", "list", "mount points (or drive letters) of fixed volumes not encrypted"),
        FactSpec("volumes", "list",
                 "per volume: {mount, device, fstype, encrypted, method, state, chain: [device ancestry]}"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
