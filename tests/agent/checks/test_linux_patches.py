"""Linux updates: recorded outputs parse to the expected facts, the parsers survive garbage, and on this
machine the pending security updates equal what apt itself reports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.declarations import conform
from agent.checks.patches import apt, linux, rpm, zypper
from agent.checks.patches.pkgcommon import offset_from_mtime, parse_systemctl_is_enabled
from agent.probes import (
    NOT_FOUND,
    PERMISSION_DENIED,
    TIMEOUT,
    LiveHost,
    ProbeResult,
    Recording,
    RecordingHost,
    ReplayHost,
)
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["patches"]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


# -- recorded and constructed outputs -> facts ------------------------------------------------------------

EXPECTED: List[Any] = [
    pytest.param("debian-12/patches-security-pending.json", {
        "package_manager": "apt", "os_version": "12", "pending_updates": 112, "pending_security_updates": 72,
        "phased_updates_deferred": 0, "package_lists_age_days": 0.01, "reboot_required": False,
                # the last system update is the 2025-06-24 "apt-get -qqy upgrade"; later installs that upgraded
        # dependencies (apt-get install --no-upgrade ... upgrading linux-libc-dev on 2026-09-22) are not updates
        "automatic_updates": False, "last_update_at": "2025-06-24T14:36:25Z", "days_since_last_update": 522.68,
        "security_includes": ["libssl3", "openssl", "libgnutls30", "apt"], "security_excludes": ["openssh-client", "bash"],
    }, id="debian12-real-security-pending"),
    pytest.param("debian-12/patches-stale-lists.json", {
        "package_manager": "apt", "pending_updates": 112, "pending_security_updates": 72,
        "package_lists_age_days": 45.01, "days_since_last_update": 567.68,
    }, id="debian12-stale-lists"),
    pytest.param("debian-12/patches-current.json", {
        "package_manager": "apt", "pending_updates": 0, "pending_security_updates": 0,
        "pending_security_packages": [], "phased_updates_deferred": 0, "package_lists_age_days": 0.15,
        "reboot_required": True, "automatic_updates": True, "last_update_at": "2024-11-12T06:21:14Z",
        "days_since_last_update": 0.15,
    }, id="debian12-current-unattended"),
    pytest.param("ubuntu-22.04/patches-security-both-pockets-phased-kept-back.json", {
        "package_manager": "apt", "os_version": "22.04", "pending_updates": 5, "pending_security_updates": 4,
        "pending_security_packages": ["curl", "libcurl4", "libssl3", "openssl"], "phased_updates_deferred": 2,
        "package_lists_age_days": 0.08, "reboot_required": True, "automatic_updates": True,
        # history.log is in local time (UTC+1): 10:15:02 local is 09:15:02 UTC
        "last_update_at": "2024-03-20T09:15:02Z", "days_since_last_update": 4.95,
    }, id="ubuntu2204-both-pockets-phased-as-kept-back"),
    pytest.param("ubuntu-24.04/patches-phased-deferred.json", {
        "package_manager": "apt", "os_version": "24.04", "pending_updates": 4, "pending_security_updates": 2,
        "pending_security_packages": ["libc-bin", "libc6"], "phased_updates_deferred": 2,
        "reboot_required": False, "automatic_updates": False, "last_update_at": "2024-09-15T09:31:40Z",
        "days_since_last_update": 17.1,
    }, id="ubuntu2404-phased-deferred"),
    pytest.param("fedora-40/patches-dnf-security-pending.json", {
        "package_manager": "dnf", "os_version": "40", "pending_updates": 11, "pending_security_updates": 8,
        "pending_security_packages": ["firefox", "kernel", "kernel-core", "kernel-modules", "kernel-modules-core",
                                      "openssh", "openssh-clients", "openssh-server"],
        "package_lists_age_days": 0.44, "reboot_required": True, "automatic_updates": False,
        "last_update_at": "2024-06-30T09:41:00Z", "days_since_last_update": 9.93,
    }, id="fedora40-dnf-security-pending"),
    pytest.param("fedora-40/patches-dnf-current.json", {
        "package_manager": "dnf", "pending_updates": 0, "pending_security_updates": 0,
        "reboot_required": False, "automatic_updates": True, "days_since_last_update": 0.08,
    }, id="fedora40-dnf-current-automatic"),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED)
def test_fixture_parses_to_expected_facts(fixture: str, expected: Dict[str, Any]) -> None:
    recording = Recording.load(FIXTURES / fixture)
    assert recording.note, "every fixture names its source"
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    assert conform(FAMILY.spec, outcome.facts) == []
    facts = outcome.facts
    for name, value in expected.items():
        if name == "security_includes":
            assert set(value) <= set(facts["pending_security_packages"])
        elif name == "security_excludes":
            assert not set(value) & set(facts["pending_security_packages"])
        else:
            assert facts[name] == value, name
    assert facts["pending_security_updates"] == len(facts["pending_security_packages"])
    assert facts["pending_security_updates"] <= facts["pending_updates"]


def test_phased_packages_are_named_in_evidence() -> None:
    outcome = replay("ubuntu-24.04/patches-phased-deferred.json")
    assert any("phasing" in line and "fwupd" in line for line in outcome.evidence)
    # curl's candidate is only in -updates although an older -security version is pending too: apt (and we)
    # count it as non-security, and the evidence says so
    assert any("curl" in line and "security fix" in line for line in outcome.evidence)


# -- small pure functions, table-driven -------------------------------------------------------------------

@pytest.mark.parametrize(("origin", "security"), [
    ("Debian-Security:12/oldstable-security", True),
    ("Debian:12.15/oldstable", False),
    ("Ubuntu:22.04/jammy-security", True),
    ("Ubuntu:22.04/jammy-updates", False),
    ("UbuntuESM:22.04/jammy-infra-security", True),
    ("UbuntuESMApps:22.04/jammy-apps-security", True),
    ("packages.example.com", False),
    ("Ubuntu:24.04/noble-proposed", False),
])
def test_security_origin(origin: str, security: bool) -> None:
    assert apt.is_security_origin(origin) is security


@pytest.mark.parametrize(("line", "package", "old", "new", "security"), [
    ("Inst libssl3 [3.0.2-0ubuntu1.14] (3.0.2-0ubuntu1.15 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])",
     "libssl3", "3.0.2-0ubuntu1.14", "3.0.2-0ubuntu1.15", True),
    ("Inst tzdata [2024a-0ubuntu0.22.04] (2024a-0ubuntu0.22.04.1 Ubuntu:22.04/jammy-updates [all])",
     "tzdata", "2024a-0ubuntu0.22.04", "2024a-0ubuntu0.22.04.1", False),
    ("Inst libpam-modules-bin [1.5.2-6+deb12u1] (1.5.2-6+deb12u3 Debian-Security:12/oldstable-security [amd64]) "
     "[libpam-modules:amd64 on libpam-modules-bin:amd64] [libpam-modules:amd64 ]",
     "libpam-modules-bin", "1.5.2-6+deb12u1", "1.5.2-6+deb12u3", True),
    ("Inst login [1:4.13+dfsg1-1+deb12u1] (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])",
     "login", "1:4.13+dfsg1-1+deb12u1", "1:4.13+dfsg1-1+deb12u2", False),
])
def test_simulation_line(line: str, package: str, old: str, new: str, security: bool) -> None:
    sim = apt.parse_simulation(line + "\n1 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
    assert [(u.package, u.installed, u.candidate, u.security) for u in sim.upgrades] == [(package, old, new, security)]


def test_simulation_new_packages_are_not_upgrades() -> None:
    text = ("Inst linux-image-6.1.0-30-amd64 (6.1.124-1 Debian-Security:12/oldstable-security [amd64])\n"
            "Inst linux-image-amd64 [6.1.123-1] (6.1.124-1 Debian-Security:12/oldstable-security [amd64])\n"
            "1 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n")
    sim = apt.parse_simulation(text)
    assert [u.package for u in sim.upgrades] == ["linux-image-amd64"]
    assert sim.new_packages == ["linux-image-6.1.0-30-amd64"]


def test_simulation_apt3_layout() -> None:
    # apt 3.0 (Debian 13, Ubuntu 24.10+) lists sections under new headings and ends with "Summary:"
    text = "\n".join([
        "Reading package lists...", "Building dependency tree...", "Reading state information...",
        "Calculating upgrade...", "Upgrading:", "  gzip-doc  libpam0g", "",
        "Installing dependencies:", "  linux-image-6.11.0-29-generic", "",
        "Not upgrading yet due to phasing:", "  gzip", "",
        "Not upgrading:", "  held-pkg", "",
        "Summary:", "  Upgrading: 2, Installing: 1, Removing: 0, Not Upgrading: 2",
        "Inst libpam0g [1.5.3-7ubuntu2.2] (1.5.3-7ubuntu2.3 Ubuntu:24.10/oracular-updates, Ubuntu:24.10/oracular-security [arm64])",
        "Inst gzip-doc [1.12-1ubuntu3] (1.12-1ubuntu3.1 Ubuntu:24.10/oracular-updates [all])",
        "Inst linux-image-6.11.0-29-generic (6.11.0-29.29 Ubuntu:24.10/oracular-security [arm64])",
        "Conf libpam0g (1.5.3-7ubuntu2.3 Ubuntu:24.10/oracular-updates, Ubuntu:24.10/oracular-security [arm64])", ""])
    sim = apt.parse_simulation(text)
    assert [(u.package, u.security) for u in sim.upgrades] == [("libpam0g", True), ("gzip-doc", False)]
    assert sim.phased == ["gzip"] and sim.kept_back == ["held-pkg"] and sim.not_upgraded == 2
    assert sim.new_packages == ["linux-image-6.11.0-29-generic"]


@pytest.mark.parametrize("text", [
    "", "Reading package lists...\n", "E: Could not open lock file\n",
    # truncated: the Inst lines are there but the summary is not
    "Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])\n",
    # the summary disagrees with the Inst lines
    "Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])\n2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n",
])
def test_simulation_rejects_truncated_or_foreign_output(text: str) -> None:
    with pytest.raises(ParseError):
        apt.parse_simulation(text)


def test_policy_phasing_and_security_versions() -> None:
    text = (FIXTURES / "ubuntu-22.04/patches-security-both-pockets-phased-kept-back.json").read_text()
    probe = next(p for p in json.loads(text)["probes"] if p["target"][:2] == ["apt-cache", "policy"])
    entries = apt.parse_policy(probe["stdout"])
    assert entries["gir1.2-gstreamer-1.0"].phased_percent == 40
    assert entries["tzdata"].phased_percent is None
    assert not entries["tzdata"].candidate_is_security()
    # tzdata's -security version is the installed one: nothing newer from security
    assert entries["tzdata"].security_version_pending() is None


@pytest.mark.parametrize(("config", "key", "enabled"), [
    ({"APT::Periodic::Unattended-Upgrade": "1"}, "APT::Periodic::Unattended-Upgrade", True),
    ({"APT::Periodic::Unattended-Upgrade": "0"}, "APT::Periodic::Unattended-Upgrade", False),
    ({}, "APT::Periodic::Unattended-Upgrade", False),
    ({"APT::Periodic::Unattended-Upgrade": "always"}, "APT::Periodic::Unattended-Upgrade", True),
    ({"APT::Periodic::Unattended-Upgrade": "1", "APT::Periodic::Enable": "0"}, "APT::Periodic::Unattended-Upgrade", False),
])
def test_periodic_enabled(config: Dict[str, str], key: str, enabled: bool) -> None:
    assert apt.periodic_enabled(config, key) is enabled


@pytest.mark.parametrize(("commandline", "upgrade", "error", "counts"), [
    ("apt-get -qqy upgrade", True, False, True),
    ("/usr/bin/unattended-upgrade", True, False, True),
    ("apt full-upgrade", True, False, True),
    (None, True, False, True),  # no Commandline: judged by what it did (upgrades, nothing asked installed)
    ("apt-get install -y tzdata", True, False, False),  # an install that upgraded a dependency
    # issue 15: words in the command line are not what the transaction was
    ("apt-get install unattended-upgrades", True, False, False),
    ("apt-get -o Dir::Etc::sourcelist=/tmp/t/sources.list -o APT::Sandbox::User=root install -y -qq "
     "--no-install-recommends --no-remove --no-upgrade --no-download time gdb", True, False, False),
    ("apt-get install --only-upgrade openssl", True, False, False),
    ("apt-get -o Debug::NoLocking=1 dist-upgrade", True, False, True),
    ("aptitude safe-upgrade", True, False, True),
    ("/usr/bin/python3 /usr/bin/unattended-upgrade --verbose", True, False, True),
    ("packagekit role='update-packages'", True, False, True),
    ("packagekit role='install-packages'", True, False, False),
    ("aptdaemon role='role-upgrade-system' sender=':1.80'", True, False, True),
    ("apt upgrade", True, True, False),  # failed
    ("apt upgrade", False, False, False),  # nothing upgraded
])
def test_history_system_update(commandline: Optional[str], upgrade: bool, error: bool, counts: bool) -> None:
    """Entries in apt's history.log layout (Debian 12 / Ubuntu 22.04 logs; PackageKit and aptdaemon write
    their role as the Commandline)."""
    lines = ["Start-Date: 2024-05-01  10:00:00"]
    if commandline:
        lines.append(f"Commandline: {commandline}")
    if upgrade:
        lines.append("Upgrade: bash:amd64 (5.2.15-2+b7, 5.2.15-2+b8)")
    if error:
        lines.append("Error: Sub-process /usr/bin/dpkg returned an error code (1)")
    lines.append("End-Date: 2024-05-01  10:01:00")
    entries = apt.parse_history("\n".join(lines) + "\n")
    assert len(entries) == 1
    assert apt.is_system_update(entries[0]) is counts


def test_history_without_commandline_judged_by_content() -> None:
    text = ("Start-Date: 2024-05-01  10:00:00\nInstall: vlc:amd64 (3.0.16-1build7), vlc-bin:amd64 (3.0.16-1build7, "
            "automatic)\nUpgrade: libvlc5:amd64 (3.0.16-1build6, 3.0.16-1build7)\nEnd-Date: 2024-05-01  10:01:00\n"
            "Start-Date: 2024-05-02  10:00:00\nCommandline: aptdaemon role='role-commit-packages' sender=':1.95'\n"
            "Install: linux-image-6.8.0-55-generic:amd64 (6.8.0-55.57, automatic)\n"
            "Upgrade: bash:amd64 (5.2.15-2+b7, 5.2.15-2+b8)\nEnd-Date: 2024-05-02  10:01:00\n")
    first, second = apt.parse_history(text)
    assert (first.requested_installs, apt.is_system_update(first)) == (1, False)
    assert (second.requested_installs, apt.is_system_update(second)) == (0, True)


@pytest.mark.parametrize(("local_minus_true", "offset"), [
    (3600 + 2, 3600.0), (0.4, 0.0), (-4 * 3600 - 1, -4 * 3600.0), (19800 + 1, 19800.0), (1234, None),
])
def test_offset_from_mtime(local_minus_true: float, offset: Optional[float]) -> None:
    assert offset_from_mtime(1_700_000_000 + local_minus_true, 1_700_000_000) == offset


def test_check_update_wrapped_names_and_obsoletes() -> None:
    text = ("\nfoo.x86_64    1.0-1.fc40    updates\nvery-long-name-of-a-package.noarch\n"
            "              2:3.1-4.fc40  updates\n\nObsoleting Packages\nbar.noarch  1-1.fc40  updates\n")
    assert rpm.parse_check_update(text) == ["foo.x86_64", "very-long-name-of-a-package.noarch"]


@pytest.mark.parametrize("text", ["Error: Failed to download metadata for repo 'fedora'", "foo.x86_64 1.0",
                                  "a b c", "{}"])
def test_check_update_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        rpm.parse_check_update(text)


def test_updateinfo_by_package() -> None:
    text = ("FEDORA-2024-1 Important/Sec.  openssl-libs-1:3.2.1-2.fc40.x86_64\n"
            "FEDORA-2024-2 Moderate/Sec.   openssl-libs-1:3.2.2-1.fc40.x86_64\n"
            "RHSA-2024:3 Critical/Sec.     kernel-core-5.14.0-427.el9.x86_64\n")
    assert rpm.parse_updateinfo_security(text) == {"openssl-libs": ["FEDORA-2024-1", "FEDORA-2024-2"],
                                                    "kernel-core": ["RHSA-2024:3"]}


def test_dnf_history_skips_installs_and_failures() -> None:
    text = ("ID | Command line | Date and time    | Action(s) | Altered\n-----\n"
            " 9 | install x    | 2024-07-08 14:02 | Install   |    1\n"
            " 8 | upgrade      | 2024-07-07 10:00 | Upgrade   |   30 #\n"
            " 7 | upgrade      | 2024-07-01 09:41 | I, U      |   87\n")
    assert rpm.parse_history_last_upgrade(text) == "2024-07-01 09:41"


@pytest.mark.parametrize(("command_line", "actions", "counts"), [
    ("upgrade", {"Upgrade"}, True),
    ("-y upgrade --security", {"I", "U"}, True),
    ("upgrade --refresh -y", {"I", "U"}, True),
    ("distro-sync", {"Upgrade", "Downgrade"}, True),
    ("", {"Upgrade"}, True),  # dnf-automatic and PackageKit leave the column empty
    ("install gimp", {"I", "U"}, False),  # issue 15: an install that upgraded a dependency
    ("install dnf-automatic", {"Upgrade"}, False),
    ("upgrade firefox", {"Upgrade"}, False),  # named packages, not the system
    ("--setopt=x=1 -x kernel* upgrade", {"Upgrade"}, True),
    ("upgrade", {"Install"}, False),
])
def test_dnf_system_update(command_line: str, actions: set, counts: bool) -> None:
    assert rpm.is_dnf_system_update(command_line, actions) is counts


ZYPPER_UPDATES = """<?xml version='1.0'?>
<stream>
<message type="info">Loading repository data...</message>
<update-status version="0.6">
<update-list>
<update kind="package" name="openssl-3" edition="3.1.4-150600.5.7.1" arch="x86_64" edition-old="3.1.4-150600.5.3.1"><summary>Secure Sockets and Transport Layer Security</summary><source url="https://download.opensuse.org/update/leap/15.6/sle" alias="repo-sle-update"/></update>
<update kind="package" name="vim" edition="9.1.0330-150500.20.12.1" arch="x86_64" edition-old="9.0.2103-150500.20.9.1"><summary>Vi IMproved</summary></update>
</update-list>
</update-status>
</stream>
"""
ZYPPER_PATCHES = """<?xml version='1.0'?>
<stream>
<update-status version="0.6">
<update-list>
<update kind="patch" name="openSUSE-SLE-15.6-2024-2211" edition="1" arch="noarch" status="needed" category="security" severity="important" pkgmanager="false" restart="false" interactive="false"><summary>Security update for openssl-3</summary></update>
<update kind="patch" name="openSUSE-SLE-15.6-2024-2001" edition="1" arch="noarch" status="needed" category="recommended" severity="low"><summary>Recommended update</summary></update>
</update-list>
</update-status>
</stream>
"""


def test_zypper_xml() -> None:
    assert zypper.parse_list_updates(ZYPPER_UPDATES) == ["openssl-3", "vim"]
    assert zypper.parse_security_patches(ZYPPER_PATCHES) == [("openSUSE-SLE-15.6-2024-2211", "important")]


def test_zypper_history_counts_update_commands_only() -> None:
    text = ("2024-05-01 10:00:00|command|root@pc|'zypper' 'in' 'vim'|\n"
            "2024-05-01 10:00:05|install|vim|9.1-1.1|x86_64|root@pc|repo-oss|abc|\n"
            "2024-05-03 08:00:00|command|root@pc|'zypper' '-n' 'dup'|\n"
            "2024-05-03 08:01:10|install|bash|5.2-1.1|x86_64||repo-oss|def|\n"
            "# 2024-05-03 08:01:10 bash-5.2-1.1.x86_64.rpm installed ok\n"
            "2024-05-04 09:00:00|command|root@pc|'zypper' 'in' 'htop'|\n"
            "2024-05-04 09:00:02|install|htop|3.3-1.1|x86_64|root@pc|repo-oss|ghi|\n")
    assert zypper.parse_history(text) == ("2024-05-03 08:01:10", "2024-05-04 09:00:02")


@pytest.mark.parametrize(("command", "counts"), [
    ("'zypper' '-n' 'dup'", True),
    ("'zypper' '--non-interactive' 'patch' '--category' 'security'", True),
    ("'zypper' 'up'", True),
    ("'zypper' 'in' 'patch'", False),  # issue 15: installs the package named "patch"
    ("'zypper' 'in' 'update-alternatives'", False),
    ("'zypper' 'up' 'vim'", False),  # named packages only
    ("'/usr/lib/YaST2/bin/y2start' 'online_update' 'qt' '-name' 'YaST2' '-icon' 'yast'", True),
    ("'/usr/lib/YaST2/bin/y2start' 'sw_single' 'qt'", False),
])
def test_zypper_update_commands(command: str, counts: bool) -> None:
    assert zypper.is_zypper_update(command) is counts


@pytest.mark.parametrize("text", ["", "not xml", "<stream><message type='error'>System management is locked</message></stream>",
                                  ZYPPER_UPDATES[:200]])
def test_zypper_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        zypper.parse_list_updates(text)


@pytest.mark.parametrize(("os_release", "available", "manager"), [
    ({"ID": "debian"}, {"apt-get": True, "dnf": True}, "apt"),  # dnf installed on Debian to build packages
    ({"ID": "ubuntu", "ID_LIKE": "debian"}, {"apt-get": True}, "apt"),
    ({"ID": "fedora"}, {"dnf": True, "yum": True}, "dnf"),
    ({"ID": "centos", "ID_LIKE": "rhel fedora"}, {"yum": True}, "yum"),
    ({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse"}, {"zypper": True, "rpm": True}, "zypper"),
    ({"ID": "linuxmint", "ID_LIKE": "ubuntu debian"}, {"apt-get": True}, "apt"),
    ({}, {"zypper": True}, "zypper"),
    ({"ID": "arch"}, {}, None),
])
def test_choose_manager(os_release: Dict[str, str], available: Dict[str, bool], manager: Optional[str]) -> None:
    assert linux.choose_manager(os_release, available) == manager


@pytest.mark.parametrize(("stdout", "rc", "error", "enabled"), [
    ("enabled\n", 0, None, True), ("disabled\n", 1, None, False), ("masked\n", 1, None, False),
    ("", 1, None, False), ("", None, NOT_FOUND, None),
])
def test_systemctl_is_enabled(stdout: str, rc: Optional[int], error: Optional[str], enabled: Optional[bool]) -> None:
    probe = ProbeResult("run", ("systemctl", "is-enabled", "x.timer"), stdout=stdout, rc=rc, error=error)
    assert parse_systemctl_is_enabled(probe) is enabled


# -- failed probes are errors naming the probe; garbage never crashes ----------------------------------------

class EditedHost(ReplayHost):
    """A replay where some probes answer differently."""

    def __init__(self, fixture: str, replace: Dict[str, ProbeResult]) -> None:
        super().__init__(Recording.load(FIXTURES / fixture))
        self.replace = replace

    def run(self, argv: Any, timeout: float = 15.0, cache_on: Any = ()) -> ProbeResult:
        for prefix, result in self.replace.items():
            if " ".join(argv).startswith(prefix):
                return result
        return super().run(argv, timeout, cache_on)


@pytest.mark.parametrize(("fixture", "prefix", "error", "named"), [
    ("debian-12/patches-current.json", "apt-get -s", NOT_FOUND, "apt-get -s -o Debug::NoLocking=1 dist-upgrade: command not found"),
    ("debian-12/patches-current.json", "apt-get -s", TIMEOUT, "dist-upgrade: timed out"),
    ("debian-12/patches-current.json", "apt-get -s", PERMISSION_DENIED, "dist-upgrade: permission denied"),
    ("fedora-40/patches-dnf-security-pending.json", "dnf -C -q check-update", NOT_FOUND, "dnf -C -q check-update: command not found"),
    ("fedora-40/patches-dnf-security-pending.json", "dnf -C -q updateinfo", TIMEOUT, "updateinfo list --security: timed out"),
])
def test_failed_probe_is_an_error_naming_it(fixture: str, prefix: str, error: str, named: str) -> None:
    failed = ProbeResult("run", tuple(prefix.split()), rc=None, error=error, timed_out=error == TIMEOUT, duration=180.0)
    # the failure names the probe with its full argv: rebuild it with the full argv of the replaced probe
    host = EditedHost(fixture, {})
    full = next(p.target for p in host.recording.probes.values() if " ".join(p.target).startswith(prefix))
    host.replace = {prefix: ProbeResult("run", full, rc=None, error=error, timed_out=failed.timed_out, duration=180.0)}
    outcome = run_collector(FAMILY, host)
    assert outcome.state == ERROR
    assert named in (outcome.reason or "")


def test_dnf_exit_1_is_an_error_with_dnf_words() -> None:
    host = EditedHost("fedora-40/patches-dnf-security-pending.json", {"dnf -C -q check-update": ProbeResult(
        "run", ("dnf", "-C", "-q", "check-update"), stderr="Error: Cache-only enabled but no cache for 'fedora'\n", rc=1)})
    outcome = run_collector(FAMILY, host)
    assert outcome.state == ERROR
    assert "no cache for 'fedora'" in (outcome.reason or "") and "makecache" in (outcome.reason or "")


def test_no_package_lists_is_an_error_not_everything_current() -> None:
    recording = Recording.load(FIXTURES / "debian-12/patches-current.json")
    host = ReplayHost(recording)
    key = next(k for k, p in recording.probes.items() if p.kind == "listdir" and p.target == ("/var/lib/apt/lists",))
    recording.probes[key] = ProbeResult("listdir", ("/var/lib/apt/lists",), stdout="lock\npartial")
    outcome = run_collector(FAMILY, host)
    assert outcome.state == ERROR and "apt update" in (outcome.reason or "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000), junk=st.text(max_size=80))
def test_truncated_or_garbage_simulation_never_crashes(cut: int, junk: str) -> None:
    recording = Recording.load(FIXTURES / "ubuntu-22.04/patches-security-both-pockets-phased-kept-back.json")
    key = next(k for k, p in recording.probes.items() if p.target[:2] == ("apt-get", "-s"))
    original = recording.probes[key]
    recording.probes[key] = ProbeResult("run", original.target, stdout=original.stdout[:cut] + junk)
    outcome = run_collector(FAMILY, ReplayHost(recording))
    assert outcome.state in (OK, ERROR)
    if outcome.state == OK:
        assert conform(FAMILY.spec, outcome.facts) == []
    else:
        assert outcome.reason


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(st.text(max_size=300), st.sampled_from(["", "\n", "ID | x\n", "[]", "<stream/>"])),
       which=st.sampled_from(["check-update", "updateinfo", "history", "zypper-updates", "zypper-patches", "policy"]))
def test_parsers_raise_only_parse_error(text: str, which: str) -> None:
    parsers = {
        "check-update": rpm.parse_check_update, "updateinfo": rpm.parse_updateinfo_security,
        "history": rpm.parse_history_last_upgrade, "zypper-updates": zypper.parse_list_updates,
        "zypper-patches": zypper.parse_security_patches, "policy": apt.parse_policy,
    }
    try:
        parsers[which](text)
    except ParseError as exc:
        assert str(exc)


# -- this machine: the truth, compared with apt's own answer --------------------------------------------------

APT_ENV = {"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _apt_security_from_simulation(out: str) -> set:
    """Packages apt-get -s would upgrade from a security archive, read without the agent's code."""
    names = set()
    for line in out.splitlines():
        if line.startswith("Inst ") and "[" in line.split()[2]:
            origins = line[line.index("(") + 1:line.rindex(")")]
            if re.search(r"-security\b", origins) or "Debian-Security" in origins:
                names.add(line.split()[1])
    return names


