"""Issue 15: a failed probe is unknown (null or error), never an empty fact; and the macOS/Windows fixtures
answer literal command lines, so a collector whose command changes fails its replay."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from agent.checks._windows_batch import expand_batches
from agent.checks.base import ERROR, OK, run_collector
from agent.checks.collectors import REGISTRY, collect
from agent.checks.firewall import darwin as firewall_darwin
from agent.checks.firewall import windows as firewall_windows
from agent.checks.local_admin import windows as local_admin_windows
from agent.checks.remote_access import windows as remote_access_windows
from agent.checks.secure_boot import windows as secure_boot_windows
from agent.probes import PERMISSION_DENIED, ProbeResult, Recording, ReplayHost

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
NETWORKS = {"corporate_networks": ["203.0.113.0/24", "198.51.100.0/24"]}
DENIED = ProbeResult("processes", ("psutil",), rc=None, error=PERMISSION_DENIED, detail="psutil.AccessDenied")


def _without_processes(recording: Recording) -> Recording:
    recording.probes[json.dumps(["processes", ["psutil"]])] = DENIED
    return recording


def _failing_run(recording: Recording, needle: str) -> Recording:
    """The recording with the one command containing ``needle`` failing (exit 1, an error on stderr)."""
    keys = [key for key, probe in recording.probes.items() if probe.kind == "run" and needle in " ".join(probe.target)]
    assert len(keys) == 1, keys
    probe = recording.probes[keys[0]]
    recording.probes[keys[0]] = ProbeResult("run", probe.target, stderr=f"{needle} : Invalid operation\r\n", rc=1)
    return recording


def test_windows_vpn_listing_failures_are_unknown_not_none() -> None:
    recording = expand_batches(Recording.load(FIXTURES / "windows" / "11-24h2-fr" / "baseline.json"))
    recording = _without_processes(_failing_run(recording, "Get-VpnConnection -AllUserConnection"))
    outcome = run_collector(REGISTRY["vpn"], ReplayHost(recording), NETWORKS)
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["configured_vpn_services"] is None  # was [] ("no profile configured")
    assert outcome.facts["vpn_clients"] is None  # was [] ("no client running")
    assert any("VPN profiles unavailable" in line for line in outcome.evidence)


def test_macos_vpn_listing_failures_are_unknown_not_none() -> None:
    recording = Recording.load(FIXTURES / "darwin" / "14-apple-silicon" / "baseline.json")
    recording = _without_processes(_failing_run(recording, "scutil --nc list"))
    outcome = run_collector(REGISTRY["vpn"], ReplayHost(recording), NETWORKS)
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["configured_vpn_services"] is None
    assert outcome.facts["vpn_clients"] is None


def test_windows_antimalware_unknown_when_nothing_runs_and_processes_cannot_be_listed() -> None:
    """Defender passive, Security Center naming only it, no process list: an EDR may run unseen."""
    recording = expand_batches(Recording.load(FIXTURES / "windows" / "11-24h2-fr" / "third-party-antivirus.json"))
    key = next(k for k, p in recording.probes.items() if "SecurityCenter2" in " ".join(p.target))
    probe = recording.probes[key]
    recording.probes[key] = ProbeResult("run", probe.target, stdout=json.dumps(
        {"displayName": "Windows Defender", "productState": 393472, "pathToSignedProductExe": "windowsdefender://",
         "timestamp": "Thu, 21 Nov 2024 08:12:44 GMT"}) + "\n")
    outcome = run_collector(REGISTRY["antivirus"], ReplayHost(_without_processes(recording)))
    assert outcome.state == ERROR and outcome.facts == {}
    assert "process" in (outcome.reason or "").lower()


@pytest.mark.parametrize(("check", "module", "constant", "old", "new"), [
    ("firewall", firewall_windows, "PROFILES_PS", "ActiveStore", "PersistentStore"),
    ("local_admin", local_admin_windows, "ADMIN_PS", "-SID S-1-5-32-544", "-Name Administrators"),
    ("secure_boot", secure_boot_windows, "SECURE_BOOT_PS", "-ErrorAction Stop", "-ErrorAction Continue"),
    ("remote_access", remote_access_windows, "LISTEN_PS", "-State Listen", "-State Established"),
], ids=["firewall", "local_admin", "secure_boot", "remote_access"])
def test_a_changed_windows_pipeline_fails_its_replay(monkeypatch: pytest.MonkeyPatch, check: str, module: ModuleType,
                                                     constant: str, old: str, new: str) -> None:
    recording = Recording.load(FIXTURES / "windows" / "10-22h2" / "baseline.json")
    assert collect(ReplayHost(recording), [check], {})[check].state == OK
    pipeline = getattr(module, constant)
    assert old in pipeline
    monkeypatch.setattr(module, constant, pipeline.replace(old, new))
    outcome = collect(ReplayHost(recording), [check], {})[check]
    assert outcome.state == ERROR and "not present in the recording" in (outcome.reason or "")


def test_a_changed_macos_command_fails_its_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    recording = Recording.load(FIXTURES / "darwin" / "14-apple-silicon" / "baseline.json")
    monkeypatch.setattr(firewall_darwin, "GLOBAL_STATE", [*firewall_darwin.GLOBAL_STATE, "--verbose"])
    outcome = run_collector(REGISTRY["firewall"], ReplayHost(recording))
    assert outcome.state == ERROR and "not present in the recording" in (outcome.reason or "")


@pytest.mark.parametrize("generator", ["darwin", "windows"])
def test_fixture_generators_spell_commands_instead_of_importing_them(generator: str) -> None:
    source = (FIXTURES / generator / "_make.py").read_text(encoding="utf-8")
    for family in ("antivirus", "disk_encryption", "firewall", "os_identity", "patches", "screen_lock", "vpn",
                   "local_admin", "secure_boot", "remote_access", "time_sync", "wifi"):
        assert f"from agent.checks.{family} import" not in source, family
