"""Updates on linux: which package manager, then its collector (apt.py, rpm.py, zypper.py).

The package manager is chosen from /etc/os-release (ID, ID_LIKE) first and only then from which
binaries exist: a Debian machine may well have ``rpm`` or even ``dnf`` installed for building packages.
A probe the verdict depends on (the simulation, check-update, list-updates) that is missing, denied or
times out makes the whole check an ``error`` naming it; a probe behind one secondary fact (reboot flag
helper, history log) leaves that fact null and says why in the evidence.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from agent.checks.base import CheckOutcome
from agent.checks.messages import message
from agent.checks.patches.apt import collect_apt
from agent.checks.patches.pkgcommon import CannotJudge, Findings, ProbeFailure, parse_os_release
from agent.checks.patches.rpm import collect_rpm
from agent.checks.patches.zypper import collect_zypper
from agent.probes import Host

CHECK = "patches"

_FAMILIES = (
    (("debian", "ubuntu", "linuxmint", "pop", "raspbian", "kali", "elementary", "zorin"), "apt"),
    (("fedora", "rhel", "centos", "rocky", "almalinux", "ol", "amzn", "nobara"), "rpm"),
    (("suse", "opensuse", "sles", "sled", "opensuse-leap", "opensuse-tumbleweed"), "zypper"),
)


def choose_manager(os_release: Mapping[str, str], available: Mapping[str, bool]) -> Optional[str]:
    """Pure: os-release fields and which binaries exist -> apt | dnf | yum | zypper | None."""
    ids = [os_release.get("ID", "").lower()] + os_release.get("ID_LIKE", "").lower().split()
    for names, family in _FAMILIES:
        if any(i in names for i in ids):
            if family == "apt" and available.get("apt-get"):
                return "apt"
            if family == "rpm":
                for binary in ("dnf", "yum"):
                    if available.get(binary):
                        return binary
            if family == "zypper" and available.get("zypper"):
                return "zypper"
    for binary in ("apt-get", "dnf", "yum", "zypper"):
        if available.get(binary):
            return "apt" if binary == "apt-get" else binary
    return None


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    release_probe = host.read_text("/etc/os-release")
    if release_probe.error is not None:
        release_probe = host.read_text("/usr/lib/os-release")
    os_release = parse_os_release(release_probe.stdout) if release_probe.error is None else {}
    available = {name: host.which(name) is not None for name in ("apt-get", "dnf", "yum", "zypper")}
    manager = choose_manager(os_release, available)
    if manager is None:
        return CheckOutcome.error(CHECK, message("patches_no_manager", looked_for=["apt-get", "dnf", "yum", "zypper"],
                                                 os_id=repr(os_release.get("ID", "unknown"))))
    now = host.now()
    try:
        findings: Findings
        if manager == "apt":
            findings = collect_apt(host, now)
        elif manager in ("dnf", "yum"):
            findings = collect_rpm(host, manager, now)
        else:
            findings = collect_zypper(host, now)
    except ProbeFailure as failure:
        return CheckOutcome.error(CHECK, failure.message)
    except CannotJudge as problem:
        return CheckOutcome.error(CHECK, problem.message)
    facts = dict(findings.facts)
    facts["os_version"] = os_release.get("VERSION_ID") or None
    security = facts.get("pending_security_updates")
    reason = (f"{facts.get('pending_updates')} updates pending ({security} security) via {manager}"
              if security is not None else None)
    return CheckOutcome(CHECK, reason=reason, facts=facts, evidence=findings.evidence)
