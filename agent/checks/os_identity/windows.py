"""OS identity on Windows: the CurrentVersion registry key and CIM hardware classes, as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._windows_ps import (
    as_dict_list,
    parse_ps_json,
    ps_failure,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "os_identity"

VERSION_PS = ("Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion' | "
              "Select-Object ProductName,EditionID,DisplayVersion,ReleaseId,CurrentBuild,UBR,InstallationType")
HARDWARE_PS = ("[pscustomobject]@{"
               "ComputerSystem = Get-CimInstance -ClassName Win32_ComputerSystem | "
               "Select-Object DNSHostName,Manufacturer,Model,SystemType; "
               "BIOS = Get-CimInstance -ClassName Win32_BIOS | Select-Object SerialNumber; "
               "MachineGuid = (Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Cryptography').MachineGuid}")

# Registry hive files and their transaction logs: any registry write changes one of their mtimes, so an
# answer cached on them is never stale (and the patches check reuses the version probe within a cycle).
_CONFIG = "C:\\Windows\\System32\\config\\"
SOFTWARE_HIVE = tuple(_CONFIG + name for name in ("SOFTWARE", "SOFTWARE.LOG1", "SOFTWARE.LOG2"))
SYSTEM_HIVE = tuple(_CONFIG + name for name in ("SYSTEM", "SYSTEM.LOG1", "SYSTEM.LOG2"))

# Windows 11 kept "Windows 10" in ProductName: the build number tells them apart.
WINDOWS_11_FIRST_BUILD = 22000
_VIRTUAL_MARKERS = ("virtual machine", "vmware", "virtualbox", "kvm", "qemu", "parallels", "xen", "hvm domu",
                    "innotek", "bochs", "amazon ec2", "google compute engine")


@dataclass(frozen=True)
class WindowsVersion:
    os_name: str
    os_version: str
    os_build: Optional[str]
    os_build_number: int
    os_edition: Optional[str]
    display_version: Optional[str]
    installation_type: Optional[str]


def parse_version(text: str) -> WindowsVersion:
    """Get-ItemProperty of HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion (selected values)."""
    items = as_dict_list(parse_ps_json(text, "CurrentVersion registry key"), "CurrentVersion registry key")
    if not items:
        raise ParseError("CurrentVersion registry key: expected one object, found nothing")
    data = items[0]
    build = ps_int(data.get("CurrentBuild"))
    if build is None:
        raise ParseError(f"CurrentVersion registry key: expected a numeric CurrentBuild, found {data.get('CurrentBuild')!r}")
    ubr = ps_int(data.get("UBR"))
    product = ps_str(data.get("ProductName")) or "Windows"
    major = "11" if build >= WINDOWS_11_FIRST_BUILD else "10"
    if product.startswith("Windows 10") and major == "11":
        product = "Windows 11" + product[len("Windows 10"):]
    edition = None
    for prefix in ("Windows 11 ", "Windows 10 "):
        if product.startswith(prefix):
            edition = product[len(prefix):].strip() or None
    if edition is None:
        edition = ps_str(data.get("EditionID"))
    return WindowsVersion(
        os_name=product,
        os_version=f"10.0.{build}",
        os_build=f"{build}.{ubr}" if ubr is not None else str(build),
        os_build_number=build,
        os_edition=edition,
        display_version=ps_str(data.get("DisplayVersion")) or ps_str(data.get("ReleaseId")),
        installation_type=ps_str(data.get("InstallationType")),
    )


def parse_hardware(text: str) -> Dict[str, Any]:
    """Win32_ComputerSystem, Win32_BIOS and MachineGuid -> hostname, model, serial, machine id, arch, virtual."""
    items = as_dict_list(parse_ps_json(text, "hardware identity"), "hardware identity")
    if not items:
        raise ParseError("hardware identity: expected one object, found nothing")
    data = items[0]
    systems = as_dict_list(data.get("ComputerSystem"), "Win32_ComputerSystem")
    bioses = as_dict_list(data.get("BIOS"), "Win32_BIOS")
    system = systems[0] if systems else {}
    bios = bioses[0] if bioses else {}
    model = ps_str(system.get("Model"))
    manufacturer = ps_str(system.get("Manufacturer"))
    system_type = (ps_str(system.get("SystemType")) or "").lower()
    arch = None
    if system_type.startswith("x64"):
        arch = "x86_64"
    elif system_type.startswith("arm64"):
        arch = "arm64"
    elif system_type.startswith("x86"):
        arch = "x86"
    identity = f"{manufacturer or ''} {model or ''}".lower()
    serial = ps_str(bios.get("SerialNumber"))
    if serial and serial.lower() in ("to be filled by o.e.m.", "default string", "system serial number", "0"):
        serial = None
    return {
        "hostname": ps_str(system.get("DNSHostName")),
        "hardware_model": model,
        "serial": serial,
        "machine_id": ps_str(data.get("MachineGuid")),
        "architecture": arch,
        "virtual": any(marker in identity for marker in _VIRTUAL_MARKERS) if identity.strip() else None,
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, VERSION_PS, cache_on=SOFTWARE_HIVE)
    failure = ps_failure_message(result, "Get-ItemProperty HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    version = parse_version(result.stdout)
    evidence: List[str] = [
        f"registry CurrentVersion: {version.os_name}, build {version.os_build}"
        + (f", {version.display_version}" if version.display_version else "")
    ]
    facts: Dict[str, Any] = {
        "platform": "windows", "os_id": "windows", "os_name": version.os_name,
        "os_version": version.os_version, "os_build": version.os_build,
        "os_build_number": version.os_build_number, "os_edition": version.os_edition,
        "rapid_security_response": None, "kernel": version.os_version,
        "architecture": None, "hostname": None, "machine_id": None, "serial": None,
        "hardware_model": None, "virtual": None,
    }
    hardware = run_ps(host, HARDWARE_PS, cache_on=SOFTWARE_HIVE + SYSTEM_HIVE)
    hw_failure = ps_failure(hardware, "Get-CimInstance Win32_ComputerSystem/Win32_BIOS")
    if hw_failure:
        # the OS version is what rules compare; hardware identity missing is worth saying, not failing
        evidence.append(f"hardware identity unavailable: {hw_failure}")
    else:
        facts.update(parse_hardware(hardware.stdout))
        evidence.append(f"hardware: {facts['hardware_model']} serial {facts['serial']}")
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)

