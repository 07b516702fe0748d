"""Screen lock on linux: collector (probes) and pure parsers.

Sessions come from logind (``loginctl list-sessions`` then ``show-session``): types x11, wayland
and mir are graphical; tty sessions and the display manager's greeter are not. Each graphical
session's desktop decides where its lock settings live:

* GNOME (and Ubuntu, Budgie, Pop): the session user's dconf, read with ``gsettings`` run *as that
  user* (``runuser`` when the agent is root), because root's gsettings would show root's settings;
  system locks in ``/etc/dconf/db/*.d/locks`` say whether a policy enforces them;
* KDE Plasma: ``~/.config/kscreenlockerrc`` over ``/etc/xdg/kscreenlockerrc`` (``[$i]`` = immutable);
* XFCE: the xfce4-screensaver xfconf channel file.

Without logind (no systemd, a container) a machine can still run a display server: processes
decide between "no graphical session" (not applicable) and "cannot tell" (error).
"""

from __future__ import annotations

import configparser
import re
import xml.etree.ElementTree as ElementTree
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.checks._host_json import process_rows
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import Message, message
from agent.probes import NOT_FOUND, Host

CHECK = "screen_lock"

GRAPHICAL_TYPES = ("x11", "wayland", "mir")
SHOW_PROPERTIES = ("Type", "Name", "Class", "Display", "Desktop", "State", "Remote")
DISPLAY_SERVERS = frozenset({
    "Xorg", "X", "Xwayland", "Xvnc", "Xtigervnc", "gnome-shell", "kwin_wayland", "kwin_x11", "sway",
    "weston", "mutter", "xfwm4", "Hyprland", "labwc", "cage", "wayfire", "river",
})
GNOME_KEYS = (
    ("org.gnome.desktop.screensaver", "lock-enabled"),
    ("org.gnome.desktop.session", "idle-delay"),
    ("org.gnome.desktop.screensaver", "lock-delay"),
    ("org.gnome.desktop.lockdown", "disable-lock-screen"),
)
GNOME_LOCK_PATHS = ("/org/gnome/desktop/screensaver/lock-enabled", "/org/gnome/desktop/session/idle-delay")
XFCE_CHANNEL = ".config/xfce4/xfconf/xfce-perchannel-xml/xfce4-screensaver.xml"


# -- logind --------------------------------------------------------------------------------------

def parse_session_list(text: str) -> List[Tuple[str, int, str]]:
    """``loginctl list-sessions --no-legend``: SESSION UID USER first, whatever the systemd version."""
    sessions = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or not fields[1].isdigit():
            raise ParseError(f"loginctl list-sessions: expected 'SESSION UID USER ...', found {line[:60]!r}")
        sessions.append((fields[0], int(fields[1]), fields[2]))
    return sessions


def parse_properties(text: str, what: str) -> Dict[str, str]:
    """KEY=value lines (loginctl show-session -p ...)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z]+", key):
            raise ParseError(f"{what}: expected KEY=value lines, found {line[:60]!r}")
        values[key] = value
    if "Type" not in values:
        raise ParseError(f"{what}: expected a Type property, found {sorted(values)}")
    return values


def desktop_family(desktop: str) -> Optional[str]:
    """gnome, kde or xfce from logind's Desktop (XDG_SESSION_DESKTOP), else None."""
    name = desktop.lower()
    if any(word in name for word in ("gnome", "ubuntu", "unity", "pop", "budgie", "zorin")):
        return "gnome"
    if "kde" in name or "plasma" in name:
        return "kde"
    if "xfce" in name:
        return "xfce"
    return None


# -- GNOME ---------------------------------------------------------------------------------------

def parse_gsettings_value(text: str, key: str) -> Any:
    """GVariant text of a bool or uint32 key: ``true``, ``uint32 300``."""
    value = text.strip()
    if value in ("true", "false"):
        return value == "true"
    match = re.fullmatch(r"(?:u?int32 )?(\d+)", value)
    if match:
        return int(match.group(1))
    raise ParseError(f"gsettings get {key}: expected true/false or 'uint32 N', found {value[:40]!r}")


