"""dnf and yum (Fedora, RHEL and rebuilds): pending and security updates from the cached metadata.

Commands run with ``-C`` (cache only): the agent never downloads metadata itself, exactly as
``apt-get -s`` only reads the lists apt already has; how old that metadata is, is a fact of its own.

* ``dnf -C -q check-update``: exit 100 = updates listed (``name.arch  version  repo``), 0 = none;
* ``dnf -C -q updateinfo list --security``: ``ADVISORY  Severity/Sec.  name-[epoch:]version-release.arch``
  for every advisory that applies to an installed package with a newer version available;
* ``env TZ=UTC dnf history list``: the last transaction that upgraded packages, in UTC;
* ``needs-restarting -r`` (dnf-utils): exit 1 = reboot needed;
* ``systemctl is-enabled dnf-automatic-install.timer`` / ``dnf-automatic.timer`` + ``apply_updates``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set

from agent.checks.base import ParseError
from agent.checks.messages import message
from agent.checks.patches.pkgcommon import (
    Findings,
    age_days,
    find_files,
    naive_to_epoch,
    parse_ini_value,
    parse_systemctl_is_enabled,
    positional_words,
    require,
    rfc3339,
    stat_mtime,
    truthy,
)
from agent.probes import NOT_FOUND, Host

RPM_INPUTS = (
    "/var/lib/rpm",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/etc/yum.repos.d",
    "/etc/dnf/dnf.conf",
)
CACHE_DIRS = {"dnf": "/var/cache/dnf", "yum": "/var/cache/yum"}
TIMEOUT = 120.0

_NOISE = ("Last metadata expiration check", "Security:", "Loaded plugins", "Loading mirror speeds",
          " * ", "Updating Subscription", "This system is")


def _arch_split(name_arch: str) -> str:
    return name_arch.rsplit(".", 1)[0] if "." in name_arch else name_arch


def parse_check_update(text: str) -> List[str]:
    """``dnf/yum check-update`` listing -> ``name.arch`` of each pending update (obsoletes excluded).

    dnf wraps a long ``name.arch`` onto its own line, so the listing is read as a stream of
    (name.arch, version, repo) triples rather than line by line."""
    tokens: List[str] = []
    for line in text.splitlines():
        if line.startswith("Obsoleting Packages"):
            break
        if not line.strip() or line.startswith(_NOISE):
            continue
        tokens.extend(line.split())
    if len(tokens) % 3:
        raise ParseError(f"check-update: expected 'name.arch version repo' rows, found {len(tokens)} words "
                         f"(not a multiple of 3), starting {' '.join(tokens[:6])!r}")
    names = []
    for index in range(0, len(tokens), 3):
        name_arch, version = tokens[index], tokens[index + 1]
        if "." not in name_arch or not re.match(r"^(\d+:)?[\w.+~^]+-[\w.+~^]+$", version):
            raise ParseError(f"check-update: {name_arch!r} {version!r} is not 'name.arch version-release'")
        names.append(name_arch)
    return sorted(set(names))


_ADVISORY = re.compile(r"^(?P<id>\S+)\s+(?:(?P<sev>\S+)/)?Sec\.\s+(?P<nevra>\S+)\s*$")


def nevra_name(nevra: str) -> str:
    """``openssl-libs-1:3.0.7-24.el9.x86_64`` -> ``openssl-libs``."""
    body = nevra.rsplit(".", 1)[0]
    parts = body.rsplit("-", 2)
    if len(parts) != 3 or not parts[0]:
        raise ParseError(f"updateinfo: {nevra!r} is not name-version-release.arch")
    return parts[0]


def parse_updateinfo_security(text: str) -> Dict[str, List[str]]:
    """``updateinfo list --security`` -> package name -> advisory ids."""
    found: Dict[str, List[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(_NOISE) or line.startswith("Updateinfo list done"):
            continue
        words = line.split()
        if words[:1] == ["Name"] and "Severity" in words:
            raise ParseError("updateinfo list --security: this is dnf5's advisory table (Fedora 41 and later), "
                             "which this agent version does not read yet")
        match = _ADVISORY.match(line.strip())
        if not match:
            raise ParseError(f"updateinfo list --security: cannot read {line.strip()[:120]!r}")
        found.setdefault(nevra_name(match.group("nevra")), []).append(match.group("id"))
    return found


_HISTORY_ROW = re.compile(r"^\s*(\d+)\s*\|(.*)\|\s*(\d{4}-\d{2}-\d{2} \d{2}:\d{2})\s*\|(.*)\|(.*)$")


# dnf subcommands (and their aliases) that upgrade the whole system; "upgrade foo" names packages and is not one
_DNF_UPDATE_VERBS = {"upgrade", "update", "up", "distro-sync", "distrosync", "dsync", "distribution-synchronization",
                     "upgrade-minimal", "update-minimal", "up-min"}
_DNF_OPTIONS_WITH_VALUE = ("-c", "--config", "-d", "--debuglevel", "-e", "--errorlevel", "-R", "--randomwait",
                           "-x", "--exclude", "--setopt", "--releasever", "--installroot", "--repo", "--repoid",
                           "--enablerepo", "--disablerepo", "--forcearch", "--advisory", "--advisories", "--cve",
                           "--bz", "--sec-severity", "--secseverity", "--color", "--destdir", "--downloaddir")


def is_dnf_system_update(command_line: str, actions: Set[str]) -> bool:
    """A ``dnf history list`` row that was a system update: ``upgrade``/``update``/``distro-sync`` without
    package names (``--security`` and the like allowed), or a transaction without a command line
    (dnf-automatic, PackageKit) that upgraded packages. ``install foo`` upgrading a dependency is not one."""
    upgraded = bool(actions & {"Upgrade", "U", "Update", "Upgraded"})
    words = command_line.split()
    if not words:
        return upgraded
    positional = positional_words(words, _DNF_OPTIONS_WITH_VALUE)
    # "upgrade foo" upgrades named packages (and the column is cut at its width: a name may be all it shows)
    return upgraded and len(positional) == 1 and positional[0] in _DNF_UPDATE_VERBS


def parse_history_last_upgrade(text: str) -> Optional[str]:
    """``dnf history list`` (newest first) -> date of the newest system update (`is_dnf_system_update`)
    that did not end with an error (``#`` in Altered)."""
    saw_table = False
    for line in text.splitlines():
        match = _HISTORY_ROW.match(line)
        if not match:
            if line.startswith("ID"):
                saw_table = True
            continue
        saw_table = True
        actions = {a.strip() for a in match.group(4).split(",")}
        if is_dnf_system_update(match.group(2).strip(), actions) and "#" not in match.group(5):
            return match.group(3)
    if not saw_table and text.strip() and "No transactions" not in text:
        raise ParseError(f"dnf history list: no transaction table in {text.strip()[:80]!r}")
    return None


def _metadata_refreshed_at(host: Host, manager: str) -> Optional[float]:
    root = CACHE_DIRS.get(manager, "/var/cache/dnf")
    # dnf: <root>/<repo>/repodata/repomd.xml; yum: <root>/<arch>/<releasever>/<repo>/repomd.xml
    files = find_files(host, root, "repomd.xml", depth=4 if manager == "yum" else 3)
    stamps = [stat_mtime(host, path) for path in files]
    stamps.append(stat_mtime(host, f"{root}/last_makecache"))
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def _automatic(host: Host, manager: str, findings: Findings) -> Optional[bool]:
    if not host.which("systemctl"):
        findings.evidence.append("automatic updates unknown: no systemctl")
        return None

    def enabled(unit: str) -> Optional[bool]:
        return parse_systemctl_is_enabled(host.run(["systemctl", "is-enabled", unit], timeout=10.0))

    if manager == "yum":
        config_path, unit, section = "/etc/yum/yum-cron.conf", "yum-cron.service", "commands"
        install_unit: Optional[str] = None
    else:
        config_path, unit, section = "/etc/dnf/automatic.conf", "dnf-automatic.timer", "commands"
        install_unit = "dnf-automatic-install.timer"
    if install_unit and enabled(install_unit):
        findings.evidence.append(f"{install_unit} enabled (downloads and applies updates)")
        return True
    if not enabled(unit):
        findings.evidence.append(f"{unit} not enabled")
        return False
    config = host.read_text(config_path)
    apply = parse_ini_value(config.stdout, section, "apply_updates") if config.error is None else None
    findings.evidence.append(f"{unit} enabled; {config_path} apply_updates = {apply or 'unset (no)'}")
    return truthy(apply)


def collect_rpm(host: Host, manager: str, now: float) -> Findings:
    findings = Findings()
    binary = manager
    refreshed = _metadata_refreshed_at(host, manager)
    if refreshed is None:
        findings.evidence.append(f"no cached repository metadata in {CACHE_DIRS.get(manager)}")

    check = require(host.run([binary, "-C", "-q", "check-update"], timeout=TIMEOUT, cache_on=list(RPM_INPUTS)
                             + [CACHE_DIRS.get(manager, "/var/cache/dnf")]),
                    ok_codes=(0, 100), hint=message("patches_makecache_hint", command=f"{binary} makecache"))
    pending: Set[str] = set(parse_check_update(check.stdout)) if check.rc == 100 else set()
    if check.rc == 0 and check.stdout.strip() and parse_check_update(check.stdout):
        raise ParseError(f"{binary} check-update exited 0 (nothing to update) but listed packages")

    if manager == "yum":
        argv = [binary, "-C", "-q", "updateinfo", "list", "security"]
    else:
        argv = [binary, "-C", "-q", "updateinfo", "list", "--security"]
    info = require(host.run(argv, timeout=TIMEOUT, cache_on=list(RPM_INPUTS) + [CACHE_DIRS.get(manager, "")]))
    advisories = parse_updateinfo_security(info.stdout)
    pending_names = {_arch_split(n) for n in pending}
    security = sorted(name for name in advisories if name in pending_names)
    stale_advisories = sorted(set(advisories) - pending_names)
    findings.facts.update({
        "package_manager": manager,
        "pending_updates": len(pending),
        "pending_security_updates": len(security),
        "pending_security_packages": security,
        "phased_updates_deferred": 0,
        "package_lists_age_days": age_days(now, refreshed),
    })
    ids = sorted({a for name in security for a in advisories[name]})
    listed = f" ({', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})" if ids else ""
    findings.evidence.append(f"{binary} check-update: {len(pending)} updates; updateinfo: {len(security)} packages "
                             f"with security advisories{listed}")
    if stale_advisories:
        findings.evidence.append("advisories for packages not in check-update (ignored): "
                                 + ", ".join(stale_advisories[:10]))

    history = host.run(["env", "TZ=UTC", binary, "history", "list"], timeout=60.0,
                       cache_on=["/var/lib/dnf/history.sqlite", "/var/lib/yum/history"])
    last: Optional[float] = None
    if history.ok:
        stamp = parse_history_last_upgrade(history.stdout)
        try:
            last = naive_to_epoch(stamp, "%Y-%m-%d %H:%M") if stamp else None
        except ValueError:
            findings.evidence.append(f"{binary} history: unreadable date {stamp!r}")
        if stamp is None:
            findings.evidence.append(f"no upgrade transaction in {binary} history")
    else:
        findings.evidence.append(f"last update unknown: {history.describe_failure()}")
    findings.facts["last_update_at"] = rfc3339(last) if last is not None else None
    findings.facts["days_since_last_update"] = age_days(now, last)

    restart = host.run(["needs-restarting", "-r"], timeout=30.0)
    if restart.error == NOT_FOUND:
        findings.facts["reboot_required"] = None
        findings.evidence.append("reboot state unknown: needs-restarting not installed (dnf-utils / yum-utils)")
    elif restart.error is None and restart.rc in (0, 1):
        findings.facts["reboot_required"] = restart.rc == 1
    else:
        findings.facts["reboot_required"] = None
        findings.evidence.append(f"reboot state unknown: {restart.describe_failure()}")
    findings.facts["automatic_updates"] = _automatic(host, manager, findings)
    return findings
