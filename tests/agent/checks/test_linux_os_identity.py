"""Linux OS identity: os-release per distribution, DMI traps, and the truth about this machine."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.os_identity import linux
from agent.probes import LiveHost, ProbeResult, Recording, ReplayHost
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["os_identity"]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


EXPECTED: List[Tuple[str, Dict[str, Any]]] = [
    ("ubuntu-22.04/os_identity-thinkpad.json", {
        "platform": "linux", "os_name": "Ubuntu", "os_id": "ubuntu", "os_version": "22.04", "os_edition": None,
        "kernel": "5.15.0-119-generic", "architecture": "x86_64", "hostname": "alice-x1",
        "machine_id": "5f2b8e1c9d4a4f0b8a7c6d5e4f3a2b1c", "serial": "PF2XK4LM",
        "hardware_model": "LENOVO ThinkPad X1 Carbon Gen 9", "virtual": False}),
    ("ubuntu-24.04/os_identity-not-root.json", {
        "platform": "linux", "os_name": "Ubuntu", "os_id": "ubuntu", "os_version": "24.04", "os_edition": None,
        "kernel": "6.8.0-45-generic", "architecture": "x86_64", "hostname": "latitude",
        "machine_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "serial": None,
        "hardware_model": "Dell Inc. Latitude 7440", "virtual": False}),
    ("fedora-40/os_identity-workstation-kvm.json", {
        "platform": "linux", "os_name": "Fedora Linux", "os_id": "fedora", "os_version": "40",
        "os_edition": "Workstation Edition", "kernel": "6.8.5-301.fc40.x86_64", "architecture": "x86_64",
        "hostname": "fedora", "machine_id": "c3f0a9e2b7d84e8f9a1b2c3d4e5f6a7b", "serial": None,
        "hardware_model": "QEMU Standard PC (Q35 + ICH9, 2009)", "virtual": True}),
    ("debian-12/os_identity-vm.json", {
        "platform": "linux", "os_name": "Debian GNU/Linux", "os_id": "debian", "os_version": "12", "os_edition": None,
        "kernel": "6.18.44-fc-v782", "architecture": "x86_64", "hostname": "vm",
        "machine_id": "3d1219c7c4c5404aaa1f6d2a48adfda4", "serial": None, "hardware_model": None, "virtual": True}),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED, ids=[e[0].replace(".json", "") for e in EXPECTED])
def test_recorded_machines(fixture: str, expected: Dict[str, Any]) -> None:
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    assert {k: v for k, v in outcome.facts.items() if not k.startswith("os_support") and
            k != "os_regular_support_ends"} == expected


@pytest.mark.parametrize(("fixture", "phase", "ends", "days_left"), [
    ("ubuntu-22.04/os_identity-thinkpad.json", "supported", "2032-04-30", 2881),
    ("fedora-40/os_identity-workstation-kvm.json", "supported", "2025-05-13", 372),
    # Recorded on 2026-11-29: Debian 12's regular support ended on 2026-06-10, LTS runs to 2028-06-30.
    ("debian-12/os_identity-vm.json", "extended", "2028-06-30", 579),
], ids=["ubuntu-22.04", "fedora-40", "debian-12-lts"])
def test_recorded_machines_support_phase_on_their_recording_day(fixture: str, phase: str, ends: str,
                                                                days_left: int) -> None:
    outcome = replay(fixture)
    assert (outcome.facts["os_support_phase"], outcome.facts["os_support_ends"],
            outcome.facts["os_support_days_left"]) == (phase, ends, days_left)
    assert any(line.startswith("support lifecycle: ") for line in outcome.evidence)


def test_unreadable_serial_is_null_with_evidence_not_an_error() -> None:
    outcome = replay("ubuntu-24.04/os_identity-not-root.json")
    assert outcome.state == OK and outcome.facts["serial"] is None
    assert "/sys/class/dmi/id/product_serial: not readable (needs root)" in outcome.evidence


@pytest.mark.parametrize(("text", "expected"), [
    ("To be filled by O.E.M.", None), ("Default string", None), ("  ", None), ("0", None),
    ("System Serial Number", None), ("PF2XK4LM\n", "PF2XK4LM"), ("5CG1234XYZ", "5CG1234XYZ"),
])
def test_dmi_placeholders_are_unknown(text: str, expected: Any) -> None:
    assert linux.clean_dmi(text) == expected


def test_os_release_quoting_and_comments() -> None:
    values = linux.parse_os_release("# comment\nNAME='Arch Linux'\nID=arch\nBUILD_ID=rolling\nbad line\n"
                                    'PRETTY_NAME="Arch \\"Linux\\""\n')
    assert values["NAME"] == "Arch Linux" and values["ID"] == "arch" and values["PRETTY_NAME"] == 'Arch "Linux"'


def test_rolling_release_uses_build_id() -> None:
    rec = Recording.load(FIXTURES / "debian-12/os_identity-vm.json")
    key = json.dumps(["read", ["/etc/os-release"]])
    rec.probes[key] = ProbeResult("read", ("/etc/os-release",), stdout='NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n')
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.facts["os_version"] == "rolling" and outcome.facts["os_id"] == "arch"


def test_missing_os_release_everywhere_is_an_error_naming_the_file() -> None:
    rec = Recording.load(FIXTURES / "debian-12/os_identity-vm.json")
    for path in linux.OS_RELEASE_PATHS:
        rec.probes[json.dumps(["read", [path]])] = ProbeResult("read", (path,), rc=None, error="not_found")
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state == ERROR
    assert outcome.reason == "no os-release file: /etc/os-release and /usr/lib/os-release are both missing"


# -- garbage never crashes ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (linux.parse_os_release, linux.parse_uname, linux.parse_machine_id, linux.clean_dmi):
        try:
            parse(text)
        except ParseError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200), st.text(max_size=60))
def test_garbage_probe_output_is_an_error_or_facts(os_release: str, uname: str) -> None:
    rec = Recording.load(FIXTURES / "debian-12/os_identity-vm.json")
    rec.probes[json.dumps(["read", ["/etc/os-release"]])] = ProbeResult("read", ("/etc/os-release",), stdout=os_release)
    argv = ["uname", "-n", "-r", "-m"]
    rec.probes[json.dumps(["run", argv])] = ProbeResult("run", tuple(argv), stdout=uname)
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state in (OK, ERROR)


# -- this machine ---------------------------------------------------------------------------------

def test_this_machine_matches_os_release_and_platform() -> None:
    outcome = run_collector(FAMILY, LiveHost())
    assert outcome.state == OK, outcome.reason
    release = platform.freedesktop_os_release()
    assert outcome.facts["os_id"] == release["ID"]
    assert outcome.facts["os_name"] == release["NAME"]
    assert outcome.facts["os_version"] == release.get("VERSION_ID", release.get("BUILD_ID"))
    assert outcome.facts["hostname"] == platform.node()
    assert outcome.facts["kernel"] == platform.release()
    assert outcome.facts["architecture"] == platform.machine()
    with open("/etc/machine-id", encoding="utf-8") as handle:
        assert outcome.facts["machine_id"] == handle.read().strip()


def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "rec.json")


def test_this_machine_support_phase_is_the_truth_for_today() -> None:
    """Dates written out here, not read from the table: Debian 12's regular security support ended on
    2026-06-10 and its LTS runs to 2028-06-30 (wiki.debian.org/LTS)."""
    from datetime import date, datetime, timezone
    outcome = run_collector(FAMILY, LiveHost())
    release = platform.freedesktop_os_release()
    facts = outcome.facts
    assert facts["os_support_phase"] in ("supported", "extended", "end_of_life", "unknown")
    if release["ID"] == "debian" and release.get("VERSION_ID") == "12":
        today = datetime.now(timezone.utc).date()
        want = "supported" if today <= date(2026, 6, 10) else "extended" if today <= date(2028, 6, 30) \
            else "end_of_life"
        assert facts["os_support_phase"] == want
        assert facts["os_support_ends"] == "2028-06-30" and facts["os_regular_support_ends"] == "2026-06-10"
        assert facts["os_support_days_left"] == (date(2028, 6, 30) - today).days
