"""Operating-system end of life: a dated support table and the support phase of this machine today.

Laptops have no internet access of their own, so the table is data: the agent ships the table below,
and a policy rule on ``os_identity`` may carry ``params: {lifecycle: [entries]}`` that replace
shipped entries with the same key (os, release, edition) and add new ones. The collector can thus
correct or extend the table through the signed policy without a new agent.

An entry: ``{os, release, edition?, name, supported_until, extended_until?, estimated?, source}``
- ``os``: the os_identity ``os_id`` (debian, ubuntu, fedora, rhel, centos, sles, opensuse-leap, macos,
  windows); ``also`` lists ids that follow the same dates (rocky, almalinux, ol follow rhel).
- ``release``: the version as os-release/sw_vers print it, compared on as many dotted parts as the
  entry has ("12" matches 12.7; "24.04" matches 24.04.1); Windows: the build number ("19045").
- ``edition`` (Windows only): consumer (Home, Pro, Pro Education, Pro for Workstations),
  enterprise (Enterprise, Education, IoT Enterprise) or ltsc.
- ``supported_until``: last day of regular security support; ``extended_until``: last day of the
  vendor's long-term phase (Debian LTS, Ubuntu ESM, RHEL maintenance is *regular* here because every
  subscription gets it; SUSE LTSS, Windows ESU); absent when there is none.
- ``estimated``: the vendor publishes no date (Apple): the date is derived from its practice.

Phases on a given day: ``supported`` up to supported_until, then ``extended`` up to extended_until,
then ``end_of_life``; a release the table does not know is ``unknown`` (never a guess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

SUPPORTED = "supported"
EXTENDED = "extended"
END_OF_LIFE = "end_of_life"
UNKNOWN = "unknown"
PHASES = (SUPPORTED, EXTENDED, END_OF_LIFE, UNKNOWN)
WINDOWS_EDITIONS = ("consumer", "enterprise", "ltsc")
ENTRY_KEYS = ("os", "also", "release", "edition", "name", "supported_until", "extended_until", "estimated",
              "source")

_DEBIAN = "https://wiki.debian.org/DebianReleases and https://wiki.debian.org/LTS"
_UBUNTU = "https://ubuntu.com/about/release-cycle"
_FEDORA = "https://docs.fedoraproject.org/en-US/releases/eol/"
_RHEL = "https://access.redhat.com/support/policy/updates/errata (end of maintenance support; ELS not counted)"
_SUSE = "https://www.suse.com/lifecycle/ (general support; LTSS as extended)"
_LEAP = "https://en.opensuse.org/Lifetime"
_APPLE = ("Apple publishes no dates; estimated: a macOS major release gets security updates until the release of "
          "the third newer major release (macOS 13's last update came with macOS 26 in September 2025)")
_WIN10 = ("https://learn.microsoft.com/lifecycle/products/windows-10-home-and-pro and .../windows-10-enterprise-and-"
          "education; extended = Extended Security Updates (enrolment or purchase required)")
_WIN11 = "https://learn.microsoft.com/lifecycle/products/windows-11-home-and-pro and .../windows-11-enterprise-and-education"
_LTSC = "https://learn.microsoft.com/lifecycle/products/ (Windows 10 Enterprise LTSC 2019 / 2021, Windows 11 LTSC 2024)"


def _e(os_id: str, release: str, name: str, supported: str, extended: Optional[str] = None, *,
       source: str, edition: Optional[str] = None, also: Sequence[str] = (), estimated: bool = False
       ) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"os": os_id, "release": release, "name": name, "supported_until": supported,
                             "source": source}
    if extended:
        entry["extended_until"] = extended
    if edition:
        entry["edition"] = edition
    if also:
        entry["also"] = list(also)
    if estimated:
        entry["estimated"] = True
    return entry


_RHEL_CLONES = ("rocky", "almalinux", "ol")

# Dates checked in December 2026 against the vendors' lifecycle pages named in each source.
DEFAULT_TABLE: Tuple[Dict[str, Any], ...] = (
    _e("debian", "10", "Debian 10 (buster)", "2022-09-10", "2024-06-30", source=_DEBIAN),
    _e("debian", "11", "Debian 11 (bullseye)", "2024-08-14", "2026-08-31", source=_DEBIAN),
    _e("debian", "12", "Debian 12 (bookworm)", "2026-06-10", "2028-06-30", source=_DEBIAN),
    _e("debian", "13", "Debian 13 (trixie)", "2028-08-09", "2030-06-30", source=_DEBIAN),
    _e("ubuntu", "18.04", "Ubuntu 18.04 LTS", "2023-05-31", "2028-04-30", source=_UBUNTU),
    _e("ubuntu", "20.04", "Ubuntu 20.04 LTS", "2025-05-31", "2030-04-30", source=_UBUNTU),
    _e("ubuntu", "22.04", "Ubuntu 22.04 LTS", "2027-06-30", "2032-04-30", source=_UBUNTU),
    _e("ubuntu", "24.04", "Ubuntu 24.04 LTS", "2029-05-31", "2034-04-30", source=_UBUNTU),
    _e("ubuntu", "24.10", "Ubuntu 24.10", "2025-07-10", source=_UBUNTU),
    _e("ubuntu", "25.04", "Ubuntu 25.04", "2026-01-15", source=_UBUNTU),
    _e("ubuntu", "25.10", "Ubuntu 25.10", "2026-07-09", source=_UBUNTU),
    _e("ubuntu", "26.04", "Ubuntu 26.04 LTS", "2031-05-31", "2036-04-30", source=_UBUNTU),
    _e("fedora", "39", "Fedora 39", "2024-11-26", source=_FEDORA),
    _e("fedora", "40", "Fedora 40", "2025-05-13", source=_FEDORA),
    _e("fedora", "41", "Fedora 41", "2025-12-15", source=_FEDORA),
    _e("fedora", "42", "Fedora 42", "2026-05-13", source=_FEDORA),
    _e("fedora", "43", "Fedora 43", "2026-12-09", source=_FEDORA, estimated=True),
    _e("fedora", "44", "Fedora 44", "2027-05-19", source=_FEDORA, estimated=True),
    _e("rhel", "7", "Red Hat Enterprise Linux 7", "2024-06-30", "2028-06-30", source=_RHEL),
    _e("rhel", "8", "Red Hat Enterprise Linux 8", "2029-05-31", "2032-05-31", source=_RHEL),
    _e("rhel", "9", "Red Hat Enterprise Linux 9", "2032-05-31", "2035-05-31", source=_RHEL),
    _e("rhel", "10", "Red Hat Enterprise Linux 10", "2035-05-31", "2038-05-31", source=_RHEL),
    # Clones follow the RHEL maintenance dates; their vendors sell no ELS, so no extended phase.
    _e("rocky", "8", "Rocky Linux 8", "2029-05-31", source=_RHEL, also=("almalinux", "ol")),
    _e("rocky", "9", "Rocky Linux 9", "2032-05-31", source=_RHEL, also=("almalinux", "ol")),
    _e("rocky", "10", "Rocky Linux 10", "2035-05-31", source=_RHEL, also=("almalinux", "ol")),
    _e("centos", "7", "CentOS Linux 7", "2024-06-30", source="https://www.centos.org/centos-linux-eol/"),
    _e("centos", "8", "CentOS Stream 8", "2024-05-31", source="https://www.centos.org/centos-stream/"),
    _e("centos", "9", "CentOS Stream 9", "2027-05-31", source="https://www.centos.org/centos-stream/"),
    _e("sles", "15.5", "SUSE Linux Enterprise 15 SP5", "2024-12-31", "2027-12-31", source=_SUSE),
    _e("sles", "15.6", "SUSE Linux Enterprise 15 SP6", "2025-12-31", "2028-12-31", source=_SUSE),
    _e("sles", "15.7", "SUSE Linux Enterprise 15 SP7", "2031-07-31", "2034-07-31", source=_SUSE),
    _e("opensuse-leap", "15.5", "openSUSE Leap 15.5", "2024-12-31", source=_LEAP),
    _e("opensuse-leap", "15.6", "openSUSE Leap 15.6", "2026-04-30", source=_LEAP),
    _e("opensuse-leap", "16.0", "openSUSE Leap 16.0", "2027-10-31", source=_LEAP),
    _e("macos", "12", "macOS 12 Monterey", "2024-09-16", source=_APPLE, estimated=True),
    _e("macos", "13", "macOS 13 Ventura", "2025-09-15", source=_APPLE, estimated=True),
    _e("macos", "14", "macOS 14 Sonoma", "2026-09-14", source=_APPLE, estimated=True),
    _e("macos", "15", "macOS 15 Sequoia", "2027-09-13", source=_APPLE, estimated=True),
    _e("macos", "26", "macOS 26 Tahoe", "2028-09-11", source=_APPLE, estimated=True),
    _e("windows", "19045", "Windows 10 22H2 (Home, Pro)", "2025-10-14", "2026-10-13", edition="consumer",
       source=_WIN10),
    _e("windows", "19045", "Windows 10 22H2 (Enterprise, Education)", "2025-10-14", "2028-10-10",
       edition="enterprise", source=_WIN10),
    _e("windows", "17763", "Windows 10 Enterprise LTSC 2019", "2029-01-09", edition="ltsc", source=_LTSC),
    _e("windows", "19044", "Windows 10 Enterprise LTSC 2021", "2027-01-12", edition="ltsc", source=_LTSC),
    _e("windows", "19044", "Windows 10 21H2 (Enterprise, Education)", "2024-06-11", edition="enterprise",
       source=_WIN10),
    _e("windows", "19044", "Windows 10 21H2 (Home, Pro)", "2023-06-13", edition="consumer", source=_WIN10),
    _e("windows", "22621", "Windows 11 22H2 (Home, Pro)", "2024-10-08", edition="consumer", source=_WIN11),
    _e("windows", "22621", "Windows 11 22H2 (Enterprise, Education)", "2025-10-14", edition="enterprise",
       source=_WIN11),
    _e("windows", "22631", "Windows 11 23H2 (Home, Pro)", "2025-11-11", edition="consumer", source=_WIN11),
    _e("windows", "22631", "Windows 11 23H2 (Enterprise, Education)", "2026-11-10", edition="enterprise",
       source=_WIN11),
    _e("windows", "26100", "Windows 11 24H2 (Home, Pro)", "2026-10-13", edition="consumer", source=_WIN11),
    _e("windows", "26100", "Windows 11 24H2 (Enterprise, Education)", "2027-10-12", edition="enterprise",
       source=_WIN11),
    _e("windows", "26100", "Windows 11 Enterprise LTSC 2024", "2029-10-09", edition="ltsc", source=_LTSC),
    _e("windows", "26200", "Windows 11 25H2 (Home, Pro)", "2027-10-12", edition="consumer", source=_WIN11),
    _e("windows", "26200", "Windows 11 25H2 (Enterprise, Education)", "2028-10-10", edition="enterprise",
       source=_WIN11),
)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RELEASE = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class Entry:
    os: str
    also: Tuple[str, ...]
    release: str
    edition: Optional[str]
    name: str
    supported_until: date
    extended_until: Optional[date]
    estimated: bool
    source: str

    @property
    def key(self) -> Tuple[str, str, Optional[str]]:
        return self.os, self.release, self.edition


def _day(value: Any, where: str) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{where}: expected a date like 2028-06-30, found {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {value!r} is not a calendar date") from exc


def parse_entry(raw: Any, where: str) -> Entry:
    """One table entry, checked; ValueError names the entry and the field that is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping with os, release, name, supported_until, found "
                         f"{type(raw).__name__}")
    unknown = [k for k in raw if k not in ENTRY_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; an entry has {', '.join(ENTRY_KEYS)}")
    os_id, release, name = raw.get("os"), raw.get("release"), raw.get("name")
    if not isinstance(os_id, str) or not re.fullmatch(r"[a-z0-9._-]+", os_id):
        raise ValueError(f"{where}: os must be an os-release style id such as debian or windows, found {os_id!r}")
    if not isinstance(release, str) or not _RELEASE.match(release):
        raise ValueError(f"{where}: release must be a quoted dotted version such as \"12\" or \"24.04\" (Windows: the "
                         f"build number, \"19045\"), found {release!r}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: name must be a non-empty text, found {name!r}")
    edition = raw.get("edition")
    if os_id == "windows" and edition not in WINDOWS_EDITIONS:
        raise ValueError(f"{where}: a Windows entry needs edition: one of {', '.join(WINDOWS_EDITIONS)}, "
                         f"found {edition!r}")
    if os_id != "windows" and edition is not None:
        raise ValueError(f"{where}: edition is for Windows entries only")
    also = raw.get("also", [])
    if not isinstance(also, list) or not all(isinstance(a, str) and a for a in also):
        raise ValueError(f"{where}: also must be a list of os ids, found {also!r}")
    supported = _day(raw.get("supported_until"), f"{where}.supported_until")
    extended = None
    if raw.get("extended_until") is not None:
        extended = _day(raw["extended_until"], f"{where}.extended_until")
        if extended < supported:
            raise ValueError(f"{where}: extended_until ({extended}) is before supported_until ({supported})")
    estimated = raw.get("estimated", False)
    if not isinstance(estimated, bool):
        raise ValueError(f"{where}: estimated must be true or false, found {estimated!r}")
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise ValueError(f"{where}: source must be a text, found {source!r}")
    return Entry(os=os_id, also=tuple(also), release=release, edition=edition, name=name.strip(),
                 supported_until=supported, extended_until=extended, estimated=estimated, source=source)


def parse_table(raw: Any, what: str = "lifecycle") -> List[Entry]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{what}: expected a non-empty list of entries, found {type(raw).__name__}")
    entries = [parse_entry(item, f"{what}[{index}]") for index, item in enumerate(raw)]
    seen: Dict[Tuple[str, str, Optional[str]], int] = {}
    for index, entry in enumerate(entries):
        if entry.key in seen:
            raise ValueError(f"{what}[{index}]: duplicates entry {seen[entry.key]} ({entry.os} {entry.release}"
                             f"{' ' + entry.edition if entry.edition else ''})")
        seen[entry.key] = index
    return entries


_DEFAULT_ENTRIES = parse_table(list(DEFAULT_TABLE), "agent lifecycle table")


def effective_table(overrides: Any) -> List[Entry]:
    """The shipped table with the policy's entries replacing those of the same key and adding others."""
    if overrides is None:
        return list(_DEFAULT_ENTRIES)
    policy_entries = parse_table(overrides, "os_identity.lifecycle")
    replaced = {entry.key for entry in policy_entries}
    return policy_entries + [entry for entry in _DEFAULT_ENTRIES if entry.key not in replaced]


def windows_edition(os_name: Optional[str], os_edition: Optional[str]) -> str:
    """consumer, enterprise or ltsc from the product name or edition (Windows 10 Enterprise LTSC 2021 ...)."""
    text = f"{os_name or ''} {os_edition or ''}".lower()
    if "ltsc" in text or "ltsb" in text or re.search(r"\benterprises\b", text):  # EditionID EnterpriseS: LTSC
        return "ltsc"
    if "enterprise" in text:
        return "enterprise"
    if "education" in text and "pro education" not in text:
        return "enterprise"
    return "consumer"


def _release_matches(release: str, version: str) -> bool:
    want = release.split(".")
    have = re.findall(r"\d+", version)
    return len(have) >= len(want) and [int(x) for x in have[:len(want)]] == [int(x) for x in want]


def find_entry(facts: Mapping[str, Any], table: Iterable[Entry]) -> Optional[Entry]:
    """The table entry describing the OS in ``facts`` (os_identity facts), or None."""
    os_id = str(facts.get("os_id") or "").lower()
    if not os_id:
        return None
    candidates = [e for e in table if e.os == os_id or os_id in e.also]
    if os_id == "windows":
        build = facts.get("os_build_number")
        if not isinstance(build, int) or isinstance(build, bool):
            return None
        edition = windows_edition(facts.get("os_name"), facts.get("os_edition"))
        for entry in candidates:
            if entry.release == str(build) and entry.edition == edition:
                return entry
        return None
    version = facts.get("os_version")
    if not isinstance(version, str):
        return None
    # The most specific release wins ("15.6" before "15").
    for entry in sorted(candidates, key=lambda e: -len(e.release.split("."))):
        if _release_matches(entry.release, version):
            return entry
    return None


def support_facts(facts: Mapping[str, Any], table: Iterable[Entry], now: float) -> Dict[str, Any]:
    """os_support_* facts for the OS in ``facts`` on the (UTC) day of ``now``."""
    entry = find_entry(facts, table)
    if entry is None:
        return {"os_support_phase": UNKNOWN, "os_support_release": None, "os_support_ends": None,
                "os_regular_support_ends": None, "os_support_days_left": None, "os_support_estimated": None}
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    ends = entry.extended_until or entry.supported_until
    if today <= entry.supported_until:
        phase = SUPPORTED
    elif entry.extended_until is not None and today <= entry.extended_until:
        phase = EXTENDED
    else:
        phase = END_OF_LIFE
    return {"os_support_phase": phase, "os_support_release": entry.name, "os_support_ends": ends.isoformat(),
            "os_regular_support_ends": entry.supported_until.isoformat(),
            "os_support_days_left": (ends - today).days, "os_support_estimated": entry.estimated}


def describe(support: Mapping[str, Any]) -> str:
    """One evidence line."""
    if support.get("os_support_phase") == UNKNOWN:
        return "support lifecycle: this release is not in the lifecycle table (phase unknown)"
    return (f"support lifecycle: {support['os_support_release']}: {support['os_support_phase']}, security updates "
            f"until {support['os_support_ends']} (regular support until {support['os_regular_support_ends']})"
            f"{', estimated dates' if support.get('os_support_estimated') else ''}")
