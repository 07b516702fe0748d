"""Disk encryption: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec

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
        FactSpec("unencrypted_volumes", "list", "mount points (or drive letters) of fixed volumes not encrypted",
                 items="string"),
        FactSpec("volumes", "list", "the fixed volumes checked, one row each", row=(
            FieldSpec("mount", "string", "mount point or drive letter (/, /home, C:)"),
            FieldSpec("device", "string", "the device mounted there (/dev/mapper/vg-root), null where the OS names none"),
            FieldSpec("fstype", "string", "file system type (ext4, btrfs, apfs), null where the OS does not say"),
            FieldSpec("encrypted", "bool", "the volume is encrypted and protection is on (null: cannot be told)"),
            FieldSpec("method", "string", "as system_volume_method, for this volume"),
            FieldSpec("state", "string", "as system_volume_state, for this volume"),
            FieldSpec("chain", "list", "device ancestry from the mounted device down to the disk", items="string"),
            FieldSpec("chains", "list", "Linux: every ancestry when the volume sits on several devices (RAID, "
                                        "LVM over several disks), one list of devices each", items="list"),
            FieldSpec("fscrypt_policies", "int", "Linux: number of fscrypt-encrypted directory trees on an "
                                                 "otherwise clear volume"),
        )),
    ),
)
