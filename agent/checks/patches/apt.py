"""apt (Debian, Ubuntu): pending and security updates without python3-apt.

The source of truth is apt's own resolver: ``apt-get -s dist-upgrade`` (a simulation: nothing is
downloaded or installed) prints one ``Inst`` line per package it would upgrade, with the candidate
version and every archive that publishes that exact version::

    Inst libgnutls30 [3.7.9-2+deb12u6] (3.7.9-2+deb12u7 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
    Inst curl [8.5.0-2ubuntu10.6] (8.5.0-2ubuntu10.7 Ubuntu:24.04/noble-updates, Ubuntu:24.04/noble-security [amd64])

An update is a *security* update when its candidate version is published in a security archive
(``*-security``, label ``Debian-Security``): Ubuntu copies security fixes to ``-updates`` too, so an
update whose first-listed archive is ``-updates`` still counts when the same version is also in
``-security``. Updates deferred by Ubuntu's phasing are not pending (apt will not install them yet);
they are counted in ``phased_updates_deferred``. apt 2.4 (Ubuntu 22.04) lists them as "kept back"
instead, so kept-back packages are looked up with ``apt-cache policy`` (``(phased N%)`` marker).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from agent.checks.base import ParseError
from agent.checks.messages import message
from agent.checks.patches.pkgcommon import (
    CannotJudge,
    Findings,
    ProbeFailure,
    age_days,
    file_exists,
    naive_to_epoch,
    offset_from_mtime,
    parse_systemctl_is_enabled,
    require,
    rfc3339,
    stat_mtime,
    subcommand,
)
from agent.probes import NOT_FOUND, Host

SIMULATE = ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]
SIMULATE_TIMEOUT = 180.0
LISTS_DIR = "/var/lib/apt/lists"
HISTORY_DIR = "/var/log/apt"
# What apt's answer depends on: when none of these changed, the cached simulation is still the truth.
APT_INPUTS = (
    LISTS_DIR,
    "/var/lib/dpkg/status",
    "/var/lib/apt/extended_states",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
    "/etc/machine-id",  # phasing is decided per machine id
)
REBOOT_FLAG = "/var/run/reboot-required"
MAX_ROTATED_LOGS = 12

_INST = re.compile(r"^Inst (?P<pkg>\S+)(?: \[(?P<old>[^\]]*)\])? \((?P<new>\S+)(?: (?P<rel>[^()]*))?\)")
_SUMMARY = re.compile(r"^(\d+) upgraded, (\d+) newly installed, (\d+) to remove and (\d+) not upgraded\.")
# apt >= 3.0 (Debian 13, Ubuntu 24.10+): "Summary:" then "  Upgrading: 71, Installing: 6, Removing: 0, Not Upgrading: 1"
_SUMMARY_APT3 = re.compile(r"^\s*Upgrading: (\d+), .*Not Upgrading: (\d+)\s*$")
_SECTIONS_KEPT = ("The following packages have been kept back:", "Not upgrading:")
_SECTIONS_PHASED = ("The following upgrades have been deferred due to phasing:", "Not upgrading yet due to phasing:")


@dataclass(frozen=True)
class Upgrade:
    package: str
    installed: str
    candidate: str
    origins: Tuple[str, ...]

    @property
    def security(self) -> bool:
        return any(is_security_origin(o) for o in self.origins)


@dataclass
class Simulation:
    upgrades: List[Upgrade] = field(default_factory=list)
    new_packages: List[str] = field(default_factory=list)
    kept_back: List[str] = field(default_factory=list)
    phased: List[str] = field(default_factory=list)
    not_upgraded: int = 0


def is_security_origin(origin: str) -> bool:
    """``Debian-Security:12/oldstable-security``, ``Ubuntu:22.04/jammy-security``,
    ``UbuntuESM:22.04/jammy-infra-security`` -> True; ``Ubuntu:22.04/jammy-updates`` -> False."""
    label, _, rest = origin.partition(":")
    archive = rest.rpartition("/")[2] if rest else label
    return archive.strip().endswith("-security") or label.strip().lower().endswith("-security")


def parse_simulation(text: str) -> Simulation:
    """``apt-get -s dist-upgrade`` (C locale; apt 2.x and the apt 3 layout) -> upgrades, kept back and
    phased packages.

    Raises ParseError when the summary line is missing (truncated or foreign output)."""
    sim = Simulation()
    section: Optional[List[str]] = None
    summary: Optional[Tuple[int, int]] = None
    for line in text.splitlines():
        if line.startswith("  ") and section is not None:
            section.extend(name.split(":")[0] for name in line.split())
            continue
        section = None
        if line.startswith(_SECTIONS_KEPT):
            section = sim.kept_back
        elif line.startswith(_SECTIONS_PHASED):
            section = sim.phased
        elif line.startswith("Inst "):
            match = _INST.match(line)
            if not match:
                raise ParseError(f"apt-get -s: cannot read simulation line {line[:120]!r}")
            rel = (match.group("rel") or "").strip()
            rel = re.sub(r"\s*\[[^\]]*\]$", "", rel)  # drop the trailing [arch]
            origins = tuple(o.strip() for o in rel.split(",") if o.strip())
            if match.group("old") is None:
                sim.new_packages.append(match.group("pkg"))
            else:
                sim.upgrades.append(Upgrade(match.group("pkg"), match.group("old"), match.group("new"), origins))
        else:
            classic = _SUMMARY.match(line)
            apt3 = _SUMMARY_APT3.match(line)
            if classic:
                summary = (int(classic.group(1)), int(classic.group(4)))
            elif apt3:
                summary = (int(apt3.group(1)), int(apt3.group(2)))
    if summary is None:
        raise ParseError("apt-get -s dist-upgrade: no summary line ('N upgraded, ... N not upgraded.' or apt 3's "
                         "'Upgrading: N, ... Not Upgrading: N'): output truncated, or not apt-get in the C locale")
    upgraded, sim.not_upgraded = summary
    if upgraded != len(sim.upgrades):
        raise ParseError(f"apt-get -s dist-upgrade: summary says {upgraded} upgraded but {len(sim.upgrades)} "
                         "Inst lines upgrade an installed package")
    return sim


@dataclass
class PolicyEntry:
    """One package of ``apt-cache policy``."""

    installed: Optional[str]
    candidate: Optional[str]
    phased_percent: Optional[int] = None
    # version -> suites publishing it (``bookworm-security/main`` -> ``bookworm-security``)
    versions: Dict[str, List[str]] = field(default_factory=dict)
    newer_than_installed: List[str] = field(default_factory=list)

    def candidate_is_security(self) -> bool:
        return any(s.endswith("-security") for s in self.versions.get(self.candidate or "", []))

    def security_version_pending(self) -> Optional[str]:
        """A version newer than the installed one that a security archive publishes."""
        for version in self.newer_than_installed:
            if any(s.endswith("-security") for s in self.versions.get(version, [])):
                return version
        return None


_POLICY_VERSION = re.compile(r"^ (\*\*\*|   ) (\S+) (-?\d+)(?: \(phased (\d+)%\))?\s*$")
_POLICY_SOURCE = re.compile(r"^\s+-?\d+ (\S+) (\S+) ")


def parse_policy(text: str) -> Dict[str, PolicyEntry]:
    """``apt-cache policy PKG...`` -> per package: installed, candidate, phasing, suites per version."""
    entries: Dict[str, PolicyEntry] = {}
    current: Optional[PolicyEntry] = None
    version: Optional[str] = None
    seen_installed = False
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = PolicyEntry(None, None)
            entries[line[:-1].split(":")[0]] = current
            version, seen_installed = None, False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            value = stripped.split(":", 1)[1].strip()
            current.installed = None if value == "(none)" else value
        elif stripped.startswith("Candidate:"):
            value = stripped.split(":", 1)[1].strip()
            current.candidate = None if value == "(none)" else value
        elif (match := _POLICY_VERSION.match(line)) is not None:
            version = match.group(2)
            current.versions.setdefault(version, [])
            if match.group(1) == "***":
                seen_installed = True
            elif not seen_installed and current.installed is not None:
                current.newer_than_installed.append(version)
            if match.group(4) is not None and version == current.candidate:
                current.phased_percent = int(match.group(4))
        elif version is not None and (match := _POLICY_SOURCE.match(line)) is not None:
            suite = match.group(2).split("/")[0]
            current.versions[version].append(suite)
    return entries


@dataclass
class HistoryEntry:
    end: str
    commandline: Optional[str]
    upgraded: bool
    failed: bool
    # packages installed because someone asked for them (an Install entry without ", automatic")
    requested_installs: int = 0


# apt, apt-get and aptitude options that take the next word as their value
_APT_OPTIONS_WITH_VALUE = ("-o", "--option", "-c", "--config-file", "-t", "--target-release",
                           "--default-release", "-a", "--host-architecture", "-P", "--build-profiles")
_APT_UPGRADE_VERBS = {"upgrade", "dist-upgrade", "full-upgrade", "safe-upgrade"}
_APT_PROGRAMS = {"apt", "apt-get", "aptitude"}
_UNATTENDED = {"unattended-upgrade", "unattended-upgrades"}
# Front ends that log a role instead of a command: PackageKit ("packagekit role='update-packages'") and
# aptdaemon ("aptdaemon role='role-upgrade-system' sender=':1.80'").
_ROLE = re.compile(r"\brole='([^']+)'")
_UPDATE_ROLES = {"update-packages", "update-system", "role-upgrade-system", "role-upgrade-packages"}
# Roles that apply whatever a front end chose (Ubuntu's update-manager commits its upgrade list this way):
# judged by what the transaction did, like a transaction without a command line.
_COMMIT_ROLES = {"role-commit-packages"}
_REQUESTED_INSTALL = re.compile(r"[^\s,(]+ \([^)]*\)")


def parse_history(text: str) -> List[HistoryEntry]:
    """``/var/log/apt/history.log`` -> transactions (end time as written, in local time)."""
    entries: List[HistoryEntry] = []
    block: Dict[str, str] = {}

    def flush() -> None:
        if block.get("Start-Date"):
            installs = _REQUESTED_INSTALL.findall(block.get("Install", ""))
            entries.append(HistoryEntry(
                end=block.get("End-Date", ""),
                commandline=block.get("Commandline"),
                upgraded="Upgrade" in block,
                failed="Error" in block,
                requested_installs=sum(1 for item in installs if not item.endswith(", automatic)")),
            ))

    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "Start-Date":
            flush()
            block = {}
        block[key] = value.strip()
    flush()
    return entries


def transaction_kind(commandline: Optional[str]) -> str:
    """What an apt transaction was, from its command line: ``update`` (a system-wide upgrade: apt/apt-get/
    aptitude upgrade, dist-upgrade, full-upgrade, safe-upgrade; an unattended-upgrades run; a PackageKit or
    aptdaemon update), ``other`` (install, remove, --only-upgrade of named packages, ...) or ``unknown``
    (no command line, or a front end that commits a list of its own)."""
    if commandline is None or not commandline.strip():
        return "unknown"
    role = _ROLE.search(commandline)
    if role:
        if role.group(1) in _UPDATE_ROLES:
            return "update"
        return "unknown" if role.group(1) in _COMMIT_ROLES else "other"
    try:
        words = shlex.split(commandline)
    except ValueError:
        words = commandline.split()
    if not words:
        return "unknown"
    program = words[0].rsplit("/", 1)[-1]
    if program in _UNATTENDED:
        return "update"
    if program.startswith("python") and len(words) > 1 and words[1].rsplit("/", 1)[-1] in _UNATTENDED:
        return "update"
    if program in _APT_PROGRAMS:
        return "update" if subcommand(words[1:], _APT_OPTIONS_WITH_VALUE) in _APT_UPGRADE_VERBS else "other"
    return "other"


def is_system_update(entry: HistoryEntry) -> bool:
    """A finished, error-free transaction that upgraded packages as a system update (apt upgrade,
    dist/full-upgrade, unattended-upgrade, a PackageKit update), not an install that happened to
    upgrade a dependency. Without a command line saying what it was, a transaction counts only when it
    upgraded packages and installed none that anybody asked for (new kernels come in as automatic)."""
    if not entry.upgraded or entry.failed or not entry.end:
        return False
    kind = transaction_kind(entry.commandline)
    if kind == "unknown":
        return entry.requested_installs == 0
    return kind == "update"


HISTORY_TIME = "%Y-%m-%d %H:%M:%S"


def last_update_epoch(entries: Sequence[HistoryEntry], utc_offset: float) -> Optional[float]:
    stamps = []
    for entry in entries:
        if is_system_update(entry):
            try:
                stamps.append(naive_to_epoch(entry.end, HISTORY_TIME, utc_offset))
            except ValueError:
                continue
    return max(stamps) if stamps else None


def parse_apt_config(text: str) -> Dict[str, str]:
    """``apt-config dump`` -> {"APT::Periodic::Unattended-Upgrade": "1", ...} (scalar options only)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r'^(\S+) "(.*)";\s*$', line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def periodic_enabled(config: Dict[str, str], key: str) -> bool:
    """APT::Periodic values are a number of days ("1", "always" in newer apt); "0"/absent is off."""
    if config.get("APT::Periodic::Enable", "1").strip() == "0":
        return False
    value = config.get(key, "0").strip().lower()
    if value in ("always",):
        return True
    try:
        return int(value) > 0
    except ValueError:
        return bool(re.match(r"^\d+[smhd]$", value)) and not value.startswith("0")


