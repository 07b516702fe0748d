"""Updates on Windows: Windows Update history and pending updates (COM API), hotfixes, reboot flags, policy.

The Windows Update search asks Microsoft's servers and can take minutes: it has a long timeout and is
cached on the Windows Update data store's modification time. History entries for Defender security
intelligence (KB2267602, daily) are not counted as system updates. An update is a security update when
it has an MSRC severity or is in the "Security Updates" category (category ids are not localised).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from agent.checks._host_json import days_between, iso_utc
from agent.checks._windows_ps import (
    as_dict_list,
    parse_ps_json,
    ps_bool,
    ps_date,
    ps_failure,
    ps_failure_message,
    ps_int,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import english, message
from agent.checks.os_identity.windows import SOFTWARE_HIVE, VERSION_PS, parse_version
from agent.probes import Host

CHECK = "patches"

HISTORY_PS = ("$s = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher(); "
              "$n = $s.GetTotalHistoryCount(); if ($n -gt 0) { $s.QueryHistory(0, [Math]::Min($n, 100)) | "
              "Select-Object Date,Title,ResultCode,Operation }")
PENDING_PS = ("$r = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher()"
              ".Search('IsInstalled=0 and Type=''Software'' and IsHidden=0'); "
              "@($r.Updates | ForEach-Object { [pscustomobject]@{Title = $_.Title; MsrcSeverity = $_.MsrcSeverity; "
              "KB = ($_.KBArticleIDs -join ','); RebootRequired = $_.RebootRequired; "
              "Categories = @($_.Categories | ForEach-Object { $_.CategoryID })} })")
HOTFIX_PS = "Get-HotFix | Select-Object HotFixID,Description,InstalledOn"
STATE_PS = (
    "$au = Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU' "
    "-ErrorAction SilentlyContinue; "
    "[pscustomobject]@{"
    "CbsRebootPending = Test-Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending'; "
    "WuRebootRequired = Test-Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired'; "
    "PendingFileRenameOperations = [bool](Get-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager' "
    "-Name PendingFileRenameOperations -ErrorAction SilentlyContinue); "
    "NoAutoUpdate = $au.NoAutoUpdate; AUOptions = $au.AUOptions; "
    "WuauservStartType = [string](Get-Service -Name wuauserv -ErrorAction SilentlyContinue).StartType}"
)
SEARCH_TIMEOUT = 300.0
DATASTORE = "C:\\Windows\\SoftwareDistribution\\DataStore\\DataStore.edb"

SECURITY_CATEGORY = "0fa1201d-4330-4fa8-8ae9-b877473b6441"  # "Security Updates"
DEFINITION_CATEGORY = "e0789628-ce08-4437-be74-2495b842f43b"  # "Definition Updates"
# Daily signature packages, not system updates.
SIGNATURE_KBS = ("KB2267602", "KB2461484", "KB915597")
# Monthly or frequent packages that are not Windows updates either: the Malicious Software Removal Tool,
# the Defender antimalware platform and the Windows Security app platform.
NOT_SYSTEM_KBS = SIGNATURE_KBS + ("KB890830", "KB4052623", "KB5007651")
_KB = re.compile(r"\bKB\d{6,8}\b", re.IGNORECASE)
SUCCEEDED = 2  # OperationResultCode orcSucceeded
SUCCEEDED_WITH_ERRORS = 3
INSTALL = 1  # UpdateOperation uoInstallation


def parse_history(text: str) -> Optional[float]:
    """Epoch of the newest successful installation of a Windows update in the Windows Update history.

    A Windows update (cumulative, security, servicing stack, .NET) names its KB article in its title, in
    every display language; drivers ("Intel - Display - 31.0.101.4502"), Store apps, signatures, the
    removal tool and Defender's platform are not system updates, however recent."""
    newest: Optional[float] = None
    for row in as_dict_list(parse_ps_json(text, "Windows Update history"), "Windows Update history"):
        title = ps_str(row.get("Title")) or ""
        kbs = {kb.upper() for kb in _KB.findall(title)}
        if not kbs or kbs <= set(NOT_SYSTEM_KBS):
            continue
        if ps_int(row.get("ResultCode")) not in (SUCCEEDED, SUCCEEDED_WITH_ERRORS):
            continue
        operation = ps_int(row.get("Operation"))
        if operation is not None and operation != INSTALL:
            continue
        when = ps_date(row.get("Date"))
        if when is not None and (newest is None or when > newest):
            newest = when
    return newest


def parse_hotfixes(text: str) -> Optional[float]:
    newest: Optional[float] = None
    for row in as_dict_list(parse_ps_json(text, "Get-HotFix"), "Get-HotFix"):
        when = ps_date(row.get("InstalledOn"))
        if when is not None and (newest is None or when > newest):
            newest = when
    return newest


