"""zypper (openSUSE, SLES): pending updates and security patches from zypper's XML output.

* ``zypper --non-interactive --no-refresh --xmlout list-updates``: ``<update kind="package" name=...>``
  in ``<update-list>``;
* ``zypper --non-interactive --no-refresh --xmlout list-patches --category security``: needed security
  patches (``<update kind="patch" category="security" status="needed">``), counted as patches and named
  by patch id (a patch is what SUSE tracks as "a security update");
* ``/var/log/zypp/history`` (root only): the last ``zypper up|update|patch|dup`` (that subcommand, without
  package names) or YaST online update that installed packages.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # noqa: S405 - parses zypper's own local output, not network input
from typing import List, Optional, Tuple

from agent.checks.base import ParseError
from agent.checks.patches.pkgcommon import (
    Findings,
    age_days,
    file_exists,
    find_files,
    naive_to_epoch,
    offset_from_mtime,
    parse_systemctl_is_enabled,
    positional_words,
    require,
    rfc3339,
    stat_mtime,
    truthy,
)
from agent.probes import Host

ZYPPER = ["zypper", "--non-interactive", "--no-refresh", "--xmlout"]
ZYPP_INPUTS = ("/var/cache/zypp/solv", "/var/lib/rpm", "/usr/lib/sysimage/rpm/rpmdb.sqlite", "/etc/zypp/repos.d")
# zypper exit codes that still carry a valid answer: 100 updates needed, 101 security updates needed,
# 102 reboot needed, 103 zypper itself must be updated first.
OK_CODES = (0, 100, 101, 102, 103)
HISTORY = "/var/log/zypp/history"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _updates(text: str, what: str) -> List[ET.Element]:
    start = text.find("<?xml")
    if start < 0:
        start = text.find("<stream")
    if start < 0:
        raise ParseError(f"{what}: expected zypper XML (<stream>), found {text.strip()[:60]!r}")
    try:
        root = ET.fromstring(text[start:])  # noqa: S314 - local zypper output
    except ET.ParseError as exc:
        raise ParseError(f"{what}: malformed XML ({exc})") from exc
    status = root.find("update-status")
    if status is None:
        messages = " ".join((m.text or "").strip() for m in root.iter("message"))[:200]
        raise ParseError(f"{what}: no <update-status> in zypper's answer{': ' + messages if messages else ''}")
    update_list = status.find("update-list")
    return list(update_list.findall("update")) if update_list is not None else []


def parse_list_updates(text: str) -> List[str]:
    """``list-updates`` XML -> names of packages with an update."""
    return sorted({u.get("name", "") for u in _updates(text, "zypper list-updates")
                   if u.get("kind", "package") == "package" and u.get("name")})


def parse_security_patches(text: str) -> List[Tuple[str, str]]:
    """``list-patches --category security`` XML -> (patch id, severity) of needed security patches."""
    patches = []
    for update in _updates(text, "zypper list-patches"):
        if update.get("kind") != "patch" or update.get("category") != "security":
            continue
        if update.get("status", "needed") not in ("needed",):
            continue
        patches.append((update.get("name", "?"), update.get("severity", "")))
    return sorted(set(patches))


_UPDATE_ACTIONS = {"up", "update", "patch", "dup", "dist-upgrade", "online_update"}


# zypper global options that take the next word as their value
_ZYPPER_OPTIONS_WITH_VALUE = ("-c", "--config", "-R", "--root", "--installroot", "-D", "--reposd-dir",
                              "-C", "--cache-dir", "--raw-cache-dir", "--solv-cache-dir", "--pkg-cache-dir",
                              "-p", "--plus-repo", "-r", "--repo", "--from", "-t", "--type", "-g", "--category",
                              "--severity", "--date", "-b", "--bugzilla", "--cve", "--issues")


def is_zypper_update(command: str) -> bool:
    """A ``command`` record of the zypp history that was a system update: zypper's subcommand is up/update/
    patch/dup (``'zypper' 'in' 'patch'`` installs a package named patch), or YaST's online update."""
    words = [w.strip("'") for w in command.split()]
    if not words:
        return False
    program = words[0].rsplit("/", 1)[-1]
    if program == "zypper":
        positional = positional_words(words[1:], _ZYPPER_OPTIONS_WITH_VALUE)
        # "zypper up foo" updates named packages only
        return len(positional) == 1 and positional[0] in _UPDATE_ACTIONS
    # YaST: '/usr/lib/YaST2/bin/y2start' 'online_update' 'qt' ...
    return "online_update" in words[1:3]


def parse_history(text: str) -> Tuple[Optional[str], Optional[str]]:
    """``/var/log/zypp/history`` -> (time of the last package installed by an update command, time of
    the file's last record), as written (local time).

    Records are ``TIME|command|user@host|'zypper' '-n' 'dup'|`` followed by ``TIME|install|name|...``;
    lines starting with ``#`` are rpm's script output."""
    in_update = False
    last_update = None
    last_line = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) < 3 or not re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", fields[0]):
            continue
        last_line = fields[0]
        action = fields[1].strip()
        if action == "command":
            in_update = is_zypper_update(fields[3] if len(fields) > 3 else "")
        elif action == "install" and in_update:
            last_update = fields[0]
    return last_update, last_line


def collect_zypper(host: Host, now: float) -> Findings:
    findings = Findings()
    repomds = find_files(host, "/var/cache/zypp/raw", "repomd.xml", depth=3)
    stamps = [s for s in (stat_mtime(host, p) for p in repomds) if s is not None]
    refreshed = max(stamps) if stamps else None

    updates = require(host.run([*ZYPPER, "list-updates"], timeout=120.0, cache_on=list(ZYPP_INPUTS)), OK_CODES)
    pending = parse_list_updates(updates.stdout)
    patches_probe = require(host.run([*ZYPPER, "list-patches", "--category", "security"], timeout=120.0,
                                     cache_on=list(ZYPP_INPUTS)), OK_CODES)
    patches = parse_security_patches(patches_probe.stdout)
    findings.facts.update({
        "package_manager": "zypper",
        "pending_updates": len(pending),
        "pending_security_updates": len(patches),
        "pending_security_packages": [name for name, _ in patches],
        "phased_updates_deferred": 0,
        "package_lists_age_days": age_days(now, refreshed),
    })
    findings.evidence.append(f"zypper: {len(pending)} package updates, {len(patches)} needed security patches")

    history = host.read_text(HISTORY)
    last: Optional[float] = None
    if history.error is None:
        stamp, last_line = parse_history(history.stdout)
        offset = None
        if last_line:
            try:
                offset = offset_from_mtime(naive_to_epoch(last_line, TIME_FORMAT), stat_mtime(host, HISTORY))
            except ValueError:
                offset = None
        if stamp:
            last = naive_to_epoch(stamp, TIME_FORMAT, offset or 0.0)
    else:
        findings.evidence.append(f"last update unknown: {history.describe_failure()}")
    findings.facts["last_update_at"] = rfc3339(last) if last is not None else None
    findings.facts["days_since_last_update"] = age_days(now, last)
    findings.facts["reboot_required"] = file_exists(host, "/run/reboot-needed")

    aou = host.read_text("/etc/sysconfig/automatic_online_update")
    automatic = False
    if aou.error is None:
        for line in aou.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "AOU_ENABLE_CRONJOB" and truthy(value):
                automatic = True
    if not automatic and host.which("systemctl"):
        automatic = bool(parse_systemctl_is_enabled(
            host.run(["systemctl", "is-enabled", "transactional-update.timer"], timeout=10.0)))
    findings.facts["automatic_updates"] = automatic
    return findings
