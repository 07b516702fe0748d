"""Result messages: a key and parameters, rendered as text in any language from a catalogue.

The English texts live here because the evaluator (shared with the collector) writes every
result's English ``reason`` from its message; the agent's gettext catalogues
(agent/i18n/locale/{fr,ar}/LC_MESSAGES/agent.po) translate them, each entry under the context
``messages.<key>``, ``facts.<name>`` or ``words.<name>`` with the English text as its msgid. The
check collectors' own reasons (a probe not found, no graphical session ...) are part of the same
catalogue: their English sentences are in agent/checks/messages.py, merged below.

This module does not import the catalogue system (agent.i18n), nor it this one: whoever shows a
message in a language passes that language's catalogue to `render` (the command line, the collector).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from agent.checks.messages import MAX_NESTING, WORDS_EN, Translations, is_message, placeholders
from agent.checks.messages import TEMPLATES_EN as CHECK_TEMPLATES_EN
from agent.checks.messages import Message as Message  # re-exported: the engine uses these names
from agent.checks.messages import message as message
from agent.checks.messages import render as render_with

__all__ = ["ENGINE_TEMPLATES_EN", "FACT_LABELS_EN", "TEMPLATES_EN", "WORDS_EN", "Message", "Translations",
           "catalogue_entries", "is_message", "message", "placeholders", "render", "render_complete", "render_en"]

ENGINE_TEMPLATES_EN: Mapping[str, str] = {
    "check_error": "{check} could not be checked: {reason}",
    "check_not_applicable": "does not apply here: {reason}",
    "check_missing": "no facts were collected for check {check}",
    "facts_malformed": "facts for {check} are malformed: {problem}",
    "fact_unknown": "{fact} unknown ({reason})",
    "not_reported": "the check did not report it",
    "fact_bad_type": "{fact} should be {expected}, found {found}",
    "eq_pass": "{fact}: {value}",
    "eq_fail": "{fact}: {value} (expected: {expected})",
    "in_fail": "{fact}: {value} (expected one of: {allowed})",
    "max_pass": "{fact}: {value} (at most {max})",
    "max_warn": "{fact}: {value}, above {warn} (at most {max} allowed)",
    "max_fail": "{fact}: {value} (at most {max} allowed)",
    "min_pass": "{fact}: {value} (at least {min})",
    "min_warn": "{fact}: {value}, below {warn} (at least {min} required)",
    "min_fail": "{fact}: {value} (at least {min} required)",
    "version_max_fail": "{fact}: {value} (at most {max} allowed)",
    "build_fail": "build {value} (at least build {min} required)",
    "build_pass": "build {value} (at least {min})",
    "version_unparsable": "{fact}: cannot compare version {value}",
    "networks_pass": "corporate networks routed through the VPN: {networks}",
    "network_not_via_tunnel": "corporate network {network} is not routed through the VPN (it goes via {interface})",
    "network_not_measured": "corporate network {network} was not measured by the VPN check",
    "networks_not_via_tunnel": "corporate networks are not routed through the VPN",
    "no_expectation_applies": "no expectation of this rule applies on {platform}",
    "within_grace": "{inner}; within the grace period until {until}",
    "when_not_met": "applies only when {condition}",
    "when_eq": "{fact} is {expected}",
    "when_in": "{fact} is one of {allowed}",
    "when_min": "{fact} is at least {min}",
    "when_max": "{fact} is at most {max}",
    "when_build": "the OS build is at least {min}",
    "several": "{items}",
}

TEMPLATES_EN: Mapping[str, str] = {**ENGINE_TEMPLATES_EN, **CHECK_TEMPLATES_EN}

# Short names of facts for people; a fact without a label is shown by its name.
FACT_LABELS_EN: Mapping[str, str] = {
    "system_volume_encrypted": "system volume encrypted",
    "all_fixed_volumes_encrypted": "all fixed volumes encrypted",
    "system_volume_state": "system volume state",
    "tunnel_up": "VPN tunnel up",
    "default_route_via_tunnel": "default route through the VPN",
    "corporate_networks_via_tunnel": "corporate networks through the VPN",
    "vpn_up_share": "share of time with VPN up",
    "pending_updates": "pending updates",
    "pending_security_updates": "pending security updates",
    "days_since_last_update": "days since the last update",
    "package_lists_age_days": "age of the package lists (days)",
    "reboot_required": "reboot required",
    "automatic_updates": "automatic updates",
    "os_version": "OS version",
    "os_build_number": "OS build",
    "enabled": "firewall enabled",
    "inbound_policy": "inbound policy",
    "lock_enabled": "screen lock enabled",
    "idle_delay_seconds": "seconds idle before locking",
    "enforced_by_policy": "enforced by a managed policy",
    "running": "anti-malware running",
    "realtime_protection": "real-time protection",
    "signature_age_days": "signature age (days)",
    "os_support_days_left": "days of security updates left",
    "is_admin": "administrator rights",
    "secure_boot_enabled": "Secure Boot on",
    "exposed": "remote-login service open to the network",
    "service_running": "time service running",
    "synchronized": "clock synchronised",
    "encrypted": "Wi-Fi encrypted",
    "connected": "connected to Wi-Fi",
}


def render(msg: Any, translations: Optional[Translations] = None) -> str:
    """Text of a result's message in the language of ``translations`` (English without), English for
    anything that language lacks."""
    return render_with(msg, TEMPLATES_EN, FACT_LABELS_EN, translations)


def render_en(msg: Any) -> str:
    return render(msg)


def render_complete(msg: Any, translations: Optional[Translations] = None) -> Optional[str]:
    """Text of ``msg`` in the language of ``translations`` (English without), or None when it cannot be
    shown as a whole in that language: not a message, a key (nested ones included) the catalogue does
    not translate, a parameter its template needs missing, or nested too deep. The caller then shows the
    English reason it has; a sentence half in English, or with a ``{placeholder}`` left, is never made.

    ``msg`` may come from a device (the collector shows stored reasons), so it is checked, not trusted.
    """
    def template_of(key: str) -> Optional[str]:
        english = TEMPLATES_EN.get(key)
        if english is None or translations is None:
            return english
        return translations.find(english, context=f"messages.{key}")

    def complete(value: Any, depth: int) -> bool:
        if isinstance(value, list):
            return all(complete(item, depth) for item in value[:50])
        if not isinstance(value, dict) or "key" not in value:
            return True  # a plain value, shown as text
        template = template_of(value["key"]) if is_message(value) else None
        return (depth <= MAX_NESTING and template is not None
                and set(placeholders(template)) <= set(value["params"])
                and all(complete(param, depth + 1) for param in value["params"].values()))

    return render(msg, translations) if is_message(msg) and complete(msg, 0) else None


def catalogue_entries() -> Mapping[str, str]:
    """Every English text of the agent's catalogue by its context (``messages.``, ``facts.``, ``words.``):
    the msgids its ``.po`` files must translate."""
    sections = {"messages": TEMPLATES_EN, "facts": FACT_LABELS_EN, "words": WORDS_EN}
    return {f"{section}.{key}": text for section, table in sections.items() for key, text in table.items()}
