"""Local administrator on macOS: the console user and its membership of the admin group.

The console user owns /dev/console (root while the login window shows). ``dseditgroup -o checkmember
-m USER admin`` resolves nested groups and directory (AD/LDAP) membership the way opendirectoryd does:
it prints "yes USER is a member of admin" (exit 0) or "no USER is NOT a member of admin" (exit 67).
"""

from __future__ import annotations

from typing import Any, List, Mapping

from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.probes import Host

CHECK = "local_admin"
CONSOLE = ["stat", "-f", "%Su", "/dev/console"]


def parse_checkmember(text: str) -> bool:
    words = text.strip().split()
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    raise ParseError(f"dseditgroup -o checkmember: expected 'yes USER is a member of admin' or 'no USER is NOT a "
                     f"member of admin', found {text.strip()[:80]!r}")


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    console = host.run(CONSOLE, timeout=5)
    if not console.ok:
        return CheckOutcome.probe_failed(CHECK, console)
    user = console.stdout.strip()
    if user in ("", "root", "_mbsetupuser", "loginwindow"):
        return CheckOutcome.not_applicable(CHECK, message("local_admin_no_console_user"),
                                           [f"/dev/console is owned by {user}: the login window is shown"])
    check = host.run(["dseditgroup", "-o", "checkmember", "-m", user, "admin"], timeout=15)
    if check.error is not None or check.rc not in (0, 67):
        return CheckOutcome.probe_failed(CHECK, check)
    is_admin = parse_checkmember(check.stdout)
    groups: List[str] = []
    ident = host.run(["id", "-Gn", user], timeout=5)
    if ident.ok:
        groups = ident.stdout.split()
    evidence = [f"console user: {user}", f"dseditgroup checkmember admin: {check.stdout.strip()}"]
    return CheckOutcome(CHECK, facts={"console_user": user, "is_admin": is_admin,
                                      "admin_via": ["group admin"] if is_admin else [], "groups": groups,
                                      "limited_rules": []}, evidence=evidence)
