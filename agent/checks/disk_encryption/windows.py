"""Disk encryption on Windows: BitLocker per volume from Get-BitLockerVolume (CIM Win32_EncryptableVolume as fallback).

Enum values are turned into their names inside the pipeline (names are never localised; the numeric codes
of Win32_EncryptableVolume are read too). manage-bde prints localised sentences ("Chiffrement intégral",
"Protection désactivée") and is deliberately not parsed.

Traps: a volume fully encrypted with protection *off* (suspended, e.g. for a firmware update and never
resumed) leaves its key in clear on the disk: state ``suspended``, not encrypted. "EncryptionInProgress"
is ``encrypting``. Reading BitLocker needs administrator rights: without them the result is an error.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks._windows_ps import (
    as_dict_list,
    is_missing,
    parse_ps_json,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import english, message
from agent.probes import Host

CHECK = "disk_encryption"

BITLOCKER_PS = (
    "Get-BitLockerVolume | Select-Object MountPoint,"
    "@{n='VolumeType';e={[string]$_.VolumeType}},"
    "@{n='VolumeStatus';e={[string]$_.VolumeStatus}},"
    "@{n='ProtectionStatus';e={[string]$_.ProtectionStatus}},"
    "@{n='EncryptionMethod';e={[string]$_.EncryptionMethod}},"
    "EncryptionPercentage,"
    "@{n='LockStatus';e={[string]$_.LockStatus}},"
    "@{n='DriveType';e={if ($_.MountPoint -match '^[A-Za-z]:$') "
    "{[string](Get-Volume -DriveLetter $_.MountPoint[0] -ErrorAction SilentlyContinue).DriveType}}}"
)
CIM_PS = (
    "Get-CimInstance -Namespace 'root\\CIMV2\\Security\\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume"
    " | Select-Object DriveLetter,VolumeType,ConversionStatus,ProtectionStatus,EncryptionMethod"
)
ADMIN_RIGHTS = message("rights_bitlocker")

# Win32_EncryptableVolume codes (learn.microsoft.com, Win32_EncryptableVolume class) -> the names
# Get-BitLockerVolume prints.
_CONVERSION = {0: "FullyDecrypted", 1: "FullyEncrypted", 2: "EncryptionInProgress", 3: "DecryptionInProgress",
               4: "EncryptionSuspended", 5: "DecryptionSuspended"}
_PROTECTION = {0: "Off", 1: "On", 2: "Unknown"}
_METHOD = {0: "None", 1: "Aes128Diffuser", 2: "Aes256Diffuser", 3: "Aes128", 4: "Aes256", 5: "Hardware",
           6: "XtsAes128", 7: "XtsAes256"}
_VOLUME_TYPE = {0: "OperatingSystem", 1: "Data", 2: "Removable"}
_METHOD_FACT = {"none": "none", "aes128diffuser": "bitlocker-aes-128-diffuser",
                "aes256diffuser": "bitlocker-aes-256-diffuser", "aes128": "bitlocker-aes-128",
                "aes256": "bitlocker-aes-256", "hardware": "bitlocker-hardware",
                "xtsaes128": "bitlocker-xts-aes-128", "xtsaes256": "bitlocker-xts-aes-256"}


def _named(value: Any, codes: Mapping[int, str]) -> Optional[str]:
    number = ps_int(value)
    if number is not None:
        return codes.get(number, f"code {number}")
    return ps_str(value)


def volume_state(volume_status: Optional[str], protection: Optional[str], lock: Optional[str]) -> str:
    """The declared state of one BitLocker volume from its conversion, protection and lock status."""
    status = (volume_status or "").lower()
    prot = (protection or "").lower()
    if (lock or "").lower() == "locked":
        return "locked"
    if status in ("fullyencrypted", "fullyencryptedwipeinprogress", "fullyencryptedwipesuspended"):
        if prot == "on":
            return "encrypted"
        if prot == "off":
            return "suspended"
        return "unknown"
    # Get-BitLockerVolume says "...Suspended", Win32_EncryptableVolume's documentation "...Paused"
    if status in ("encryptioninprogress", "encryptionsuspended", "encryptionpaused"):
        return "encrypting"
    if status in ("decryptioninprogress", "decryptionsuspended", "decryptionpaused"):
        return "decrypting"
    if status == "fullydecrypted":
        return "not_encrypted"
    return "unknown"


def parse_volumes(text: str, source: str = "Get-BitLockerVolume") -> List[Dict[str, Any]]:
    """Volumes from Get-BitLockerVolume (enum names) or Win32_EncryptableVolume (numeric codes)."""
    rows = as_dict_list(parse_ps_json(text, source), source)
    volumes: List[Dict[str, Any]] = []
    for row in rows:
        mount = ps_str(row.get("MountPoint")) or ps_str(row.get("DriveLetter"))
        if mount is None:
            continue
        status = _named(row.get("VolumeStatus", row.get("ConversionStatus")), _CONVERSION)
        protection = _named(row.get("ProtectionStatus"), _PROTECTION)
        method_name = _named(row.get("EncryptionMethod"), _METHOD)
        volume_type = _named(row.get("VolumeType"), _VOLUME_TYPE)
        lock = _named(row.get("LockStatus"), {0: "Unlocked", 1: "Locked"})
        state = volume_state(status, protection, lock)
        method = _METHOD_FACT.get((method_name or "").lower().replace("_", ""),
                                  (method_name or "unknown").lower())
        drive_type = (ps_str(row.get("DriveType")) or "").lower()
        removable = (volume_type or "").lower() == "removable" or drive_type == "removable"
        volumes.append({
            "mount": mount,
            "device": None,
            "fstype": None,
            "encrypted": state in ("encrypted", "locked"),
            "method": method if state != "not_encrypted" else "none",
            "state": state,
            "chain": [],
            "_system": (volume_type or "").lower() == "operatingsystem",
            "_removable": removable,
            "_percentage": row.get("EncryptionPercentage"),
            "_raw": f"{mount} {volume_type} {status} protection {protection}"
                    + (f" {row.get('EncryptionPercentage')}%" if row.get("EncryptionPercentage") is not None else ""),
        })
    return volumes


def facts_from_volumes(volumes: List[Dict[str, Any]], system_drive: str = "C:") -> Dict[str, Any]:
    if not volumes:
        raise ParseError("BitLocker: expected at least the system volume, found no volume")
    system = next((v for v in volumes if v["_system"]), None)
    if system is None:
        system = next((v for v in volumes if v["mount"].upper() == system_drive.upper()), None)
    if system is None:
        raise ParseError(f"BitLocker: expected an operating-system volume, found only {', '.join(v['mount'] for v in volumes)}")
    fixed = [v for v in volumes if not v["_removable"]]
    unencrypted = [v["mount"] for v in fixed if not v["encrypted"]]
    public = [{k: v[k] for k in ("mount", "device", "fstype", "encrypted", "method", "state", "chain")}
              for v in fixed]
    return {
        "system_volume_encrypted": system["state"] == "encrypted",
        "system_volume_state": system["state"],
        "system_volume_method": system["method"],
        "all_fixed_volumes_encrypted": not unencrypted,
        "unencrypted_volumes": unencrypted,
        "volumes": public,
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, BITLOCKER_PS)
    failure = ps_failure_message(result, "Get-BitLockerVolume", ADMIN_RIGHTS)
    source = "Get-BitLockerVolume"
    evidence: List[str] = []
    if failure and result.error is None and is_missing(result):
        # no BitLocker module (Home editions): the CIM class is the same data with numeric codes
        evidence.append(english(failure))
        result = run_ps(host, CIM_PS)
        failure = ps_failure_message(result, "Get-CimInstance Win32_EncryptableVolume", ADMIN_RIGHTS)
        source = "Win32_EncryptableVolume"
    if failure:
        return CheckOutcome.error(CHECK, failure, evidence)
    volumes = parse_volumes(result.stdout, source)
    facts = facts_from_volumes(volumes)
    evidence.extend(f"{source}: {v['_raw']} -> {v['state']}" for v in volumes)
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