def gnome_settings(values: Mapping[str, Any]) -> Tuple[bool, int]:
    """(lock enabled, seconds idle before the lock) from the four GNOME keys."""
    lock = values["lock-enabled"]
    idle = values["idle-delay"]
    if not isinstance(lock, bool) or isinstance(idle, bool) or not isinstance(idle, int):
        raise ParseError("gsettings: lock-enabled should be a boolean and idle-delay a number")
    disabled = values.get("disable-lock-screen") is True
    delay = values.get("lock-delay", 0)
    # idle-delay 0 means the screen never blanks, so it never locks by itself.
    enabled = lock and not disabled and idle > 0
    return enabled, (idle + int(delay)) if idle > 0 else 0


def parse_dconf_locks(files: Mapping[str, str]) -> List[str]:
    """Key paths locked by system dconf databases (one path per line in each locks file)."""
    locked = []
    for text in files.values():
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("/"):
                locked.append(line)
    return sorted(set(locked))


# -- KDE -----------------------------------------------------------------------------------------

def parse_kscreenlockerrc(user_text: str, system_text: str = "") -> Dict[str, Any]:
    """kscreenlockerrc [Daemon]: Autolock (default true), Timeout minutes (default 5), LockOnResume.

    A ``[$i]`` marker on the system file's group or key makes it immutable: the user cannot override it.
    """
    settings: Dict[str, Any] = {"Autolock": True, "Timeout": 5, "LockOnResume": True}
    enforced: set = set()
    for origin, text in (("system", system_text), ("user", user_text)):
        if not text.strip():
            continue
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text)
        except configparser.Error as exc:
            raise ParseError(f"kscreenlockerrc ({origin}): not an INI file: {exc}") from exc
        for section in parser.sections():
            if section.split("][")[0].strip("[]") != "Daemon":
                continue
            group_immutable = "$i" in section
            for raw_key, raw_value in parser.items(section):
                key = raw_key.replace("[$i]", "")
                if origin == "user" and key in enforced:
                    continue
                if key in ("Autolock", "LockOnResume"):
                    settings[key] = raw_value.strip().lower() == "true"
                elif key == "Timeout":
                    if not raw_value.strip().isdigit():
                        raise ParseError(f"kscreenlockerrc: Timeout should be minutes, found {raw_value!r}")
                    settings[key] = int(raw_value.strip())
                if origin == "system" and (group_immutable or "[$i]" in raw_key):
                    enforced.add(key)
    settings["enforced"] = {"Autolock", "Timeout"} <= enforced
    return settings


# -- XFCE ----------------------------------------------------------------------------------------

def parse_xfconf_channel(text: str) -> Dict[str, str]:
    """An xfconf channel XML file -> {"/saver/enabled": "true", ...} (nested property names joined)."""
    try:
        # The file belongs to the session user; expat (>= 2.4.1) caps entity expansion.
        root = ElementTree.fromstring(text)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise ParseError(f"xfconf channel: not XML: {exc}") from exc
    if root.tag != "channel":
        raise ParseError(f"xfconf channel: expected a <channel> root, found <{root.tag}>")
    values: Dict[str, str] = {}

    def walk(element: ElementTree.Element, prefix: str) -> None:
        for prop in element.findall("property"):
            path = f"{prefix}/{prop.get('name', '')}"
            if prop.get("value") is not None:
                values[path] = str(prop.get("value"))
            walk(prop, path)

    walk(root, "")
    return values


def xfce_settings(values: Mapping[str, str]) -> Tuple[bool, int]:
    """xfce4-screensaver: saver after idle-activation/delay minutes, lock saver-activation/delay later."""
    def flag(key: str, default: bool) -> bool:
        return values.get(key, str(default)).lower() == "true"

    def minutes(key: str, default: int) -> int:
        raw = values.get(key, str(default))
        if not raw.isdigit():
            raise ParseError(f"xfce4-screensaver {key}: expected minutes, found {raw!r}")
        return int(raw)

    saver = flag("/saver/enabled", True) and flag("/saver/idle-activation/enabled", True)
    lock = flag("/lock/enabled", True)
    idle = minutes("/saver/idle-activation/delay", 5) * 60 + minutes("/lock/saver-activation/delay", 0) * 60
    return saver and lock, idle if saver else 0


