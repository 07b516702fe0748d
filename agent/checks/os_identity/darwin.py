"""OS identity on macOS: sw_vers (with the Rapid Security Response suffix) and the hardware overview."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks.base import CheckOutcome, ParseError
from agent.probes import Host

CHECK = "os_identity"

SW_VERS = ["sw_vers"]
HARDWARE = ["system_profiler", "SPHardwareDataType", "-json"]
IOREG = ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]
HOSTNAME = ["hostname"]
KERNEL = ["uname", "-r"]
VMM = ["sysctl", "-n", "kern.hv_vmm_present"]
# system_profiler costs a few hundred milliseconds; the hardware it describes changes with nothing the OS
# writes, so its answer is cached until the system itself is updated.
SYSTEM_VERSION_PLIST = "/System/Library/CoreServices/SystemVersion.plist"


def parse_sw_vers(text: str) -> Dict[str, str]:
    """``sw_vers`` lines ``Key:<tabs>Value`` -> dict; ProductVersion is required."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    if not values.get("ProductVersion"):
        raise ParseError(f"sw_vers: expected a ProductVersion line, found {text.strip()[:80]!r}")
    return values


def parse_hardware(text: str) -> Dict[str, Any]:
    """``system_profiler SPHardwareDataType -json`` -> model, serial, platform UUID, architecture."""
    try:
        data = json.loads(text)
        overview = data["SPHardwareDataType"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"system_profiler SPHardwareDataType -json: expected a hardware overview, found "
                         f"{text.strip()[:80]!r}") from exc
    if not isinstance(overview, dict):
        raise ParseError("system_profiler SPHardwareDataType -json: expected the hardware overview to be an object")
    chip = str(overview.get("chip_type") or "")
    cpu = str(overview.get("cpu_type") or "")
    arch: Optional[str] = None
    if chip.startswith("Apple"):
        arch = "arm64"
    elif "intel" in cpu.lower() or "intel" in chip.lower():
        arch = "x86_64"
    model = overview.get("machine_model")
    return {
        "hardware_model": str(model) if model else None,
        "serial": str(overview["serial_number"]) if overview.get("serial_number") else None,
        "machine_id": str(overview["platform_UUID"]) if overview.get("platform_UUID") else None,
        "architecture": arch,
        "virtual": str(model).startswith("VirtualMac") if model else None,
        "_processor": chip or cpu,
    }


_IOREG_LINE = re.compile(r'^\s*"([^"]+)"\s*=\s*(?:<")?"?([^"<>]*)"?(?:">)?\s*$')


def parse_ioreg(text: str) -> Dict[str, Any]:
    """``ioreg -rd1 -c IOPlatformExpertDevice`` -> model, serial, platform UUID (the fallback when
    system_profiler fails: it reads the same registry entry, without the processor name)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        match = _IOREG_LINE.match(line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    if "IOPlatformUUID" not in values and "IOPlatformSerialNumber" not in values:
        raise ParseError(f"ioreg IOPlatformExpertDevice: expected IOPlatformUUID and IOPlatformSerialNumber, "
                         f"found {text.strip()[:80]!r}")
    model = values.get("model") or None
    return {"hardware_model": model, "serial": values.get("IOPlatformSerialNumber") or None,
            "machine_id": values.get("IOPlatformUUID") or None,
            "virtual": model.startswith("VirtualMac") if model else None}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = host.run(SW_VERS)
    if not result.ok:
        return CheckOutcome.probe_failed(CHECK, result)
    vers = parse_sw_vers(result.stdout)
    extra = vers.get("ProductVersionExtra") or None
    build = vers.get("BuildVersion") or None
    facts: Dict[str, Any] = {
        "platform": "darwin", "os_id": "macos", "os_name": vers.get("ProductName") or "macOS",
        "os_version": vers["ProductVersion"], "os_build": build, "os_build_number": None, "os_edition": None,
        "rapid_security_response": extra, "kernel": None, "architecture": None, "hostname": None,
        "machine_id": None, "serial": None, "hardware_model": None, "virtual": None,
    }
    evidence: List[str] = [f"sw_vers: {facts['os_name']} {facts['os_version']}{' ' + extra if extra else ''} ({build})"]

    hardware = host.run(HARDWARE, timeout=30.0, cache_on=[SYSTEM_VERSION_PLIST])
    if hardware.ok:
        hw = parse_hardware(hardware.stdout)
        processor = hw.pop("_processor")
        facts.update({k: v for k, v in hw.items() if v is not None or facts.get(k) is None})
        evidence.append(f"hardware: {hw['hardware_model']} ({processor}), serial {hw['serial']}")
    else:
        ioreg = host.run(IOREG)
        if ioreg.ok:
            hw = parse_ioreg(ioreg.stdout)
            facts.update(hw)
            evidence.append(f"{hardware.describe_failure()}; ioreg: {hw['hardware_model']}, serial {hw['serial']}")
        else:
            evidence.append(f"hardware identity unavailable: {hardware.describe_failure()}; {ioreg.describe_failure()}")
    for argv, fact in ((HOSTNAME, "hostname"), (KERNEL, "kernel")):
        probe = host.run(argv)
        if probe.ok and probe.stdout.strip():
            facts[fact] = probe.stdout.strip()
    vmm = host.run(VMM)
    if vmm.ok and vmm.stdout.strip() in ("0", "1"):
        facts["virtual"] = bool(facts.get("virtual")) or vmm.stdout.strip() == "1"
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
