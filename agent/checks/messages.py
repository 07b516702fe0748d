"""English sentences of the check collectors' reasons (why a check is ``error`` or ``not_applicable``).

One catalogue: agent.policy.messages merges these templates into the one it renders, and
agent/i18n/{fr,ar}.json translate the same keys. A collector gives a reason as
``message(key, **params)``; `CheckOutcome` keeps the English text (rendered from it) for old
readers and the message for translation. Probe names, paths, versions and command output stay
parameters and are never translated; only the sentence around them is.

This module imports nothing of the agent so that probes and check modules can use it: the
policy package imports the checks, so they cannot import it at load time.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

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


def message(key: str, **params: Any) -> Message:
    """A translatable reason: ``key`` of `TEMPLATES_EN` (or of the engine's catalogue) and its parameters."""
    return {"key": key, "params": params}


def english(msg: Message) -> str:
    """The English text of a reason message (what ``CheckOutcome.reason`` and old readers get)."""
    # Imported here: agent.policy imports the checks, which import this module.
    from agent.policy.messages import render_en
    return render_en(msg)