def parse_passwd_home(text: str) -> str:
    """``getent passwd USER``: the home directory is the sixth field."""
    fields = text.strip().split(":")
    if len(fields) < 7 or not fields[5].startswith("/"):
        raise ParseError(f"getent passwd: expected name:x:uid:gid:gecos:home:shell, found {text[:60]!r}")
    return fields[5]


# -- collector -----------------------------------------------------------------------------------

def _display_processes(host: Host) -> Tuple[Optional[List[str]], Optional[Message]]:
    probe = host.processes()
    if probe.error is not None:
        return None, probe.failure_message()
    rows = process_rows(probe.stdout)
    return sorted({str(r.get("name")) for r in rows if r.get("name") in DISPLAY_SERVERS}), None


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    listing = host.run(["loginctl", "list-sessions", "--no-legend"], timeout=10)
    if listing.error not in (None, NOT_FOUND):
        return CheckOutcome.probe_failed(CHECK, listing)
    if not listing.ok:
        # No logind to ask: are there display servers at all?
        servers, failure = _display_processes(host)
        if servers is None:
            return CheckOutcome.error(CHECK, message("failure_and", first=listing.failure_message(), second=failure))
        if servers:
            return CheckOutcome.error(CHECK, message("screen_lock_sessions_unlisted", servers=servers,
                                                     failure=listing.failure_message()))
        return CheckOutcome.not_applicable(CHECK, message("screen_lock_no_session_no_logind"),
                                           [listing.describe_failure(), "process list: no display server process"])

    evidence: List[str] = []
    graphical: List[Tuple[str, int, str, Dict[str, str]]] = []
    for session_id, uid, user in parse_session_list(listing.stdout):
        argv = ["loginctl", "show-session", session_id]
        for prop in SHOW_PROPERTIES:
            argv += ["-p", prop]
        shown = host.run(argv, timeout=10)
        if not shown.ok:
            return CheckOutcome.probe_failed(CHECK, shown)
        props = parse_properties(shown.stdout, "loginctl show-session")
        evidence.append(f"session {session_id} ({user}): Type={props.get('Type')} Class={props.get('Class', '')} "
                        f"Desktop={props.get('Desktop', '')} State={props.get('State', '')}")
        if (props.get("Type") in GRAPHICAL_TYPES and props.get("Class", "user") == "user"
                and props.get("State") != "closing"):
            graphical.append((session_id, uid, user, props))
    if not graphical:
        return CheckOutcome.not_applicable(CHECK, message("screen_lock_no_graphical_session"), evidence)

    whoami = host.run(["id", "-u"], timeout=5)
    if not whoami.ok or not whoami.stdout.strip().isdigit():
        return CheckOutcome.error(CHECK, whoami.failure_message() if not whoami.ok
                                  else message("probe_output_not_number", probe="id -u",
                                               found=repr(whoami.stdout[:20])))
    agent_uid = int(whoami.stdout.strip())

    sessions: List[Dict[str, Any]] = []
    enforced: List[bool] = []
    for session_id, uid, user, props in graphical:
        family = desktop_family(props.get("Desktop", ""))
        entry: Dict[str, Any] = {"session": session_id, "user": user, "type": props.get("Type"),
                                 "desktop": props.get("Desktop") or None, "lock_enabled": None,
                                 "idle_delay_seconds": None, "source": None}
        if family == "gnome":
            outcome = _gnome(host, uid, user, agent_uid, entry, enforced)
        elif family in ("kde", "xfce"):
            outcome = _home_file(host, user, family, entry, enforced)
        else:
            outcome = None
            evidence.append(f"session {session_id}: desktop {props.get('Desktop')!r} is not one whose lock "
                            "settings this agent reads (GNOME, KDE Plasma, XFCE)")
        if outcome is not None:
            return outcome
        evidence.append(f"session {session_id} ({user}, {entry['desktop']}): lock_enabled={entry['lock_enabled']} "
                        f"idle_delay_seconds={entry['idle_delay_seconds']} from {entry['source']}")
        sessions.append(entry)

    locks = [s["lock_enabled"] for s in sessions]
    lock_enabled: Optional[bool] = False if False in locks else (None if None in locks else True)
    delays = [s["idle_delay_seconds"] for s in sessions if s["idle_delay_seconds"] is not None]
    idle: Optional[int] = None
    if delays:
        idle = 0 if 0 in delays else max(delays)
    facts = {
        "sessions": sessions,
        "lock_enabled": lock_enabled,
        "idle_delay_seconds": idle,
        "enforced_by_policy": bool(enforced) and all(enforced) and len(enforced) == len(sessions),
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)


