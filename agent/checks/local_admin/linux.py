"""Local administrator on Linux: the console user, its groups, and the sudoers rules that apply to it.

Membership of ``sudo``/``wheel``/``admin`` alone proves nothing: it is the sudoers rule naming the
group that grants the rights (a ``wheel`` member on Debian, where no rule names wheel, is not an
administrator). So the rules are read — /etc/sudoers and what it includes — and a rule counts when its
command list is ``ALL``. sudoers is readable by root only; when the agent cannot read it, the admin
groups of the distributions stand in for it and the evidence says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from agent.checks._host_json import process_rows
from agent.checks.base import CheckOutcome, ParseError
from agent.checks.messages import message
from agent.checks.screen_lock.linux import (
    DISPLAY_SERVERS,
    GRAPHICAL_TYPES,
    parse_properties,
    parse_session_list,
)
from agent.probes import NOT_FOUND, PERMISSION_DENIED, Host

CHECK = "local_admin"
SUDOERS = "/etc/sudoers"
# Groups the distributions' default sudoers or polkit rules make administrators.
ADMIN_GROUPS = ("sudo", "wheel", "admin")
_SYSTEM_USERS = {"root", "gdm", "lightdm", "sddm", "Debian-gdm", "gnome-initial-setup"}
_TAGS = re.compile(r"\b[A-Z_]+:\s*")
_RUNAS = re.compile(r"\([^)]*\)")
_DIRECTIVE = re.compile(r"^[#@](include|includedir)\s+(\S+)")


@dataclass(frozen=True)
class SudoRule:
    who: Tuple[str, ...]
    all_commands: bool
    line: str


def _logical_lines(text: str) -> List[str]:
    lines: List[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append((pending + raw).strip())
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def _strip_comment(line: str) -> str:
    # '#' starts a comment except in #include/#includedir and in '#1000' (a uid).
    match = re.search(r"(^|\s)#(?!\d)", line)
    return line[:match.start()].strip() if match else line


def parse_sudoers(text: str) -> Tuple[List[SudoRule], Dict[str, List[str]], List[str]]:
    """sudoers(5) text -> (user specifications, User_Alias definitions, include directives)."""
    rules: List[SudoRule] = []
    aliases: Dict[str, List[str]] = {}
    includes: List[str] = []
    for line in _logical_lines(text):
        directive = _DIRECTIVE.match(line)
        if directive:
            includes.append(("dir:" if directive.group(1) == "includedir" else "file:") + directive.group(2))
            continue
        line = _strip_comment(line)
        if not line or line.startswith("Defaults"):
            continue
        keyword = line.split(None, 1)[0]
        if keyword == "User_Alias":
            for definition in line[len(keyword):].split(":"):
                name, sep, members = definition.partition("=")
                if sep:
                    aliases[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
            continue
        if keyword in ("Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias"):
            continue
        who, sep, rest = line.partition("=")
        if not sep:
            continue
        # "alice,%wheel ALL" before '=': users then the host list.
        head = who.rsplit(None, 1)
        if len(head) != 2:
            raise ParseError(f"sudoers: expected 'user host = (runas) commands', found {line[:80]!r}")
        users = tuple(u.strip() for u in head[0].split(",") if u.strip())
        # "(ALL:ALL) NOPASSWD: ALL": drop Runas lists and tags; then ':' separates further "host = commands".
        body = _TAGS.sub("", _RUNAS.sub("", rest))
        all_commands = any(command.strip() == "ALL" for spec in body.split(":")
                           for command in spec.split("=", 1)[-1].split(","))
        rules.append(SudoRule(who=users, all_commands=all_commands, line=line))
    return rules, aliases, includes


def _matches(item: str, user: str, groups: Set[str], aliases: Mapping[str, List[str]], depth: int = 0) -> bool:
    item = item.strip()
    if item.startswith("!") or depth > 8:
        return False
    if item == "ALL" or item == user:
        return True
    if item.startswith("%:"):
        return item[2:] in groups
    if item.startswith("%"):
        return item[1:].strip('"') in groups
    if item in aliases:
        return any(_matches(member, user, groups, aliases, depth + 1) for member in aliases[item])
    return False


def judge(user: str, groups: Sequence[str], rules: Sequence[SudoRule], aliases: Mapping[str, List[str]]
          ) -> Tuple[bool, List[str], List[str]]:
    """(is_admin, admin_via, limited rules) for ``user``."""
    group_set = set(groups)
    via: List[str] = []
    limited: List[str] = []
    for rule in rules:
        if any(_matches(item, user, group_set, aliases) for item in rule.who):
            (via if rule.all_commands else limited).append(f"sudoers: {rule.line}")
    if user == "root":
        via.insert(0, "the console user is root")
    return bool(via), via, limited


def parse_id_groups(text: str) -> List[str]:
    """``id -Gn USER``: group names separated by spaces."""
    names = text.split()
    if not names:
        raise ParseError(f"id -Gn: expected group names, found {text[:60]!r}")
    return names


def _console_user(host: Host, evidence: List[str]) -> Tuple[Optional[str], Optional[CheckOutcome]]:
    listing = host.run(["loginctl", "list-sessions", "--no-legend"], timeout=10)
    if listing.ok:
        for session_id, _uid, user in parse_session_list(listing.stdout):
            argv = ["loginctl", "show-session", session_id, "-p", "Type", "-p", "Class", "-p", "State",
                    "-p", "Remote"]
            shown = host.run(argv, timeout=10)
            if not shown.ok:
                return None, CheckOutcome.probe_failed(CHECK, shown)
            props = parse_properties(shown.stdout, "loginctl show-session")
            if (props.get("Type") in GRAPHICAL_TYPES and props.get("Class", "user") == "user"
                    and props.get("Remote") != "yes" and props.get("State") in ("active", "online")):
                evidence.append(f"loginctl: session {session_id} of {user} ({props.get('Type')}, "
                                f"{props.get('State')})")
                return user, None
        evidence.append("loginctl: no local graphical session")
        return None, None
    if listing.error not in (None, NOT_FOUND):
        return None, CheckOutcome.probe_failed(CHECK, listing)
    # No logind: the owner of a desktop process (gnome-shell, kwin, Xwayland ...) is the console user.
    procs = host.processes()
    if procs.error is not None:
        return None, CheckOutcome.error(CHECK, message("failure_and", first=listing.failure_message(),
                                                       second=procs.failure_message()))
    owners = sorted({str(r.get("username")) for r in process_rows(procs.stdout)
                     if r.get("name") in DISPLAY_SERVERS and r.get("username") not in _SYSTEM_USERS
                     and r.get("username")})
    evidence.append(f"{listing.describe_failure()}; desktop processes owned by: {', '.join(owners) or 'nobody'}")
    return (owners[0] if owners else None), None


def _read_sudoers(host: Host, evidence: List[str]) -> Optional[Tuple[List[SudoRule], Dict[str, List[str]]]]:
    """Every rule of /etc/sudoers and its includes; None when sudoers cannot be read (not root)."""
    rules: List[SudoRule] = []
    aliases: Dict[str, List[str]] = {}
    pending = [SUDOERS]
    seen: Set[str] = set()
    while pending and len(seen) < 64:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        read = host.read_text(path)
        if read.error == PERMISSION_DENIED:
            evidence.append(f"{path}: not readable (the agent is not root)")
            return None
        if read.error == NOT_FOUND:
            evidence.append(f"{path}: absent")
            continue
        if read.error is not None:
            evidence.append(read.describe_failure())
            return None
        found, defined, includes = parse_sudoers(read.stdout)
        rules.extend(found)
        aliases.update(defined)
        for include in includes:
            kind, target = include.split(":", 1)
            if kind == "file":
                pending.append(target)
                continue
            listing = host.listdir(target)
            if listing.error == NOT_FOUND:
                continue
            if listing.error is not None:
                evidence.append(listing.describe_failure())
                return None
            # sudoers(5): files in an includedir whose names end in '~' or contain '.' are skipped.
            pending.extend(f"{target.rstrip('/')}/{name}" for name in listing.stdout.splitlines()
                           if name and not name.endswith("~") and "." not in name)
    evidence.append(f"sudoers: {len(rules)} user rule(s) read from {', '.join(sorted(seen))}")
    return rules, aliases


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    evidence: List[str] = []
    user, failed = _console_user(host, evidence)
    if failed is not None:
        return failed
    if user is None:
        return CheckOutcome.not_applicable(CHECK, message("local_admin_no_console_user"), evidence)
    ident = host.run(["id", "-Gn", user], timeout=5)
    if not ident.ok:
        return CheckOutcome.probe_failed(CHECK, ident)
    groups = parse_id_groups(ident.stdout)
    evidence.append(f"id -Gn {user}: {' '.join(groups)}")
    sudoers = _read_sudoers(host, evidence)
    is_admin: Optional[bool]
    if sudoers is None:
        admin_groups = [g for g in groups if g in ADMIN_GROUPS]
        via = [f"group {g} (sudoers not readable; the distributions' default rules make it administrator)"
               for g in admin_groups]
        limited: List[str] = []
        is_admin = True if via else None  # not in an admin group, but a rule naming the user cannot be excluded
    else:
        is_admin, via, limited = judge(user, groups, *sudoers)
    evidence.extend(via or [f"{user}: no sudo rule grants every command"])
    return CheckOutcome(CHECK, facts={"console_user": user, "is_admin": is_admin, "admin_via": via,
                                      "groups": groups, "limited_rules": limited}, evidence=evidence)
