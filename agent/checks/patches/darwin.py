"""Updates on macOS: pending updates from ``softwareupdate --list``, the Software Update preferences
(automatic check / security responses and system data files, last successful check) and the newest
installed system update from /Library/Receipts/InstallHistory.plist.

``softwareupdate --list`` asks Apple's servers (slow): long timeout, cached on the preference file that
records each successful check. Preference files are read with ``plutil -convert xml1 -o -`` so binary
plists parse too; a configuration profile's values (/Library/Managed Preferences) override the local ones.
A pending macOS update of the running major version, a Rapid Security Response, a Security Update or a
Safari update counts as a security update; an upgrade to the next major version does not.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._host_json import days_between, iso_utc
from agent.checks._plist import parse_plist, parse_plist_dict, plist_bool, plist_epoch
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.os_identity.darwin import SW_VERS, parse_sw_vers
from agent.probes import Host

CHECK = "patches"

PREFS = "/Library/Preferences/com.apple.SoftwareUpdate.plist"
MANAGED_PREFS = "/Library/Managed Preferences/com.apple.SoftwareUpdate.plist"
INSTALL_HISTORY = "/Library/Receipts/InstallHistory.plist"
SU_LIST = ["softwareupdate", "--list"]
# Seeding.framework's tool (root only): "Currently enrolled in: PublicSeed" or "(null)"
SEEDUTIL = ["/System/Library/PrivateFrameworks/Seeding.framework/Versions/A/Resources/seedutil", "current"]
LIST_TIMEOUT = 180.0


def plutil(path: str) -> List[str]:
    return ["plutil", "-convert", "xml1", "-o", "-", path]


_LABEL = re.compile(r"^\s*[*-]\s*Label:\s*(.+?)\s*$")
_RSR = re.compile(r"\(\s*[a-z]\s*\)")
_SECURITY_WORDS = ("security response", "security update", "background security", "safari")
# Silent data updates and developer tools installed by softwareupdated: not system updates.
_NOT_SYSTEM_UPDATES = ("configdata", "xprotect", "gatekeeper", "mrt", "command line tools", "compatibility",
                       "background task management")
_SU_PROCESSES = ("softwareupdated", "software update", "macos installer", "system preferences", "system settings")


# A beta or release candidate offered because the Mac is enrolled in a seed program ("macOS Sequoia 15.2
# beta 2-24C5057p"): Apple's beta builds are a 5xxx number with a lower-case letter (a Rapid Security
# Response's build also ends in a letter, 22F770820d, but is no beta).
_PRERELEASE_WORDS = re.compile(r"\b(beta|rc|release candidate)\b", re.IGNORECASE)
_PRERELEASE_BUILD = re.compile(r"-\d{2}[A-Z]5\d{3}[a-z]$")


def is_prerelease(label: str, title: str) -> bool:
    return bool(_PRERELEASE_WORDS.search(title) or _PRERELEASE_WORDS.search(label) or _PRERELEASE_BUILD.search(label))


def parse_seedutil(text: str) -> str:
    """``seedutil current`` -> the seed program enrolled in (``none`` when "(null)")."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Currently enrolled in":
            program = value.strip()
            return "none" if program in ("", "(null)") else program
    raise ParseError(f"seedutil current: no 'Currently enrolled in:' line in {text.strip()[:120]!r}")


def parse_list(text: str, os_version: str) -> Dict[str, Any]:
    """``softwareupdate --list`` (stdout and stderr) -> counts and labels of pending (security) updates.

    Betas and release candidates (offered to a Mac enrolled in a seed program) are not missing patches:
    they are listed under ``prerelease`` and counted nowhere else."""
    if "No new software available" in text:
        return {"pending_updates": 0, "pending_security_updates": 0, "pending_security_packages": [],
                "prerelease": []}
    lines = text.splitlines()
    items: List[Dict[str, str]] = []
    for index, line in enumerate(lines):
        match = _LABEL.match(line)
        if match:
            detail = lines[index + 1].strip() if index + 1 < len(lines) else ""
            fields = {}
            for part in detail.split(","):
                key, sep, value = part.partition(":")
                if sep:
                    fields[key.strip().lower()] = value.strip()
            items.append({"label": match.group(1), "title": fields.get("title", match.group(1)),
                          "version": fields.get("version", ""), "recommended": fields.get("recommended", "")})
    if not items and "found the following" not in text:
        raise ParseError("softwareupdate --list: expected 'No new software available.' or '* Label:' lines, "
                         f"found {text.strip()[:120]!r}")
    major = os_version.split(".")[0]
    prerelease = [item["label"] for item in items if is_prerelease(item["label"], item["title"])]
    items = [item for item in items if item["label"] not in prerelease]
    security = []
    for item in items:
        title = item["title"].lower()
        is_security = any(word in title for word in _SECURITY_WORDS) or bool(_RSR.search(item["title"]))
        if title.startswith("macos") and item["version"].split(".")[0] == major:
            is_security = True  # a point release of the running major version carries its security fixes
        if is_security:
            security.append(item["label"])
    return {"pending_updates": len(items), "pending_security_updates": len(security),
            "pending_security_packages": security, "prerelease": prerelease}


