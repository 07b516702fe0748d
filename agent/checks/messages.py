"""English sentences of the check collectors' reasons (why a check is ``error`` or ``not_applicable``).

One catalogue: agent.policy.messages merges these templates into the one it renders, and the
agent's gettext catalogues (agent/i18n/locale/{fr,ar}) translate the same keys: each entry's context
is ``messages.<key>`` and its msgid the English template. A collector gives a reason as
``message(key, **params)``; `CheckOutcome` keeps the English text (rendered from it) for old
readers and the message for translation. Probe names, paths, versions and command output stay
parameters and are never translated; only the sentence around them is.

The renderer lives here too, beside the message type: this module imports nothing of the agent,
so probes, check modules and the policy engine can all use it, and translations come in as an
object (`Translations`, which agent.i18n.Catalogue is) rather than by importing a catalogue module.
"""

from __future__ import annotations

import json
import string
from typing import Any, Dict, List, Mapping, Optional, Protocol

Message = Dict[str, Any]

TEMPLATES_EN: Mapping[str, str] = {
    # agent/probes.py ProbeResult.failure_message: the most common reasons of all
    "probe_command_not_found": "{probe}: command not found",
    "probe_not_found": "{probe}: not found",
    "probe_permission_denied": "{probe}: permission denied (run the agent with the rights the docs list)",
    "probe_timed_out": "{probe}: timed out after {seconds}s",
    "probe_not_recorded": "{probe}: not present in the recording being replayed",
    "probe_os_error": "{probe}: {error}",
    "probe_exit_status": "{probe}: exited with status {status}",
    "probe_exit_status_output": "{probe}: exited with status {status}: {output}",
    "probe_output_not_number": "{probe}: expected a number, found {found}",
    "failure_and": "{first}; and {second}",
    "failure_hint": "{failure} ({hint})",
    # agent/checks/base.py run_collector
    "check_not_on_platform": "{check} is not checked on {platform}",
    "probe_output_unexpected": "unexpected probe output: {problem}",
    "probe_output_uninterpretable": "could not interpret probe output ({problem})",
    "check_internal_error": "internal error: {problem}",
    # agent/checks/declarations.py row_problems: a row of a list fact against its declared shape
    "fact_row_bad_field": "{check}: fact {fact}, row {row}: field {field} should be {expected}, found {found}",
    "fact_row_unknown_field": "{check}: fact {fact}, row {row}: unknown field {field} (declared fields: {declared})",
    "fact_row_not_object": "{check}: fact {fact}, row {row} should be an object, found {found}",
    "fact_item_bad_type": "{check}: fact {fact}, item {row} should be {expected}, found {found}",
    # Windows PowerShell probes (agent/checks/_windows_ps.py)
    "ps_probe_failed": "{what}: {failure}",
    "ps_access_denied": "{what}: access denied; this probe needs {rights}",
    "ps_not_available": "{what}: not available on this Windows installation ({output})",
    "rights_administrator": "an administrator (or the agent service)",
    "rights_bitlocker": "administrator rights: only administrators and LocalSystem may read BitLocker status",
    "rights_console_user": "to run as the logged-on user or as LocalSystem",
    # screen_lock
    "screen_lock_no_session_no_logind": "no graphical session: logind is not available to list sessions and no "
                                        "display server process (Xorg, Xwayland, gnome-shell, kwin, sway...) "
                                        "is running",
    "screen_lock_sessions_unlisted": "display server processes are running ({servers}) but logind cannot list "
                                     "their sessions: {failure}",
    "screen_lock_no_graphical_session": "no graphical session: logind lists no session of type x11, wayland or mir",
    "screen_lock_other_user": "cannot read {user}'s GNOME settings: the agent runs as uid {uid}, neither root "
                              "nor that user",
    "screen_lock_no_console_user": "no user is logged in at the console",
    # disk_encryption
    "disk_overlay_root": "/ is an {fstype} file system (a container or live system): the block device holding it "
                         "cannot be seen from here, so its encryption cannot be judged; check the host instead",
    "disk_device_unresolved": "cannot resolve the block device of {mount} ({device}) from lsblk output; refusing "
                              "to guess whether it is encrypted",
    # os_identity
    "os_release_missing": "no os-release file: {first} and {second} are both missing",
    # firewall
    "firewall_no_tool": "cannot read the firewall ruleset: neither nft nor iptables-save is installed ({failure})",
    # patches
    "patches_no_manager": "no supported package manager found (looked for {looked_for}); os-release ID={os_id}",
    "patches_no_apt_index": "no package index in {directory} (no *_InRelease or *_Release file): apt has never "
                            "downloaded its package lists, so pending updates cannot be known. Run '{command}'.",
    "patches_makecache_hint": "run '{command}' as root if the cache is missing",
    # local_admin, wifi
    "local_admin_no_console_user": "nobody is signed in at the console: there is no employee account to judge",
    "wifi_no_interface": "this computer has no Wi-Fi interface",
    # vpn (its probe failures are the probe_* and ps_* messages above)
    "vpn_networks_parameter_invalid": "policy parameter {parameter}: {problem}; found {found}. Give a list such as "
                                      "{example}.",
}