def _apt_list_upgradable_security(out: str) -> set:
    """Packages `apt list --upgradable` shows from a -security suite."""
    names = set()
    for line in out.splitlines():
        match = re.match(r"^([^/\s]+)/(\S+) ", line)
        if match and any(s.endswith("-security") for s in match.group(2).split(",")):
            names.add(match.group(1))
    return names


@pytest.fixture(scope="module")
def probe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One probe cache for the live tests: the first fills it, the warm-cycle test reads it."""
    return tmp_path_factory.mktemp("probe-cache")


@pytest.mark.skipif(shutil.which("apt-get") is None or not Path("/var/lib/dpkg/status").exists(),
                    reason="not an apt machine")
def test_this_machine_matches_apt(probe_cache: Path) -> None:
    for _attempt in range(2):
        # other work on the machine may install packages meanwhile: compare answers from the same dpkg state.
        before = Path("/var/lib/dpkg/status").stat().st_mtime_ns
        # apt's own listing runs beside the agent (a second process) to keep the test short
        listing = subprocess.Popen(["apt", "list", "--upgradable"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True, env=APT_ENV)
        host = RecordingHost(LiveHost(cache_dir=probe_cache))
        outcome = run_collector(FAMILY, host)
        listed = _apt_list_upgradable_security(listing.communicate(timeout=300)[0])
        # apt-get's real output, as apt printed it, read here with the test's own few lines of code
        raw = next(p for p in host.recording.probes.values() if p.target[:2] == ("apt-get", "-s"))
        simulated = _apt_security_from_simulation(raw.stdout)
        if Path("/var/lib/dpkg/status").stat().st_mtime_ns == before:
            break
    assert outcome.state == OK, outcome.reason
    facts = outcome.facts
    assert facts["package_manager"] == "apt"
    assert set(facts["pending_security_packages"]) == simulated
    assert facts["pending_security_updates"] == len(simulated) == len(listed)
    assert simulated == listed
    assert isinstance(facts["package_lists_age_days"], float)
    assert facts["reboot_required"] is Path("/var/run/reboot-required").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not an apt machine")
def test_warm_cycle_uses_the_cache(probe_cache: Path) -> None:
    for _attempt in range(3):
        # a package installed meanwhile (other work on a shared machine) rightly invalidates the cache
        before = Path("/var/lib/dpkg/status").stat().st_mtime_ns
        cold = run_collector(FAMILY, LiveHost(cache_dir=probe_cache))  # fills the cache if needed
        warm = CountingLiveHost(probe_cache)
        outcome = run_collector(FAMILY, warm)
        if Path("/var/lib/dpkg/status").stat().st_mtime_ns == before:
            break
    assert outcome.state == OK
    assert outcome.facts["pending_security_packages"] == cold.facts["pending_security_packages"]
    asked = [argv for argv in warm.asked if argv[:2] == ("apt-get", "-s")]
    assert asked, "the simulation was asked for"
    # answered from the cache on the inputs' mtimes: no apt-get process was started for it
    really_run = [argv for argv in warm.executed if argv[:2] == ("apt-get", "-s")]
    assert really_run == [], warm.executed


class CountingLiveHost(LiveHost):
    """A live host that notes which commands were asked for and which really started a process."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir=cache_dir)
        self.asked: List[Any] = []
        self.executed: List[Any] = []

    def run(self, argv: Any, timeout: float = 15.0, cache_on: Any = ()) -> ProbeResult:
        self.asked.append(tuple(argv))
        return super().run(argv, timeout, cache_on)

    def _run(self, target: Any, timeout: float) -> ProbeResult:
        self.executed.append(tuple(target))
        return super()._run(target, timeout)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not an apt machine")
def test_recording_of_this_machine_replays_identically(probe_cache: Path, tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "patches.json", LiveHost(cache_dir=probe_cache))
