"""Firewall: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401
from agent.checks.firewall import darwin, linux, windows

SPEC = CheckSpec(
    id="firewall",
    title="Firewall",
    description=(
        "Whether a firewall ruleset that filters inbound traffic is loaded (drop/reject by default or "
        "equivalent). Kernel support or an installed tool alone is not an active firewall."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("enabled", "bool", "inbound traffic is filtered by a loaded ruleset (every profile on Windows)"),
        FactSpec("backend", "string", "ufw, firewalld, nftables, iptables, windows-firewall, macos-alf, pf"),
        FactSpec("inbound_policy", "string", "drop, reject, accept or mixed: what happens to unsolicited inbound traffic"),
        FactSpec("rule_count", "int", "number of filtering rules loaded"),
        FactSpec("profiles", "list", "Windows: per profile {name, enabled, inbound_action}"),
        FactSpec("stealth_mode", "bool", "macOS: stealth mode on"),
        FactSpec("frontends", "list", "firewall front-ends found and their state, e.g. {name: ufw, active: false}"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
