"""Linux anti-malware: ClamAV signature age, EDR agents by process, and the truth about this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.antivirus import linux
from agent.checks.base import ERROR, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.probes import LiveHost, ProbeResult, Recording, ReplayHost
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["antivirus"]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


AGE = {"signature_source": "age", "signatures_up_to_date": None}
UNREPORTED = {"signature_source": "none", "signatures_up_to_date": None}

EXPECTED: List[Tuple[str, Dict[str, Any]]] = [
    ("ubuntu-22.04/antivirus-clamav-fresh.json", {
        "running": True, "realtime_protection": False, "signature_age_days": 0.61, **AGE,
        "products": [{"name": "ClamAV", "kind": "antivirus", "running": True, "realtime": False,
                      "signature_age_days": 0.61, "version": "daily 27457"}]}),
    ("debian-12/antivirus-clamav-stale.json", {
        "running": True, "realtime_protection": False, "signature_age_days": 34.0, **AGE,
        "products": [{"name": "ClamAV", "kind": "antivirus", "running": True, "realtime": False,
                      "signature_age_days": 34.0, "version": "daily 25784"}]}),
    ("ubuntu-24.04/antivirus-crowdstrike.json", {
        "running": True, "realtime_protection": None, "signature_age_days": None, **UNREPORTED,
        "products": [{"name": "CrowdStrike Falcon", "kind": "edr", "running": True, "realtime": None,
                      "signature_age_days": None, "version": None}]}),
    ("ubuntu-24.04/antivirus-wazuh-only.json",
     {"running": False, "realtime_protection": False, "signature_age_days": None, "products": [], **UNREPORTED}),
    ("fedora-40/antivirus-none.json",
     {"running": False, "realtime_protection": False, "signature_age_days": None, "products": [], **UNREPORTED}),
    ("debian-12/antivirus-none-vm.json",
     {"running": False, "realtime_protection": False, "signature_age_days": None, "products": [], **UNREPORTED}),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED, ids=[e[0].replace(".json", "") for e in EXPECTED])
def test_recorded_machines(fixture: str, expected: Dict[str, Any]) -> None:
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    assert outcome.facts == expected


def test_wazuh_is_named_but_not_counted() -> None:
    outcome = replay("ubuntu-24.04/antivirus-wazuh-only.json")
    assert any(line.startswith("Wazuh agent running (wazuh-agentd)") for line in outcome.evidence)
    assert any(line.startswith("no anti-malware process running; looked for: ClamAV") for line in outcome.evidence)


def test_stale_signature_evidence_names_the_database() -> None:
    outcome = replay("debian-12/antivirus-clamav-stale.json")
    assert any(line.startswith("/var/lib/clamav/daily.cvd: daily version 25784, built 2020-04-16 11:58 UTC")
               for line in outcome.evidence)


@pytest.mark.parametrize(("header", "version", "epoch"), [
    ("ClamAV-VDB:16 Apr 2020 07-58 -0400:25784:2267600:63:92ba:sig:raynman:1587038280", 25784, 1587038280.0),
    # older headers without the trailing epoch: the build time string decides
    ("ClamAV-VDB:16 Mar 2016 23-17 +0000:57:4218790:60:06386f34a16ebeea2733ab037f0536be:", 57, 1458170220.0),
], ids=["with-epoch", "date-only"])
def test_cvd_header(header: str, version: int, epoch: float) -> None:
    assert linux.parse_cvd_header(header.ljust(512)) == (version, epoch)


@pytest.mark.parametrize("text", ["", "\x1f\x8b\x08\x00 gzip", "ClamAV-VDB:garbage", "ClamAV-VDB:x:notanumber:1"])
def test_bad_cvd_header_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        linux.parse_cvd_header(text)


def test_mdatp_health_accepts_plain_and_wrapped_values() -> None:
    wrapped = linux.parse_mdatp_health(json.dumps({"healthy": True, "realTimeProtectionEnabled": {"value": False},
                                                   "definitionsUpdatedMinutesAgo": 2880, "appVersion": "101.1"}))
    assert wrapped == {"healthy": True, "realtime": False, "signature_age_days": 2.0, "version": "101.1"}
    with pytest.raises(ParseError):
        linux.parse_mdatp_health("[]")


def test_products_match_by_executable_path_when_names_are_truncated() -> None:
    names = linux.running_names([{"name": "falcon-sensor-b", "exe": "/opt/CrowdStrike/falcon-sensor-bpf",
                                  "cmdline": []}])
    falcon = next(p for p in linux.EDR_PRODUCTS if p.name == "CrowdStrike Falcon")
    assert linux.match_product(falcon, names) == ["falcon-sensor-b (/opt/CrowdStrike/falcon-sensor-bpf)",
                                                   "falcon-sensor-bpf (/opt/CrowdStrike/falcon-sensor-bpf)"]


# -- garbage never crashes ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600))
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (linux.parse_cvd_header, linux.parse_processes, linux.parse_mdatp_health):
        try:
            parse(text)
        except ParseError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=600))
def test_garbage_database_header_is_an_error_outcome(text: str) -> None:
    rec = Recording.load(FIXTURES / "ubuntu-22.04/antivirus-clamav-fresh.json")
    argv = ["head", "-c", "512", "/var/lib/clamav/daily.cld"]
    rec.probes[json.dumps(["run", argv])] = ProbeResult("run", tuple(argv), stdout=text)
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state in (OK, ERROR)
    if outcome.state == OK:
        assert text.strip("\x00 \n").startswith("ClamAV-VDB:")


def test_unreadable_process_list_is_an_error() -> None:
    rec = Recording(platform="linux", probes={})
    rec.probes[json.dumps(["processes", ["psutil"]])] = ProbeResult("processes", ("psutil",), stdout="[{")
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state == ERROR and "process list" in (outcome.reason or "")


# -- this machine ---------------------------------------------------------------------------------

def _known_names() -> set:
    names = {"clamd", "clamonacc"}
    for product in linux.EDR_PRODUCTS:
        names.update(product.process_names)
    return names


def test_this_machine_matches_an_independent_process_scan() -> None:
    independent = any(p.info["name"] in _known_names() for p in psutil.process_iter(["name"]))
    outcome = run_collector(FAMILY, LiveHost())
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["running"] is independent


@pytest.fixture()
def fake_clamd(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real process whose executable is called clamd (a copy of sleep): detection is by process."""
    binary = tmp_path / "clamd"
    sleep = shutil.which("sleep")
    assert sleep
    shutil.copy(sleep, binary)
    proc = subprocess.Popen([str(binary), "30"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and psutil.Process(proc.pid).name() != "clamd":
            time.sleep(0.01)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_running_clamd_is_seen_live(fake_clamd: subprocess.Popen) -> None:
    outcome = run_collector(FAMILY, LiveHost())
    assert outcome.state == OK, outcome.reason
    clamav = next(p for p in outcome.facts["products"] if p["name"] == "ClamAV")
    assert clamav["running"] is True and outcome.facts["running"] is True


def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "rec.json")
