"""Screen lock on macOS, for the user logged in at the console.

* who: ``stat -f %Su /dev/console`` (root while the login window shows: nothing to check);
* password after screen saver / display sleep: ``sysadminctl -screenLock status`` run as that user
  (macOS 13+: "screenLock delay is immediate", "screenLock delay is 5 seconds", "screenLock is off");
* when it idles: the user's screen saver ``idleTime`` (``defaults -currentHost read com.apple.screensaver``,
  not set = the macOS default of 20 minutes) and the display sleep timer (``pmset -g``), whichever is first;
* configuration profiles (/Library/Managed Preferences[/<user>]/com.apple.screensaver.plist:
  askForPassword, askForPasswordDelay, idleTime) override the user's choices.

The agent service runs as root, so per-user commands go through ``sudo -n -H -u <user>``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._plist import parse_plist_dict, plist_bool, plist_int
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import Host

CHECK = "screen_lock"

CONSOLE_USER = ["stat", "-f", "%Su", "/dev/console"]
WHOAMI = ["id", "-un"]
SCREEN_LOCK = ["/usr/sbin/sysadminctl", "-screenLock", "status"]
IDLE_TIME = ["defaults", "-currentHost", "read", "com.apple.screensaver", "idleTime"]
PMSET = ["pmset", "-g"]
MANAGED = "/Library/Managed Preferences"
DEFAULT_IDLE_SECONDS = 1200
NO_SESSION_USERS = ("", "root", "loginwindow", "_mbsetupuser")

# "immediate", "5 seconds", and on some releases "300.000000 seconds"; "-1.000000 seconds" means off.
_DELAY = re.compile(r"screenLock delay is (immediate|(-?\d+(?:\.\d+)?)\s*seconds?)", re.IGNORECASE)


def plutil(path: str) -> List[str]:
    return ["plutil", "-convert", "xml1", "-o", "-", path]


def as_user(user: str, agent_user: Optional[str], argv: List[str]) -> List[str]:
    # -H: the user's HOME, so per-user preferences are the user's and not root's
    return list(argv) if agent_user == user else ["sudo", "-n", "-H", "-u", user, *argv]


def parse_screen_lock(text: str) -> Dict[str, Any]:
    """``sysadminctl -screenLock status`` (it logs to stderr) -> {password_required, delay}."""
    if re.search(r"screenLock (delay )?is off", text, re.IGNORECASE):
        return {"password_required": False, "delay": None}
    match = _DELAY.search(text)
    if not match:
        raise ParseError("sysadminctl -screenLock status: expected 'screenLock delay is ...' or 'screenLock is off', "
                         f"found {text.strip()[:120]!r}")
    if match.group(1).lower() == "immediate":
        return {"password_required": True, "delay": 0}
    delay = float(match.group(2))
    if delay < 0:
        return {"password_required": False, "delay": None}
    return {"password_required": True, "delay": int(delay)}


def parse_idle_time(text: str) -> int:
    value = text.strip()
    try:
        return int(float(value))
    except ValueError as exc:
        raise ParseError(f"defaults read com.apple.screensaver idleTime: expected seconds, found {value[:40]!r}") from exc


def parse_display_sleep(text: str) -> Optional[int]:
    """``pmset -g`` -> display sleep in seconds (0 = never; None = not listed)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "displaysleep":
            try:
                return int(fields[1]) * 60
            except ValueError:
                return None
    return None


def parse_managed(texts: List[str]) -> Dict[str, Any]:
    """Managed screensaver preferences (computer level first, then user level) merged; user level wins."""
    merged: Dict[str, Any] = {}
    for text in texts:
        data = parse_plist_dict(text, "managed com.apple.screensaver.plist")
        for key in ("askForPassword", "askForPasswordDelay", "idleTime"):
            if key in data:
                merged[key] = data[key]
    return merged


def decide(user: str, lock: Optional[Dict[str, Any]], managed: Mapping[str, Any], idle: Optional[int],
           display_sleep: Optional[int]) -> Dict[str, Any]:
    required = plist_bool(managed.get("askForPassword"))
    if required is None:
        required = lock["password_required"] if lock else None
    if required is None:
        raise ParseError("screen lock: expected sysadminctl or a configuration profile to say whether a password is required")
    delay = plist_int(managed.get("askForPasswordDelay"))
    if delay is None:
        delay = (lock or {}).get("delay") or 0
    managed_idle = plist_int(managed.get("idleTime"))
    saver = managed_idle if managed_idle is not None else idle
    triggers = [t for t in (saver, display_sleep) if t is not None and t > 0]
    first = min(triggers) if triggers else 0
    locks = bool(required) and first > 0
    source = (f"password {'required' if required else 'not required'}"
              + (f" {delay}s after" if required else "")
              + f" screen saver at {saver}s" + (f", display sleep at {display_sleep}s" if display_sleep is not None else ""))
    session = {"user": user, "desktop": "aqua", "lock_enabled": locks,
               "idle_delay_seconds": first + delay if locks else 0, "source": source}
    return {"sessions": [session], "lock_enabled": locks, "idle_delay_seconds": session["idle_delay_seconds"],
            "enforced_by_policy": any(k in managed for k in ("askForPassword", "askForPasswordDelay", "idleTime"))}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    console = host.run(CONSOLE_USER)
    if not console.ok:
        return CheckOutcome.probe_failed(CHECK, console)
    user = console.stdout.strip()
    if user in NO_SESSION_USERS:
        return CheckOutcome.not_applicable(CHECK, message("screen_lock_no_console_user"),
                                           [f"/dev/console is owned by {user or 'nobody'}"])
    whoami = host.run(WHOAMI)
    agent_user = whoami.stdout.strip() if whoami.ok else None
    evidence: List[str] = [f"console user: {user}"]

    managed_texts = []
    for path in (f"{MANAGED}/com.apple.screensaver.plist", f"{MANAGED}/{user}/com.apple.screensaver.plist"):
        probe = host.run(plutil(path))
        if probe.ok:
            managed_texts.append(probe.stdout)
            evidence.append(f"configuration profile: {path}")
    managed = parse_managed(managed_texts)

    lock: Optional[Dict[str, Any]] = None
    screen_lock = host.run(as_user(user, agent_user, SCREEN_LOCK))
    if screen_lock.ok:
        lock = parse_screen_lock(f"{screen_lock.stdout}\n{screen_lock.stderr}")
        evidence.append("sysadminctl -screenLock status: "
                        + (f"password after {lock['delay']}s" if lock["password_required"] else "off"))
    elif "askForPassword" not in managed:
        return CheckOutcome.probe_failed(CHECK, screen_lock)
    else:
        evidence.append(f"sysadminctl unavailable ({screen_lock.describe_failure()}), profile decides")

    idle: Optional[int] = None
    idle_probe = host.run(as_user(user, agent_user, IDLE_TIME))
    if idle_probe.ok:
        idle = parse_idle_time(idle_probe.stdout)
    elif idle_probe.error is None and "does not exist" in idle_probe.stderr:
        idle = DEFAULT_IDLE_SECONDS
        evidence.append("screen saver idleTime not set: macOS default 20 minutes")
    elif "idleTime" not in managed:
        return CheckOutcome.probe_failed(CHECK, idle_probe)

    display_sleep: Optional[int] = None
    pmset = host.run(PMSET)
    if pmset.ok:
        display_sleep = parse_display_sleep(pmset.stdout)
    else:
        evidence.append(f"display sleep unknown: {pmset.describe_failure()}")

    facts = decide(user, lock, managed, idle, display_sleep)
    evidence.append(facts["sessions"][0]["source"])
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