def parse_prefs(text: Optional[str], managed_text: Optional[str]) -> Dict[str, Any]:
    """Software Update preferences (managed values win) -> automatic updates and last successful check."""
    local = parse_plist_dict(text, "com.apple.SoftwareUpdate.plist") if text else {}
    managed = parse_plist_dict(managed_text, "managed com.apple.SoftwareUpdate.plist") if managed_text else {}

    def effective(key: str, default: bool) -> bool:
        for source in (managed, local):
            value = plist_bool(source.get(key))
            if value is not None:
                return value
        return default

    settings = {key: effective(key, default) for key, default in (
        ("AutomaticCheckEnabled", True), ("AutomaticDownload", True), ("CriticalUpdateInstall", True),
        ("ConfigDataInstall", True), ("AutomaticallyInstallMacOSUpdates", False))}
    last_check = plist_epoch(local.get("LastSuccessfulDate")) or plist_epoch(local.get("LastFullSuccessfulDate"))
    # Security responses and system data files install by themselves only when the Mac checks and is allowed to.
    automatic = settings["AutomaticCheckEnabled"] and settings["CriticalUpdateInstall"] and settings["ConfigDataInstall"]
    return {"automatic_updates": automatic, "last_check": last_check, "settings": settings,
            "managed": bool(managed)}


def parse_install_history(text: str) -> Optional[Dict[str, Any]]:
    """Newest system update in InstallHistory.plist: {date, name} (None: none found)."""
    entries = parse_plist(text, "InstallHistory.plist")
    if not isinstance(entries, list):
        raise ParseError("InstallHistory.plist: expected an array of installations")
    newest: Optional[Dict[str, Any]] = None
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("displayName") or "")
        process = str(entry.get("processName") or "").lower()
        when = plist_epoch(entry.get("date"))
        if when is None or process not in _SU_PROCESSES:
            continue
        if any(word in name.lower().replace(" ", "") for word in (w.replace(" ", "") for w in _NOT_SYSTEM_UPDATES)):
            continue
        if newest is None or when > newest["date"]:
            newest = {"date": when, "name": f"{name} {entry.get('displayVersion') or ''}".strip()}
    return newest


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    now = host.now()
    evidence: List[str] = []
    vers = host.run(SW_VERS)
    if not vers.ok:
        return CheckOutcome.probe_failed(CHECK, vers)
    os_version = parse_sw_vers(vers.stdout)["ProductVersion"]

    # cached until Software Update checks again or something is installed
    listing = host.run(SU_LIST, timeout=LIST_TIMEOUT, cache_on=[PREFS, INSTALL_HISTORY])
    if not listing.ok:
        return CheckOutcome.probe_failed(CHECK, listing)
    pending = parse_list(f"{listing.stdout}\n{listing.stderr}", os_version)
    prerelease = pending.pop("prerelease")
    evidence.append(f"softwareupdate --list: {pending['pending_updates']} pending, security: "
                    f"{', '.join(pending['pending_security_packages']) or 'none'}")
    if prerelease:
        evidence.append(f"pre-release updates offered (not counted): {', '.join(prerelease)}")
    seed = host.run(SEEDUTIL, timeout=15.0)
    seed_program: Optional[str] = None
    if seed.ok:
        try:
            seed_program = parse_seedutil(seed.stdout)
            evidence.append(f"seedutil: enrolled in {seed_program}")
        except ParseError as exc:
            evidence.append(f"seed program unknown: {exc}")
    else:
        evidence.append(f"seed program unknown: {seed.describe_failure()}")

    prefs = host.run(plutil(PREFS))
    managed = host.run(plutil(MANAGED_PREFS))
    settings = parse_prefs(prefs.stdout if prefs.ok else None, managed.stdout if managed.ok else None)
    if not prefs.ok:
        evidence.append(f"Software Update preferences unreadable ({prefs.describe_failure()}): Apple defaults assumed")
    evidence.append("Software Update settings" + (" (configuration profile)" if settings["managed"] else "") + ": "
                    + ", ".join(f"{k}={v}" for k, v in settings["settings"].items()))

    history = host.run(plutil(INSTALL_HISTORY), cache_on=[INSTALL_HISTORY])
    last: Optional[Dict[str, Any]] = None
    if history.ok:
        last = parse_install_history(history.stdout)
        evidence.append(f"last system update installed: {last['name']} at {iso_utc(last['date'])}" if last
                        else "no system update found in InstallHistory.plist")
    else:
        evidence.append(f"install history unavailable: {history.describe_failure()}")
    last_date = last["date"] if last else None
    facts = {
        "package_manager": "softwareupdate",
        "os_version": os_version,
        "os_build_number": None,
        **pending,
        "phased_updates_deferred": None,
        "package_lists_age_days": days_between(settings["last_check"], now),
        "days_since_last_update": days_between(last_date, now),
        "last_update_at": iso_utc(last_date),
        # macOS applies restart-requiring updates during the restart itself: an installed update never
        # waits for one (a downloaded one that does is still pending, counted above).
        "reboot_required": False,
        "automatic_updates": settings["automatic_updates"],
        "seed_program": seed_program,
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
