"""Anti-malware: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.antivirus import darwin, linux, windows
from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401

SPEC = CheckSpec(
    id="antivirus",
    title="Anti-malware",
    description="Whether an anti-malware or EDR product is running, with real-time protection and fresh signatures.",
    platforms=PLATFORMS,
    facts=(
        FactSpec("running", "bool", "at least one anti-malware/EDR product is running"),
        FactSpec("products", "list",
                 "per product: {name, kind (antivirus|edr|builtin), running, realtime, signature_age_days, version, "
                 "signatures_up_to_date}"),
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

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
