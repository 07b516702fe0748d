"""Disk encryption on macOS: FileVault on the booted APFS Data volume.

Sources: ``fdesetup status`` (On / Off / encryption or decryption in progress) and the Data volume's
FileVault and Encryption flags from ``diskutil apfs list -plist`` (which volume is the booted Data volume:
``diskutil info -plist /System/Volumes/Data``). Neither needs root.

Trap: on T2 and Apple silicon Macs internal storage is always encrypted at rest by the Secure Enclave, so
the Data volume says ``Encryption = true`` even with FileVault off (``diskutil apfs list`` prints
"FileVault: No (Encrypted at rest)"). The key is then not protected by any password: anyone holding the
Mac reads the data. That is *not* encrypted for this check.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._plist import parse_plist_dict, plist_bool
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "disk_encryption"

FDESETUP = ["fdesetup", "status"]
APFS_LIST = ["diskutil", "apfs", "list", "-plist"]
DATA_INFO = ["diskutil", "info", "-plist", "/System/Volumes/Data"]
DATA_MOUNT = "/System/Volumes/Data"

_PERCENT = re.compile(r"Percent completed\s*=\s*([0-9.]+)", re.IGNORECASE)


def parse_fdesetup(text: str) -> Dict[str, Any]:
    """``fdesetup status`` -> {state: on|off|encrypting|decrypting, percent, pending_restart}."""
    lowered = text.lower()
    percent_match = _PERCENT.search(text)
    percent = float(percent_match.group(1)) if percent_match else None
    if "decryption in progress" in lowered:
        state = "decrypting"
    elif "encryption in progress" in lowered:
        state = "encrypting"
    elif "filevault is on" in lowered:
        state = "on"
    elif "filevault is off" in lowered:
        state = "off"
    else:
        raise ParseError(f"fdesetup status: expected 'FileVault is On.' or 'FileVault is Off.', found {text.strip()[:100]!r}")
    pending = "after the next restart" in lowered or "deferred enablement" in lowered
    return {"state": state, "percent": percent, "pending_restart": pending}


def parse_data_device(text: str) -> Optional[str]:
    """``diskutil info -plist /System/Volumes/Data`` -> the Data volume's device identifier (disk3s5)."""
    info = parse_plist_dict(text, "diskutil info -plist /System/Volumes/Data")
    device = info.get("DeviceIdentifier")
    return str(device) if device else None


def parse_apfs_volume(text: str, device: Optional[str]) -> Optional[Dict[str, Any]]:
    """The booted Data volume in ``diskutil apfs list -plist``: {device, name, filevault, encryption, locked}."""
    data = parse_plist_dict(text, "diskutil apfs list -plist")
    containers = data.get("Containers")
    if not isinstance(containers, list):
        raise ParseError("diskutil apfs list -plist: expected a Containers array")
    data_volumes = []
    for container in containers:
        for volume in (container.get("Volumes") or []) if isinstance(container, dict) else []:
            if not isinstance(volume, dict):
                continue
            entry: Dict[str, Any] = {"device": str(volume.get("DeviceIdentifier") or ""),
                                     "name": str(volume.get("Name") or ""),
                     "filevault": plist_bool(volume.get("FileVault")),
                     "encryption": plist_bool(volume.get("Encryption")),
                     "locked": plist_bool(volume.get("Locked")),
                     "roles": [str(r) for r in volume.get("Roles") or []]}
            if device and entry["device"] == device:
                return entry
            if "Data" in entry["roles"]:
                data_volumes.append(entry)
    # without the booted device id, only an unambiguous Data volume will do
    return data_volumes[0] if len(data_volumes) == 1 and not device else None


def decide(fde: Optional[Dict[str, Any]], volume: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The declared facts from what fdesetup and diskutil said (either may be missing, not both)."""
    if fde is None and volume is None:
        raise ParseError("expected the FileVault state from fdesetup or diskutil, found neither")
    if fde is not None:
        state = {"on": "encrypted", "off": "not_encrypted", "encrypting": "encrypting",
                 "decrypting": "decrypting"}[fde["state"]]
        if state == "encrypted" and volume is not None and volume["filevault"] is False:
            state = "unknown"  # the two sources disagree: say so rather than guess
    else:
        assert volume is not None
        if volume["filevault"] is None:
            # older diskutil has no FileVault key; Encryption alone cannot tell FileVault from hardware
            raise ParseError("diskutil apfs list -plist: expected a FileVault flag on the Data volume "
                             "(fdesetup status gave nothing either)")
        state = "encrypted" if volume["filevault"] else "not_encrypted"
    if state == "encrypted" and volume is not None and volume.get("locked"):
        state = "locked"
    encrypted = state == "encrypted"
    method = "filevault" if state in ("encrypted", "encrypting", "decrypting", "locked") else "none"
    entry: Dict[str, Any] = {"mount": DATA_MOUNT, "device": volume["device"] if volume else None, "fstype": "apfs",
             "encrypted": encrypted, "method": method, "state": state, "chain": []}
    return {
        "system_volume_encrypted": encrypted,
        "system_volume_state": state,
        "system_volume_method": method,
        "all_fixed_volumes_encrypted": encrypted,
        "unencrypted_volumes": [] if encrypted else [DATA_MOUNT],
        "volumes": [entry],
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    fde: Optional[Dict[str, Any]] = None
    status = host.run(FDESETUP)
    if status.ok:
        fde = parse_fdesetup(status.stdout)
        evidence.append(f"fdesetup status: {status.stdout.strip().splitlines()[0] if status.stdout.strip() else ''}"
                        + (f" ({fde['state']}, {fde['percent']}%)" if fde["percent"] is not None else ""))
        if fde["pending_restart"]:
            evidence.append("FileVault enablement waits for a restart or the user's next login: not encrypted yet")
    else:
        evidence.append(status.describe_failure())

    volume: Optional[Dict[str, Any]] = None
    info = host.run(DATA_INFO)
    device = parse_data_device(info.stdout) if info.ok else None
    apfs = host.run(APFS_LIST)
    if apfs.ok:
        volume = parse_apfs_volume(apfs.stdout, device)
        if volume:
            evidence.append(f"diskutil apfs list: {volume['device']} {volume['name']!r} FileVault={volume['filevault']} "
                            f"Encryption={volume['encryption']}")
            if volume["encryption"] and volume["filevault"] is False:
                evidence.append("internal storage is encrypted at rest by the hardware, but FileVault is off: "
                                "no password protects the key, so it is not counted as encrypted")
    else:
        evidence.append(apfs.describe_failure())

    if fde is None and volume is None:
        return CheckOutcome.error(CHECK, status.failure_message(), evidence)
    facts = decide(fde, volume)
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