def _gnome(host: Host, uid: int, user: str, agent_uid: int, entry: Dict[str, Any],
           enforced: List[bool]) -> Optional[CheckOutcome]:
    if agent_uid == 0:
        prefix = ["runuser", "-u", user, "--", "env", f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus",
                  f"XDG_RUNTIME_DIR=/run/user/{uid}", "gsettings"]
    elif agent_uid == uid:
        prefix = ["gsettings"]
    else:
        return CheckOutcome.error(CHECK, message("screen_lock_other_user", user=user, uid=agent_uid))
    values: Dict[str, Any] = {}
    for schema, key in GNOME_KEYS:
        probe = host.run(prefix + ["get", schema, key], timeout=10)
        if not probe.ok:
            if key == "disable-lock-screen" and "No such schema" in probe.stderr:
                continue  # older GNOME without the lockdown schema
            return CheckOutcome.probe_failed(CHECK, probe)
        values[key] = parse_gsettings_value(probe.stdout, key)
    entry["lock_enabled"], entry["idle_delay_seconds"] = gnome_settings(values)
    entry["source"] = "gsettings (dconf of the session user)"
    enforced.append(set(GNOME_LOCK_PATHS) <= set(_dconf_locks(host)))
    return None


def _dconf_locks(host: Host) -> List[str]:
    listing = host.listdir("/etc/dconf/db")
    if not listing.ok:
        return []
    files: Dict[str, str] = {}
    for database in (n for n in listing.stdout.splitlines() if n.endswith(".d")):
        locks_dir = f"/etc/dconf/db/{database}/locks"
        names = host.listdir(locks_dir)
        if not names.ok:
            continue
        for name in names.stdout.splitlines():
            content = host.read_text(f"{locks_dir}/{name}")
            if content.ok:
                files[f"{locks_dir}/{name}"] = content.stdout
    return parse_dconf_locks(files)


def _home_file(host: Host, user: str, family: str, entry: Dict[str, Any],
               enforced: List[bool]) -> Optional[CheckOutcome]:
    passwd = host.run(["getent", "passwd", user], timeout=5)
    if not passwd.ok:
        return CheckOutcome.probe_failed(CHECK, passwd)
    home = parse_passwd_home(passwd.stdout)
    if family == "kde":
        path = f"{home}/.config/kscreenlockerrc"
        texts: List[str] = []
        for candidate in (path, "/etc/xdg/kscreenlockerrc"):
            probe = host.read_text(candidate)
            if probe.error not in (None, NOT_FOUND):
                return CheckOutcome.probe_failed(CHECK, probe)
            texts.append(probe.stdout if probe.ok else "")
        kde = parse_kscreenlockerrc(texts[0], texts[1])
        entry["lock_enabled"] = bool(kde["Autolock"]) and kde["Timeout"] > 0
        entry["idle_delay_seconds"] = kde["Timeout"] * 60 if kde["Autolock"] else 0
        entry["source"] = path
        enforced.append(bool(kde["enforced"]))
        return None
    path = f"{home}/{XFCE_CHANNEL}"
    probe = host.read_text(path)
    if probe.error not in (None, NOT_FOUND):
        return CheckOutcome.probe_failed(CHECK, probe)
    if probe.ok:
        entry["lock_enabled"], entry["idle_delay_seconds"] = xfce_settings(parse_xfconf_channel(probe.stdout))
    # Absent: the locker in use (xfce4-screensaver defaults, light-locker...) is unknown; no guess.
    entry["source"] = path if probe.ok else f"{path} (absent: locker settings unknown)"
    enforced.append(False)
    return None