# -- probes ---------------------------------------------------------------------

def _lists_refreshed_at(host: Host, findings: Findings) -> Optional[float]:
    """Newest of the Release files' mtimes, the lists directory and the APT::Periodic stamp.

    apt keeps a Release file's mtime at the server's Last-Modified and leaves an unchanged file alone,
    so one old file means nothing; the newest of them is a lower bound of the last successful refresh."""
    listing = host.listdir(LISTS_DIR)
    if listing.error is not None:
        raise ProbeFailure(listing)
    releases = [n for n in listing.stdout.splitlines() if n.endswith(("_InRelease", "_Release"))]
    if not releases:
        return None
    stamps = [stat_mtime(host, f"{LISTS_DIR}/{name}") for name in releases]
    stamps.append(stat_mtime(host, "/var/lib/apt/periodic/update-success-stamp"))
    known = [s for s in stamps if s is not None]
    if known:
        findings.evidence.append(f"package lists last refreshed {rfc3339(max(known))} (newest of {len(releases)} "
                                 f"Release files in {LISTS_DIR} and the APT::Periodic stamp)")
    return max(known) if known else None


def _history(host: Host, findings: Findings) -> Optional[float]:
    current = host.read_text(f"{HISTORY_DIR}/history.log")
    if current.error not in (None, NOT_FOUND):
        findings.evidence.append(f"last update unknown: {current.describe_failure()}")
        return None
    entries = parse_history(current.stdout) if current.error is None else []
    # history.log holds local times without a zone: learn the offset from the file's own mtime.
    offset = None
    if entries and entries[-1].end:
        try:
            last_local = naive_to_epoch(entries[-1].end, HISTORY_TIME, 0.0)
            offset = offset_from_mtime(last_local, stat_mtime(host, f"{HISTORY_DIR}/history.log"))
        except ValueError:
            offset = None
    if offset is None:
        findings.evidence.append("apt history times read as UTC (zone offset not derivable)")
    found = last_update_epoch(entries, offset or 0.0)
    if found is None:
        listing = host.listdir(HISTORY_DIR)
        rotated = sorted(
            (n for n in listing.stdout.splitlines() if re.fullmatch(r"history\.log\.\d+\.gz", n)),
            key=lambda n: int(n.split(".")[2]),
        ) if listing.error is None else []
        for name in rotated[:MAX_ROTATED_LOGS]:
            path = f"{HISTORY_DIR}/{name}"
            # the Host reads text only; zcat is a probe like any other, cached on the file
            probe = host.run(["zcat", path], timeout=15.0, cache_on=[path])
            if not probe.ok:
                findings.evidence.append(f"rotated apt history not read: {probe.describe_failure()}")
                break
            found = last_update_epoch(parse_history(probe.stdout), offset or 0.0)
            if found is not None:
                break
    if found is None:
        findings.evidence.append("no system update (upgrade) recorded in the apt history logs")
    return found


