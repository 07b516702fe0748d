"""Time synchronisation: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec

SPEC = CheckSpec(
    id="time_sync",
    title="Clock synchronised by a time service",
    description=(
        "Whether a time service runs and keeps the clock synchronised: systemd-timesyncd, chrony or ntpd on "
        "Linux, timed on macOS, the Windows Time service (w32time). Report timestamps, certificate checks "
        "and signed access decisions depend on a correct clock."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("service", "string", "the running time service (systemd-timesyncd, chronyd, ntpd, timed, "
                                      "w32time), null when none runs"),
        FactSpec("service_running", "bool", "a time service is running"),
        FactSpec("synchronized", "bool", "the clock is synchronised to a time source"),
        FactSpec("source", "string", "the time source in use (server name or address)"),
        FactSpec("offset_seconds", "number", "measured offset from the source, seconds (positive: clock ahead)"),
    ),
)
