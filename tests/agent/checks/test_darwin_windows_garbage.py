"""Garbage never crashes the macOS and Windows collectors: bad output is a ParseError (an error result
naming what was expected), and whatever they do report conforms to the check's declaration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, List, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.antivirus import darwin as av_mac
from agent.checks.antivirus import windows as av_win
from agent.checks.base import OUTCOME_STATES, CheckOutcome, ParseError
from agent.checks.collectors import REGISTRY
from agent.checks.declarations import conform
from agent.checks.disk_encryption import darwin as de_mac
from agent.checks.disk_encryption import windows as de_win
from agent.checks.firewall import darwin as fw_mac
from agent.checks.firewall import windows as fw_win
from agent.checks.os_identity import darwin as os_mac
from agent.checks.os_identity import windows as os_win
from agent.checks.patches import darwin as pa_mac
from agent.checks.patches import windows as pa_win
from agent.checks.screen_lock import darwin as sl_mac
from agent.checks.screen_lock import windows as sl_win
from agent.checks.vpn import darwin as vpn_mac
from agent.checks.vpn import windows as vpn_win
from agent.probes import DEFAULT_TIMEOUT, ProbeResult, Recording, ReplayHost

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PARAMS = {"vpn": {"corporate_networks": ["203.0.113.0/24", "198.51.100.0/24"]}}

TEXT_PARSERS: List[Callable[[str], Any]] = [
    os_mac.parse_sw_vers, os_mac.parse_hardware, os_mac.parse_ioreg, de_mac.parse_fdesetup, de_mac.parse_data_device,
    lambda t: de_mac.parse_apfs_volume(t, "disk3s5"), vpn_mac.parse_nc_list, vpn_mac.parse_netstat_default,
    vpn_mac.parse_route_get, lambda t: pa_mac.parse_list(t, "14.5"), lambda t: pa_mac.parse_prefs(t, t),
    pa_mac.parse_install_history, fw_mac.parse_global_state, fw_mac.parse_alf_defaults, fw_mac.parse_switch,
    sl_mac.parse_screen_lock, sl_mac.parse_idle_time, sl_mac.parse_display_sleep, lambda t: sl_mac.parse_managed([t]),
    av_mac.parse_xprotect_version, av_mac.parse_mtime,
    os_win.parse_version, os_win.parse_hardware, de_win.parse_volumes,
    lambda t: de_win.facts_from_volumes(de_win.parse_volumes(t)), fw_win.parse_profiles,
    lambda t: fw_win.facts_from_profiles(fw_win.parse_profiles(t)), sl_win.parse_settings,
    lambda t: av_win.parse_defender(t, 1.7e9), av_win.parse_security_center, vpn_win.parse_adapters,
    vpn_win.parse_profiles, vpn_win.parse_routes, vpn_win.parse_find_route, pa_win.parse_history,
    pa_win.parse_hotfixes, pa_win.parse_pending, pa_win.parse_state,
]

# JSON-shaped and plist-shaped garbage reaches deeper than random characters.
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.sampled_from(["Name", "MountPoint", "VolumeType", "VolumeStatus",
                                                               "ProtectionStatus", "Enabled", "User", "Desktop",
                                                               "productState", "Date", "Title", "ResultCode",
                                                               "CurrentBuild", "InterfaceAlias", "Categories",
                                                               "SPHardwareDataType", "Containers", "Volumes"]),
                                             children, max_size=5),
                           max_leaves=12)
garbage = st.one_of(st.text(max_size=300), json_values.map(json.dumps),
                    st.text(max_size=40).map(lambda t: f"<?xml version=\"1.0\"?><plist><dict><key>{t}</key>"))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=garbage, index=st.integers(min_value=0, max_value=len(TEXT_PARSERS) - 1))
def test_parsers_raise_only_parse_errors(text: str, index: int) -> None:
    try:
        TEXT_PARSERS[index](text)
    except ParseError as exc:
        assert "expected" in str(exc)


class CorruptingHost(ReplayHost):
    """A recorded machine whose answers hypothesis mangles: truncated, replaced, failed or timed out."""

    def __init__(self, recording: Recording, data: st.DataObject) -> None:
        super().__init__(recording)
        self.data = data

    def _answer(self, kind: str, target: Sequence[str]) -> ProbeResult:
        real = super()._answer(kind, target)
        how = self.data.draw(st.sampled_from(["keep", "truncate", "replace", "fail", "error"]))
        if how == "keep":
            return real
        if how == "truncate":
            cut = self.data.draw(st.integers(min_value=0, max_value=max(len(real.stdout), 0)))
            return ProbeResult(real.kind, real.target, stdout=real.stdout[:cut], stderr=real.stderr, rc=real.rc)
        if how == "replace":
            return ProbeResult(real.kind, real.target, stdout=self.data.draw(garbage), rc=0)
        if how == "fail":
            return ProbeResult(real.kind, real.target, stderr=self.data.draw(st.text(max_size=80)),
                               rc=self.data.draw(st.integers(min_value=1, max_value=255)))
        return ProbeResult(real.kind, real.target, rc=None, duration=DEFAULT_TIMEOUT,
                           error=self.data.draw(st.sampled_from(["timeout", "not_found", "permission_denied"])))


RECORDINGS = [FIXTURES / "darwin/15-apple-silicon/baseline.json", FIXTURES / "darwin/13-intel/baseline.json",
              FIXTURES / "windows/11-24h2-fr/baseline.json", FIXTURES / "windows/10-22h2/baseline.json"]


@pytest.mark.parametrize("path", RECORDINGS, ids=[f"{p.parent.parent.name}-{p.parent.name}" for p in RECORDINGS])
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_collectors_survive_mangled_probes(path: Path, data: st.DataObject) -> None:
    recording = Recording.load(path)
    for check_id, family in REGISTRY.items():
        host = CorruptingHost(recording, data)
        collector = family.collectors[recording.platform]
        try:
            outcome = collector(host, PARAMS.get(check_id, {}))
        except ParseError as exc:
            assert "expected" in str(exc)
            continue
        assert isinstance(outcome, CheckOutcome) and outcome.state in OUTCOME_STATES
        if outcome.state == "ok":
            assert conform(family.spec, outcome.facts) == []
        else:
            assert outcome.reason