def parse_pending(text: str) -> Dict[str, Any]:
    """Pending software updates: counts, security ones (by severity or category) and their labels."""
    total = 0
    security: List[str] = []
    for row in as_dict_list(parse_ps_json(text, "Windows Update search"), "Windows Update search"):
        categories = [str(c).lower() for c in (row.get("Categories") or []) if c]
        if DEFINITION_CATEGORY in categories:
            continue  # signatures: the antivirus check looks at their age
        total += 1
        if ps_str(row.get("MsrcSeverity")) or SECURITY_CATEGORY in categories:
            kb = ps_str(row.get("KB"))
            security.append(f"KB{kb}" if kb and not kb.upper().startswith("KB") else (kb or ps_str(row.get("Title")) or "?"))
    return {"pending_updates": total, "pending_security_updates": len(security),
            "pending_security_packages": security}


def parse_state(text: str) -> Dict[str, Any]:
    rows = as_dict_list(parse_ps_json(text, "Windows Update state"), "Windows Update state")
    if not rows:
        raise ParseError("Windows Update state: expected one object, found nothing")
    row = rows[0]
    reboot = any(ps_bool(row.get(k)) for k in ("CbsRebootPending", "WuRebootRequired", "PendingFileRenameOperations"))
    no_auto = ps_int(row.get("NoAutoUpdate"))
    options = ps_int(row.get("AUOptions"))
    start_type = (ps_str(row.get("WuauservStartType")) or "").lower()
    # AUOptions 2 = notify before download: nothing installs by itself. NoAutoUpdate 1 = off.
    automatic = not (no_auto == 1 or options == 2 or start_type == "disabled")
    reasons = []
    if no_auto is not None or options is not None:
        reasons.append(f"policy NoAutoUpdate={no_auto} AUOptions={options}")
    else:
        reasons.append("no update policy (Windows default: automatic)")
    if start_type:
        reasons.append(f"wuauserv start type {start_type}")
    return {"reboot_required": reboot, "automatic_updates": automatic, "_why": ", ".join(reasons),
            "_reboot_flags": [k for k in ("CbsRebootPending", "WuRebootRequired", "PendingFileRenameOperations")
                              if ps_bool(row.get(k))]}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    now = host.now()
    evidence: List[str] = []
    version_result = run_ps(host, VERSION_PS, cache_on=SOFTWARE_HIVE)
    failure = ps_failure_message(version_result, "Get-ItemProperty HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    version = parse_version(version_result.stdout)

    pending_result = run_ps(host, PENDING_PS, timeout=SEARCH_TIMEOUT, cache_on=[DATASTORE])
    failure = ps_failure_message(pending_result, "Windows Update search (Microsoft.Update.Session)")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    pending = parse_pending(pending_result.stdout)

    history_result = run_ps(host, HISTORY_PS)
    hotfix_result = run_ps(host, HOTFIX_PS)
    history_failure = ps_failure_message(history_result, "Windows Update history (QueryHistory)")
    hotfix_failure = ps_failure_message(hotfix_result, "Get-HotFix")
    if history_failure and hotfix_failure:
        return CheckOutcome.error(CHECK, message("several", items=[history_failure, hotfix_failure]))
    candidates = []
    if not history_failure:
        last_wu = parse_history(history_result.stdout)
        candidates.append(last_wu)
        evidence.append(f"Windows Update history: last successful install {iso_utc(last_wu) or 'never'}")
    else:
        evidence.append(english(history_failure))
    if not hotfix_failure:
        last_hotfix = parse_hotfixes(hotfix_result.stdout)
        candidates.append(last_hotfix)
        evidence.append(f"Get-HotFix: newest InstalledOn {iso_utc(last_hotfix) or 'unknown'}")
    else:
        evidence.append(english(hotfix_failure))
    known = [c for c in candidates if c is not None]
    last = max(known) if known else None

    state_result = run_ps(host, STATE_PS)
    state_failure = ps_failure(state_result, "Windows Update registry state")
    state: Dict[str, Any] = {"reboot_required": None, "automatic_updates": None}
    if state_failure:
        evidence.append(state_failure)
    else:
        state = parse_state(state_result.stdout)
        evidence.append(f"automatic updates: {state['_why']}")
        evidence.append("reboot pending: " + (", ".join(state["_reboot_flags"]) or "no"))

    evidence.append(f"pending: {pending['pending_updates']} update(s), {pending['pending_security_updates']} security "
                    f"({', '.join(pending['pending_security_packages']) or 'none'})")
    facts = {
        "package_manager": "windows-update",
        "os_version": version.os_version,
        "os_build_number": version.os_build_number,
        **pending,
        "phased_updates_deferred": None,
        "package_lists_age_days": None,
        "days_since_last_update": days_between(last, now),
        "last_update_at": iso_utc(last),
        "reboot_required": state["reboot_required"],
        "automatic_updates": state["automatic_updates"],
    }
    return CheckOutcome(CHECK, facts=facts, evidence=evidence)
