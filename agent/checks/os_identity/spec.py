"""OS identity: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, ParamSpec

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
        # From the lifecycle table (agent/checks/os_identity/lifecycle.py, extended by the policy) and the date.
        FactSpec("os_support_phase", "string", "supported, extended (LTS, ESM, LTSS, ESU), end_of_life, or unknown "
                                               "when the lifecycle table does not know this release",
                 nullable=False),
        FactSpec("os_support_release", "string", "the lifecycle table entry this OS matched (Debian 12 (bookworm))"),
        FactSpec("os_support_ends", "string", "last day (YYYY-MM-DD) of security updates, extended phase included"),
        FactSpec("os_regular_support_ends", "string", "last day (YYYY-MM-DD) of regular security support"),
        FactSpec("os_support_days_left", "int", "days from the day of the check (the host's clock; a replay uses the "
                                                  "recording's time) to os_support_ends (negative once past)"),
        FactSpec("os_support_estimated", "bool", "the vendor publishes no date (Apple, unreleased Fedora "
                                                  "dates): the dates are estimated"),
    ),
    params=(
        ParamSpec("lifecycle", "os_lifecycle", "lifecycle table entries that replace or add to the agent's table "
                                               "({os, release, edition?, name, supported_until, extended_until?, "
                                               "estimated?, source?})"),
    ),
)
