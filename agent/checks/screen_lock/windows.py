"""Screen lock on Windows: the console user's screen saver settings and the machine inactivity limit.

The agent service runs as LocalSystem, whose HKCU is not the employee's: the pipeline finds the console
user (Win32_ComputerSystem.UserName), turns it into a SID and reads HKEY_USERS\\<SID>. Group policy values
(HKU\\<SID>\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop) override the user's own.
The machine-wide "Interactive logon: Machine inactivity limit" (InactivityTimeoutSecs) locks the session
whatever the screen saver says.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks._windows_ps import as_dict_list, parse_ps_json, ps_failure_message, ps_int, ps_str, run_ps
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import Host

CHECK = "screen_lock"

_DESKTOP_VALUES = "Select-Object ScreenSaveActive,ScreenSaverIsSecure,ScreenSaveTimeOut,'SCRNSAVE.EXE'"
SETTINGS_PS = (
    "$u = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName; $sid = $null; $d = $null; $p = $null; "
    "if ($u) { $sid = (New-Object System.Security.Principal.NTAccount($u))"
    ".Translate([System.Security.Principal.SecurityIdentifier]).Value; "
    "$d = Get-ItemProperty -Path ('Registry::HKEY_USERS\\' + $sid + '\\Control Panel\\Desktop') -ErrorAction SilentlyContinue"
    f" | {_DESKTOP_VALUES}; "
    "$p = Get-ItemProperty -Path ('Registry::HKEY_USERS\\' + $sid + '\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop')"
    f" -ErrorAction SilentlyContinue | {_DESKTOP_VALUES} }}; "
    "$m = Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System'"
    " -ErrorAction SilentlyContinue | Select-Object InactivityTimeoutSecs; "
    "[pscustomobject]@{User = $u; Sid = $sid; Desktop = $d; UserPolicy = $p; MachinePolicy = $m}"
)


def _first(value: Any, what: str) -> Dict[str, Any]:
    items = as_dict_list(value, what)
    return items[0] if items else {}


def screensaver_lock(desktop: Mapping[str, Any], policy: Mapping[str, Any]) -> Dict[str, Any]:
    """Effective screen saver settings (policy first): {active, secure, timeout, source}."""
    def pick(name: str) -> Any:
        value = policy.get(name)
        return value if value not in (None, "") else desktop.get(name)

    active = ps_str(pick("ScreenSaveActive"))
    secure = ps_str(pick("ScreenSaverIsSecure"))
    timeout = ps_int(pick("ScreenSaveTimeOut"))
    # Windows treats a missing ScreenSaveActive as on when a screen saver is chosen; "0" is off.
    is_active = active == "1" or (active is None and bool(ps_str(pick("SCRNSAVE.EXE"))))
    enforced = any(policy.get(n) not in (None, "") for n in ("ScreenSaveActive", "ScreenSaverIsSecure", "ScreenSaveTimeOut"))
    return {"active": is_active, "secure": secure == "1", "timeout": timeout,
            "source": "group policy" if enforced else "user setting", "enforced": enforced}


def parse_settings(text: str) -> Optional[Dict[str, Any]]:
    """The console session's lock facts, or None when no one is logged on at the console."""
    data = _first(parse_ps_json(text, "screen lock settings"), "screen lock settings")
    if not data:
        raise ParseError("screen lock settings: expected one object, found nothing")
    user = ps_str(data.get("User"))
    if user is None:
        return None
    saver = screensaver_lock(_first(data.get("Desktop"), "Control Panel\\Desktop"),
                             _first(data.get("UserPolicy"), "policy Control Panel\\Desktop"))
    machine = _first(data.get("MachinePolicy"), "Policies\\System")
    inactivity = ps_int(machine.get("InactivityTimeoutSecs"))
    delays: List[int] = []
    sources: List[str] = []
    if saver["active"] and saver["secure"] and saver["timeout"] and saver["timeout"] > 0:
        delays.append(saver["timeout"])
        sources.append(f"secure screen saver after {saver['timeout']}s ({saver['source']})")
    if inactivity and inactivity > 0:
        delays.append(inactivity)
        sources.append(f"machine inactivity limit {inactivity}s (policy)")
    locks = bool(delays)
    session = {"user": user, "desktop": "windows", "lock_enabled": locks,
               "idle_delay_seconds": min(delays) if delays else 0,
               "source": "; ".join(sources) if sources else
               f"screen saver active={saver['active']} secure={saver['secure']} timeout={saver['timeout']}"}
    return {
        "sessions": [session],
        "lock_enabled": locks,
        "idle_delay_seconds": session["idle_delay_seconds"],
        "enforced_by_policy": saver["enforced"] or bool(inactivity and inactivity > 0),
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, SETTINGS_PS)
    failure = ps_failure_message(result, "screen saver registry (HKEY_USERS\\<console user SID>)",
                                 message("rights_console_user"))
    if failure:
        return CheckOutcome.error(CHECK, failure)
    facts = parse_settings(result.stdout)
    if facts is None:
        return CheckOutcome.not_applicable(CHECK, message("screen_lock_no_console_user"),
                                           ["Win32_ComputerSystem.UserName is empty"])
    session = facts["sessions"][0]
    return CheckOutcome(CHECK, facts=facts, evidence=[f"{session['user']}: {session['source']}"])
