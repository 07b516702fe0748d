"""Result messages: a key and parameters, rendered as text in any language from a catalog.

The English catalog lives here because the evaluator (shared with the collector) writes every
result's English ``reason`` from its message; agent/i18n/{fr,ar}.json translate the same keys.
The check collectors' own reasons (a probe not found, no graphical session ...) are part of the
same catalog: their English sentences are in agent/checks/messages.py, merged below.
"""

from __future__ import annotations

import json
import string
from typing import Any, Callable, Dict, List, Mapping, Optional

from agent.checks.messages import TEMPLATES_EN as CHECK_TEMPLATES_EN
from agent.checks.messages import Message as Message  # re-exported: the engine and i18n use these names
from agent.checks.messages import message as message

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

WORDS_EN: Mapping[str, str] = {"true": "yes", "false": "no", "unknown": "unknown", "list_separator": ", ",
                               "item_separator": "; "}


def is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("key"), str) and isinstance(value.get("params"), dict)


class _Params(Dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


MAX_NESTING = 8


def render(msg: Any, templates: Mapping[str, str], words: Mapping[str, str],
           fact_labels: Mapping[str, str], fallback: Callable[[Any], str] | None = None, depth: int = 0) -> str:
    """Text of a message in the catalog's language; unknown keys fall back (to English) or show the key.

    Messages may come from a device's report, so nesting is bounded and every value is shown as text.
    """
    if not is_message(msg):
        return str(msg)[:2000]
    if depth > MAX_NESTING:
        return "..."
    template = templates.get(msg["key"])
    if template is None:
        return fallback(msg) if fallback is not None else str(msg["key"])[:200]

    def value_text(value: Any) -> str:
        if is_message(value):
            return render(value, templates, words, fact_labels, fallback, depth + 1)
        if isinstance(value, bool):
            return words.get("true" if value else "false", str(value))
        if value is None:
            return words.get("unknown", "unknown")
        if isinstance(value, float):
            return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
        if isinstance(value, list):
            sep = words.get("item_separator", "; ") if any(is_message(v) for v in value) \
                else words.get("list_separator", ", ")
            return sep.join(value_text(v) for v in value[:50])
        return str(value)[:500] if not isinstance(value, (dict, list)) else json_text(value)

    params = _Params()
    for name, value in msg["params"].items():
        if name == "fact" and isinstance(value, str):
            params[name] = fact_labels.get(value, value)
        else:
            params[name] = value_text(value)
    try:
        return string.Formatter().vformat(template, (), params)
    except (ValueError, IndexError, KeyError):
        return template


def json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)[:500]
    except (TypeError, ValueError, RecursionError):
        return "?"


def render_en(msg: Any) -> str:
    return render(msg, TEMPLATES_EN, WORDS_EN, FACT_LABELS_EN)


def render_in(msg: Any, lang: str) -> Optional[str]:
    """Text of ``msg`` in ``lang`` (en, fr, ar: agent/i18n), or None when it cannot be shown as a whole
    in that language: not a message, a key (nested ones included) the catalog of ``lang`` does not
    translate, a parameter its template needs missing, or nested too deep. The caller then shows the
    English reason it has; a sentence half in English, or with a ``{placeholder}`` left, is never made.

    For the collector, which may import agent.policy but not agent.i18n (DESIGN.md); ``msg`` may come
    from a device, so it is checked here rather than trusted.
    """
    from agent.i18n import catalog  # agent.i18n imports this module: imported at call time

    texts = catalog(lang)
    translated = TEMPLATES_EN if lang == "en" else texts.data.get("messages")
    if not isinstance(translated, dict):
        return None

    def complete(value: Any, depth: int) -> bool:
        if isinstance(value, list):
            return all(complete(item, depth) for item in value[:50])
        if not isinstance(value, dict) or "key" not in value:
            return True  # a plain value, shown as text
        template = translated.get(value["key"]) if is_message(value) else None
        return (depth <= MAX_NESTING and isinstance(template, str) and value["key"] in TEMPLATES_EN
                and set(placeholders(template)) <= set(value["params"])
                and all(complete(param, depth + 1) for param in value["params"].values()))

    return texts.message(msg) if is_message(msg) and complete(msg, 0) else None


def placeholders(template: str) -> List[str]:
    return sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})
