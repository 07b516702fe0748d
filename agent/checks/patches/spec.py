"""Updates: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec

SPEC = CheckSpec(
    id="patches",
    title="System updates",
    description="Pending (security) updates, how recently the system was updated, automatic updates.",
    platforms=PLATFORMS,
    facts=(
        FactSpec("package_manager", "string", "apt, dnf, yum, zypper, softwareupdate, windows-update"),
        FactSpec("os_version", "version", "OS version, for minimum-version rules"),
        FactSpec("os_build_number", "int", "Windows build number, for minimum-build rules"),
        FactSpec("pending_updates", "int", "updates available and not installed"),
        FactSpec("pending_security_updates", "int", "of which security updates"),
        FactSpec("pending_security_packages", "list", "names of packages (or KB / product labels) with pending security fixes",
                 items="string"),
        FactSpec("phased_updates_deferred", "int", "apt updates held back by phasing (not counted as pending)"),
        FactSpec("package_lists_age_days", "number", "days since the package lists / update catalog were refreshed"),
        FactSpec("days_since_last_update", "number", "days since updates were last successfully installed"),
        FactSpec("last_update_at", "string", "RFC 3339 time of the last successful update"),
        FactSpec("reboot_required", "bool", "an installed update waits for a reboot"),
        FactSpec("automatic_updates", "bool", "automatic (security) updates are configured and enabled"),
        FactSpec("seed_program", "string",
                 "macOS: the Apple beta (seed) program the Mac is enrolled in (DeveloperSeed, PublicSeed, "
                 "CustomerSeed) or none; its beta updates are not counted as pending (null: unknown)"),
    ),
)
