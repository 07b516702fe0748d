"""Firewall: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec

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
        FactSpec("profiles", "list", "Windows: the firewall profiles, one row each", row=(
            FieldSpec("name", "string", "Domain, Private or Public"),
            FieldSpec("enabled", "bool", "the profile is on"),
            FieldSpec("inbound_action", "string", "what happens to unsolicited inbound traffic: drop (block, not "
                                                  "configured), accept or unknown"),
        )),
        FactSpec("stealth_mode", "bool", "macOS: stealth mode on"),
        FactSpec("frontends", "list", "Linux: the firewall front-ends found (ufw, firewalld), one row each", row=(
            FieldSpec("name", "string", "ufw or firewalld"),
            FieldSpec("active", "bool", "the front-end is active (null: its state could not be read)"),
            FieldSpec("default_incoming", "string", "ufw: its default policy for incoming traffic (deny, reject, allow)"),
            FieldSpec("error", "string", "why its state could not be read"),
        )),
    ),
)
