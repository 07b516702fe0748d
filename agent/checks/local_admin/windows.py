"""Local administrator on Windows: the signed-in user against the local Administrators group.

The group is named by its well-known SID S-1-5-32-544 (its name is localised: Administrateurs,
Administradores ...). A direct member is an administrator. A user who is one through a domain group
nested in Administrators shows only in the user's token: the script looks the user's UPN up in the
directory and asks Windows for that user's token (S4U logon, which takes a UPN; it works for domain
accounts while a domain controller answers), then looks for S-1-5-32-544 among the token's groups.
When neither tells, the answer is unknown, not "no".
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.checks._windows_ps import (
    as_dict_list,
    parse_ps_object,
    ps_failure_message,
    ps_str,
    run_ps,
)
from agent.checks.base import CheckOutcome
from agent.checks.messages import message
from agent.probes import Host

CHECK = "local_admin"
ADMINISTRATORS_SID = "S-1-5-32-544"
ADMIN_PS = (
    "$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName; "
    "$members = @(Get-LocalGroupMember -SID S-1-5-32-544 | "
    "Select-Object Name,@{n='SID';e={[string]$_.SID}},@{n='ObjectClass';e={[string]$_.ObjectClass}},"
    "@{n='PrincipalSource';e={[string]$_.PrincipalSource}}); "
    "$tokenGroups = $null; $tokenError = $null; "
    "if ($user) { try { $sam = ($user -split '\\\\')[-1]; "
    "$upn = ([adsisearcher]\"(sAMAccountName=$sam)\").FindOne().Properties['userprincipalname'] | Select-Object -First 1; "
    "$id = New-Object System.Security.Principal.WindowsIdentity($(if ($upn) { $upn } else { $sam })); "
    "$tokenGroups = @($id.Groups | ForEach-Object { $_.Value }) } catch { $tokenError = $_.Exception.Message } }; "
    "[pscustomobject]@{User = $user; Members = $members; TokenGroups = $tokenGroups; TokenError = $tokenError}"
)


def parse_admin(text: str) -> Dict[str, Any]:
    data = parse_ps_object(text, "Get-LocalGroupMember -SID S-1-5-32-544", ("User", "Members", "TokenGroups"),
                           required=("Members",))
    members = as_dict_list(data.get("Members"), "Get-LocalGroupMember")
    token = data.get("TokenGroups")
    return {"user": ps_str(data.get("User")), "members": members,
            "token_groups": None if token is None else [str(t) for t in (token if isinstance(token, list) else [token])],
            "token_error": ps_str(data.get("TokenError"))}


def judge(user: str, members: List[Dict[str, Any]], token_groups: Optional[List[str]]) -> Dict[str, Any]:
    lowered = user.lower()
    short = lowered.split("\\")[-1]
    direct = [m for m in members if str(m.get("ObjectClass", "")).lower() == "user"
              and str(m.get("Name", "")).lower() in (lowered, short)]
    groups = [str(m.get("Name")) for m in members if str(m.get("ObjectClass", "")).lower() == "group"]
    via: List[str] = [f"Administrators: {m['Name']} (direct member)" for m in direct]
    is_admin: Optional[bool] = bool(direct)
    if not direct:
        if token_groups is not None:
            if ADMINISTRATORS_SID in token_groups:
                via.append(f"Administrators via a nested group ({', '.join(groups) or 'from the token'})")
                is_admin = True
        elif groups:
            is_admin = None  # groups in Administrators whose members Windows could not expand for this user
    return {"is_admin": is_admin, "admin_via": via, "groups": groups}


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    result = run_ps(host, ADMIN_PS)
    failure = ps_failure_message(result, "Get-LocalGroupMember")
    if failure:
        return CheckOutcome.error(CHECK, failure)
    data = parse_admin(result.stdout)
    user = data["user"]
    if not user:
        return CheckOutcome.not_applicable(CHECK, message("local_admin_no_console_user"),
                                           ["Win32_ComputerSystem.UserName is empty: nobody is signed in"])
    judged = judge(user, data["members"], data["token_groups"])
    evidence = [f"signed-in user: {user}",
                "Administrators (S-1-5-32-544): " + ", ".join(str(m.get("Name")) for m in data["members"])]
    if data["token_error"]:
        evidence.append(f"user token not available: {data['token_error']}")
    return CheckOutcome(CHECK, facts={"console_user": user, "is_admin": judged["is_admin"],
                                      "admin_via": judged["admin_via"], "groups": judged["groups"],
                                      "limited_rules": []}, evidence=evidence)