def _automatic(host: Host, findings: Findings) -> Optional[bool]:
    status = host.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "unattended-upgrades"], timeout=10.0)
    if status.error is not None:
        findings.evidence.append(f"automatic updates unknown: {status.describe_failure()}")
        return None
    installed = status.rc == 0 and status.stdout.startswith("ii")
    config_probe = host.run(["apt-config", "dump"], timeout=10.0)
    if not config_probe.ok:
        findings.evidence.append(f"automatic updates unknown: {config_probe.describe_failure()}")
        return None
    config = parse_apt_config(config_probe.stdout)
    unattended = periodic_enabled(config, "APT::Periodic::Unattended-Upgrade")
    lists = periodic_enabled(config, "APT::Periodic::Update-Package-Lists")
    findings.evidence.append(
        f"unattended-upgrades {'installed' if installed else 'not installed'}; "
        f"APT::Periodic::Unattended-Upgrade={config.get('APT::Periodic::Unattended-Upgrade', 'unset')!r}, "
        f"Update-Package-Lists={config.get('APT::Periodic::Update-Package-Lists', 'unset')!r}")
    enabled = installed and unattended and lists
    if enabled and host.which("systemctl"):
        timer = parse_systemctl_is_enabled(
            host.run(["systemctl", "is-enabled", "apt-daily-upgrade.timer"], timeout=10.0))
        if timer is False:
            findings.evidence.append("apt-daily-upgrade.timer is not enabled: unattended-upgrades never runs")
            enabled = False
    return enabled


