"""OS identity: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401
from agent.checks.os_identity import darwin, linux, windows

SPEC = CheckSpec(
    id="os_identity",
    title="Operating system identity",
    description="Which machine and operating system this is; patch rules compare os_version against it.",
    platforms=PLATFORMS,
    facts=(
        FactSpec("platform", "string", "linux, darwin or windows", nullable=False),
        FactSpec("os_name", "string", "distribution or product name (Debian GNU/Linux, macOS, Windows 11 Pro)"),
        FactSpec("os_id", "string", "short id: debian, ubuntu, fedora, macos, windows"),
        FactSpec("os_version", "version", "version as published (12, 24.04, 14.5, 10.0.22631)"),
        FactSpec("os_build", "string", "build or update revision (23F79, 22631.4460) where the OS has one"),
        FactSpec("os_build_number", "int", "Windows build number (19045, 22631)"),
        FactSpec("os_edition", "string", "edition (Pro, Enterprise) where the OS has one"),
        FactSpec("rapid_security_response", "string", "macOS Rapid Security Response version suffix, e.g. (a)"),
        FactSpec("kernel", "string", "kernel release"),
        FactSpec("architecture", "string", "x86_64, arm64"),
        FactSpec("hostname", "string", "host name"),
        FactSpec("machine_id", "string", "stable machine identifier (/etc/machine-id, IOPlatformUUID, MachineGuid)"),
        FactSpec("serial", "string", "hardware serial number where readable"),
        FactSpec("hardware_model", "string", "hardware model (MacBookPro18,3, Latitude 7440)"),
        FactSpec("virtual", "bool", "the OS runs in a virtual machine or container"),
        FactSpec("clock_skew_seconds", "number", "this machine's clock minus the collector's, in seconds, as the "
                                                 "agent service last measured it (from the agent service)"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
