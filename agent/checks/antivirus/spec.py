"""Anti-malware: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec

SPEC = CheckSpec(
    id="antivirus",
    title="Anti-malware",
    description="Whether an anti-malware or EDR product is running, with real-time protection and fresh signatures.",
    platforms=PLATFORMS,
    facts=(
        FactSpec("running", "bool", "at least one anti-malware/EDR product is running"),
        FactSpec("products", "list", "the anti-malware and EDR products found, one row each", row=(
            FieldSpec("name", "string", "product name (Microsoft Defender Antivirus, ClamAV, CrowdStrike Falcon)"),
            FieldSpec("kind", "string", "antivirus, edr or builtin (shipped with the OS)"),
            FieldSpec("running", "bool", "the product is running"),
            FieldSpec("realtime", "bool", "its real-time (on-access) protection is on, where it reports it"),
            FieldSpec("signature_age_days", "number", "age of its signatures in days, where it publishes one"),
            FieldSpec("version", "string", "product or signature version as the product reports it"),
            FieldSpec("signatures_up_to_date", "bool", "the product's own verdict on its signatures (Security "
                                                       "Center productState), where it publishes no age"),
        )),
        FactSpec("realtime_protection", "bool", "real-time (on-access) protection is on, where the product reports it"),
        FactSpec("signature_age_days", "number", "age of the freshest signature set among running products (null: none)"),
        FactSpec("signature_source", "string",
                 "how the running products report their signatures: age (a signature age is published), "
                 "product_state (only the product's own up-to-date verdict: Windows Security Center), none",
                 # agents before issue 15 reported ages only
                 absent="age"),
        FactSpec("signatures_up_to_date", "bool",
                 "the product's own verdict on its signatures where no age is published (Security Center "
                 "productState); null otherwise"),
    ),
)