def collect_apt(host: Host, now: float) -> Findings:
    findings = Findings()
    refreshed = _lists_refreshed_at(host, findings)
    if refreshed is None:
        raise CannotJudge(message("patches_no_apt_index", directory=LISTS_DIR, command="apt update"))

    sim_probe = require(host.run(SIMULATE, timeout=SIMULATE_TIMEOUT, cache_on=list(APT_INPUTS)))
    sim = parse_simulation(sim_probe.stdout)

    # kept back: phased (apt 2.4 says "kept back") or blocked; their candidates' origins are not in the
    # simulation. Non-security upgrades: does a security version newer than the installed one exist?
    lookups = sorted(set(sim.kept_back) | {u.package for u in sim.upgrades if not u.security})
    policy: Dict[str, PolicyEntry] = {}
    if lookups:
        policy_probe = require(host.run(["apt-cache", "policy", *lookups], timeout=60.0,
                                        cache_on=list(APT_INPUTS)))
        policy = parse_policy(policy_probe.stdout)

    pending = {u.package for u in sim.upgrades}
    security = {u.package for u in sim.upgrades if u.security}
    phased = set(sim.phased)
    for name in sim.kept_back:
        entry = policy.get(name)
        if entry is not None and entry.phased_percent is not None and not entry.candidate_is_security():
            phased.add(name)
            continue
        pending.add(name)
        if entry is not None and entry.candidate_is_security():
            security.add(name)
    superseding = sorted(
        u.package for u in sim.upgrades
        if not u.security and (e := policy.get(u.package)) is not None and e.security_version_pending())

    findings.facts.update({
        "package_manager": "apt",
        "pending_updates": len(pending),
        "pending_security_updates": len(security),
        "pending_security_packages": sorted(security),
        "phased_updates_deferred": len(phased - pending),
        "package_lists_age_days": age_days(now, refreshed),
    })
    findings.evidence.insert(0,
        f"apt-get -s dist-upgrade: {len(sim.upgrades)} upgrades ({len(security)} from a security archive), "
        f"{len(sim.new_packages)} new packages, {len(sim.kept_back)} kept back, {len(sim.phased)} deferred by phasing")
    if phased:
        findings.evidence.append("held back by phasing (not pending yet): " + ", ".join(sorted(phased)[:20]))
    blocked = sorted(set(sim.kept_back) - phased)
    if blocked:
        findings.evidence.append("kept back (counted as pending): " + ", ".join(blocked[:20]))
    if superseding:
        findings.evidence.append(
            f"{len(superseding)} non-security updates also carry an earlier security fix not yet installed "
            f"(counted as apt does, by the candidate's archive): {', '.join(superseding[:20])}")

    last = _history(host, findings)
    if last is not None:
        findings.evidence.append(f"last system update in the apt history: {rfc3339(last)}")
    findings.facts["last_update_at"] = rfc3339(last) if last is not None else None
    findings.facts["days_since_last_update"] = age_days(now, last)
    findings.facts["reboot_required"] = file_exists(host, REBOOT_FLAG)
    findings.facts["automatic_updates"] = _automatic(host, findings)
    return findings
