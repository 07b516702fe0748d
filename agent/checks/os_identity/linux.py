"""OS identity on linux: collector (probes) and pure parsers.

Sources: os-release(5) for the distribution, uname for kernel, host name and architecture,
/etc/machine-id, DMI (sysfs) for serial and model, systemd-detect-virt for virtualisation.
The DMI serial is readable by root only: unreadable means unknown (null), not an error.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import NOT_FOUND, PERMISSION_DENIED, Host, ProbeResult

CHECK = "os_identity"

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DMI = "/sys/class/dmi/id/"
# Firmware fills unset DMI strings with these; they identify nothing.
DMI_PLACEHOLDERS = {
    "", "0", "none", "default string", "to be filled by o.e.m.", "system serial number",
    "system product name", "not specified", "not applicable", "0123456789", "123456789",
    "chassis serial number", "system manufacturer", "o.e.m.", "invalid",
}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_os_release(text: str) -> Dict[str, str]:
    """os-release(5): KEY=value lines, values optionally shell-quoted."""
    values: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not _KEY.match(key):
            continue
        try:
            parts = shlex.split(value, posix=True)
        except ValueError:
            parts = [value.strip("\"'")]
        values[key] = " ".join(parts)
    if "ID" not in values and "NAME" not in values:
        raise ParseError("os-release: expected KEY=value lines including ID or NAME, found none")
    return values


def parse_uname(text: str) -> Tuple[str, str, str]:
    """``uname -n -r -m`` prints node name, kernel release and machine on one line, in that order."""
    fields = text.split()
    if len(fields) != 3 or not all(f.isprintable() for f in fields):
        raise ParseError(f"uname -n -r -m: expected 'hostname release machine', found {text[:80]!r}")
    return fields[0], fields[1], fields[2]


def clean_dmi(text: str) -> Optional[str]:
    """A DMI string, or None for the placeholders firmware leaves in unset fields."""
    value = text.strip().replace("\x00", "")
    if value.lower() in DMI_PLACEHOLDERS or not value.isprintable():
        return None
    return value


def parse_machine_id(text: str) -> Optional[str]:
    """machine-id(5): 32 lower-case hex characters; anything else (uninitialized, empty) is unknown."""
    value = text.strip()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else None


def parse_detect_virt(result: ProbeResult) -> Optional[bool]:
    """systemd-detect-virt prints the technology (rc 0) or ``none`` (rc 1)."""
    out = result.stdout.strip()
    if result.error is not None:
        return None
    if out == "none":
        return False
    if result.rc == 0 and re.fullmatch(r"[a-z0-9_-]+", out):
        return True
    raise ParseError(f"systemd-detect-virt: expected a technology name or 'none', found {out[:40]!r}")


def hardware_model(vendor: Optional[str], product: Optional[str], version: Optional[str]) -> Optional[str]:
    """Vendor and product; Lenovo puts the marketing name in product_version, the type in product_name."""
    if vendor and vendor.upper() == "LENOVO" and version:
        product = version
    parts = [p for p in (vendor, product) if p]
    if len(parts) == 2 and parts[1].lower().startswith(parts[0].lower()):
        parts = parts[1:]
    return " ".join(parts) or None


def _optional_read(host: Host, path: str, evidence: List[str]) -> Optional[str]:
    result = host.read_text(path)
    if result.error in (NOT_FOUND, PERMISSION_DENIED):
        evidence.append(f"{path}: {'not readable (needs root)' if result.error == PERMISSION_DENIED else 'absent'}")
        return None
    if result.error is not None:
        evidence.append(result.describe_failure())
        return None
    return result.stdout


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    release = host.read_text(OS_RELEASE_PATHS[0])
    if release.error == NOT_FOUND:
        release = host.read_text(OS_RELEASE_PATHS[1])
    if release.error == NOT_FOUND:
        return CheckOutcome.error(CHECK, message("os_release_missing", first=OS_RELEASE_PATHS[0],
                                                 second=OS_RELEASE_PATHS[1]))
    if release.error is not None:
        return CheckOutcome.probe_failed(CHECK, release)
    os_release = parse_os_release(release.stdout)
    evidence.append(f"{release.target[0]}: PRETTY_NAME={os_release.get('PRETTY_NAME', '')!r}")

    # uname, not /proc/sys/kernel/*: procfs sysctl files refuse the probe layer's large read buffer (ENOMEM).
    uname = host.run(["uname", "-n", "-r", "-m"], timeout=5)
    if not uname.ok:
        return CheckOutcome.probe_failed(CHECK, uname)
    hostname, kernel, architecture = parse_uname(uname.stdout)

    machine_id = None
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        text = _optional_read(host, path, evidence)
        if text is not None:
            machine_id = parse_machine_id(text)
            break

    serial_text = _optional_read(host, DMI + "product_serial", evidence)
    serial = clean_dmi(serial_text) if serial_text is not None else None
    vendor_text = _optional_read(host, DMI + "sys_vendor", evidence)
    model: Optional[str] = None
    if vendor_text is not None:
        product_text = _optional_read(host, DMI + "product_name", evidence) or ""
        version_text = _optional_read(host, DMI + "product_version", evidence) or ""
        model = hardware_model(clean_dmi(vendor_text), clean_dmi(product_text), clean_dmi(version_text))
    else:
        # ARM boards have no DMI; the device tree names the board.
        tree = _optional_read(host, "/proc/device-tree/model", evidence)
        model = clean_dmi(tree) if tree is not None else None

    virt_probe = host.run(["systemd-detect-virt"], timeout=5)
    virtual = parse_detect_virt(virt_probe)
    if virtual is None:
        evidence.append(virt_probe.describe_failure())
    else:
        evidence.append(f"systemd-detect-virt: {virt_probe.stdout.strip()}")

    facts: Dict[str, Any] = {
        "platform": "linux",
        "os_name": os_release.get("NAME"),
        "os_id": os_release.get("ID"),
        "os_version": os_release.get("VERSION_ID") or os_release.get("BUILD_ID"),
        "os_edition": os_release.get("VARIANT"),
        "kernel": kernel,
        "architecture": architecture,
        "hostname": hostname,
        "machine_id": machine_id,
        "serial": serial,
        "hardware_model": model,
        "virtual": virtual,
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