WORDS_EN: Mapping[str, str] = {"true": "yes", "false": "no", "unknown": "unknown", "list_separator": ", ",
                               "item_separator": "; "}

# Reports come from devices: nested messages are bounded.
MAX_NESTING = 8


class Translations(Protocol):
    """What rendering needs of a catalogue (agent.i18n.Catalogue): the translation of an English text
    in a context, or None when the language lacks it."""

    def find(self, msgid: str, *, context: Optional[str] = None, plural: Optional[str] = None,
             count: object = None) -> Optional[str]: ...


def message(key: str, **params: Any) -> Message:
    """A translatable reason: ``key`` of `TEMPLATES_EN` (or of the engine's catalogue) and its parameters."""
    return {"key": key, "params": params}


def is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("key"), str) and isinstance(value.get("params"), dict)


def english(msg: Message) -> str:
    """The English text of a reason message (what ``CheckOutcome.reason`` and old readers get)."""
    return render(msg, TEMPLATES_EN)


class _Params(Dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def translated(translations: Optional[Translations], section: str, key: str, english_text: str) -> str:
    """The translation of one catalogue entry (context ``section.key``), else its English text."""
    found = translations.find(english_text, context=f"{section}.{key}") if translations is not None else None
    return english_text if found is None else found


def render(msg: Any, templates: Mapping[str, str], fact_labels: Mapping[str, str] = {},
           translations: Optional[Translations] = None, depth: int = 0) -> str:
    """Text of a message: each template, word and fact label translated where ``translations`` has it,
    English otherwise; an unknown key shows itself.

    Messages may come from a device's report, so nesting is bounded and every value is shown as text.
    """
    if not is_message(msg):
        return str(msg)[:2000]
    if depth > MAX_NESTING:
        return "..."
    template = templates.get(msg["key"])
    if template is None:
        return str(msg["key"])[:200]

    def word(name: str) -> str:
        return translated(translations, "words", name, WORDS_EN[name])

    def value_text(value: Any) -> str:
        if is_message(value):
            return render(value, templates, fact_labels, translations, depth + 1)
        if isinstance(value, bool):
            return word("true" if value else "false")
        if value is None:
            return word("unknown")
        if isinstance(value, float):
            return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
        if isinstance(value, list):
            sep = word("item_separator" if any(is_message(v) for v in value) else "list_separator")
            return sep.join(value_text(v) for v in value[:50])
        return str(value)[:500] if not isinstance(value, dict) else json_text(value)

    params = _Params()
    for name, value in msg["params"].items():
        if name == "fact" and isinstance(value, str):
            label = fact_labels.get(value)
            params[name] = value if label is None else translated(translations, "facts", value, label)
        else:
            params[name] = value_text(value)
    try:
        # str.format_map: string.Formatter's pure-Python parse gave the same text at ~4x the CPU (the
        # collector renders every rule's reason for each evaluated report).
        return translated(translations, "messages", msg["key"], template).format_map(params)
    except (ValueError, IndexError, KeyError):
        return template


def json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)[:500]
    except (TypeError, ValueError, RecursionError):
        return "?"


def placeholders(template: str) -> List[str]:
    return sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})
