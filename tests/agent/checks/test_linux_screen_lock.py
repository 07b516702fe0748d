"""Linux screen lock: logind sessions, GNOME/KDE/XFCE settings, and the truth about this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, NOT_APPLICABLE, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.screen_lock import linux
from agent.probes import LiveHost, ProbeResult, Recording, ReplayHost
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILY = REGISTRY["screen_lock"]


def replay(relative: str) -> Any:
    return replay_fixture(FAMILY, relative)


EXPECTED: List[Tuple[str, Dict[str, Any]]] = [
    ("ubuntu-22.04/screen_lock-gnome-locked.json",
     {"lock_enabled": True, "idle_delay_seconds": 300, "enforced_by_policy": False,
      "sessions": [("2", "alice", "ubuntu", True, 300)]}),
    ("ubuntu-24.04/screen_lock-gnome-unlocked.json",
     {"lock_enabled": False, "idle_delay_seconds": 0, "enforced_by_policy": False,
      "sessions": [("2", "bob", "ubuntu", False, 0)]}),
    ("fedora-40/screen_lock-gnome-enforced.json",
     {"lock_enabled": True, "idle_delay_seconds": 330, "enforced_by_policy": True,
      "sessions": [("3", "carol", "gnome", True, 330)]}),
]


@pytest.mark.parametrize(("fixture", "expected"), EXPECTED, ids=[e[0].replace(".json", "") for e in EXPECTED])
def test_recorded_sessions(fixture: str, expected: Dict[str, Any]) -> None:
    outcome = replay(fixture)
    assert outcome.state == OK, outcome.reason
    facts = dict(outcome.facts)
    facts["sessions"] = [(s["session"], s["user"], s["desktop"], s["lock_enabled"], s["idle_delay_seconds"])
                         for s in facts["sessions"]]
    assert facts == expected


@pytest.mark.parametrize("fixture", ["ubuntu-24.04/screen_lock-ssh-only.json", "debian-12/screen_lock-no-logind-vm.json"],
                         ids=["ssh-only", "no-logind-vm"])
def test_no_graphical_session_is_not_applicable(fixture: str) -> None:
    outcome = replay(fixture)
    assert outcome.state == NOT_APPLICABLE
    assert (outcome.reason or "").startswith("no graphical session")


def test_greeter_and_tty_sessions_are_skipped() -> None:
    outcome = replay("fedora-40/screen_lock-gnome-enforced.json")
    assert [s["user"] for s in outcome.facts["sessions"]] == ["carol"]
    assert any("Class=greeter" in line for line in outcome.evidence)


# -- constructed hosts: KDE, XFCE, failures -------------------------------------------------------

def _host(runs: Dict[Tuple[str, ...], Any], files: Dict[str, str]) -> ReplayHost:
    rec = Recording(platform="linux", probes={})
    for argv, answer in runs.items():
        if isinstance(answer, ProbeResult):
            probe = answer
        else:
            probe = ProbeResult("run", argv, stdout=answer)
        rec.probes[json.dumps(["run", list(argv)], ensure_ascii=False)] = probe
    for path, text in files.items():
        rec.probes[json.dumps(["read", [path]], ensure_ascii=False)] = ProbeResult("read", (path,), stdout=text)
    return ReplayHost(rec)


def _show(session: str) -> Tuple[str, ...]:
    argv = ["loginctl", "show-session", session]
    for prop in linux.SHOW_PROPERTIES:
        argv += ["-p", prop]
    return tuple(argv)


def _session_runs(desktop: str) -> Dict[Tuple[str, ...], Any]:
    return {("loginctl", "list-sessions", "--no-legend"): "4 1001 dave seat0 tty2\n",
            _show("4"): f"Name=dave\nDisplay=:0\nRemote=no\nDesktop={desktop}\nType=x11\nClass=user\nState=active\n",
            ("id", "-u"): "0\n",
            ("getent", "passwd", "dave"): "dave:x:1001:1001:Dave,,,:/home/dave:/bin/bash\n"}


def test_kde_session_reads_kscreenlockerrc_with_immutable_system_keys() -> None:
    user = "[Daemon]\nAutolock=false\nTimeout=30\n"
    system = "[Daemon][$i]\nAutolock=true\nTimeout=10\n"
    host = _host(_session_runs("KDE"), {"/home/dave/.config/kscreenlockerrc": user,
                                          "/etc/xdg/kscreenlockerrc": system})
    outcome = run_collector(FAMILY, host)
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["lock_enabled"] is True and outcome.facts["idle_delay_seconds"] == 600
    assert outcome.facts["enforced_by_policy"] is True


def test_xfce_session_reads_the_xfconf_channel() -> None:
    channel = """<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-screensaver" version="1.0">
  <property name="saver" type="empty">
    <property name="enabled" type="bool" value="true"/>
    <property name="idle-activation" type="empty">
      <property name="delay" type="int" value="12"/>
    </property>
  </property>
  <property name="lock" type="empty">
    <property name="enabled" type="bool" value="false"/>
  </property>
</channel>
"""
    host = _host(_session_runs("xfce"), {f"/home/dave/{linux.XFCE_CHANNEL}": channel})
    outcome = run_collector(FAMILY, host)
    assert outcome.state == OK, outcome.reason
    assert outcome.facts["lock_enabled"] is False and outcome.facts["sessions"][0]["idle_delay_seconds"] == 720


def test_gsettings_failure_is_an_error_naming_the_probe() -> None:
    runs = _session_runs("GNOME")
    argv = ("runuser", "-u", "dave", "--", "env", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1001/bus",
            "XDG_RUNTIME_DIR=/run/user/1001", "gsettings", "get", "org.gnome.desktop.screensaver", "lock-enabled")
    runs[argv] = ProbeResult("run", argv, rc=None, error="timeout", timed_out=True, duration=10.0)
    outcome = run_collector(FAMILY, _host(runs, {}))
    assert outcome.state == ERROR
    assert (outcome.reason or "") == " ".join(argv) + ": timed out after 10.0s"


def test_unknown_desktop_gives_unknown_not_a_verdict() -> None:
    outcome = run_collector(FAMILY, _host(_session_runs("i3"), {}))
    assert outcome.state == OK and outcome.facts["lock_enabled"] is None
    assert any("i3" in line for line in outcome.evidence)


@pytest.mark.parametrize(("values", "expected"), [
    ({"lock-enabled": True, "idle-delay": 300, "lock-delay": 0, "disable-lock-screen": False}, (True, 300)),
    ({"lock-enabled": True, "idle-delay": 300, "lock-delay": 60}, (True, 360)),
    ({"lock-enabled": True, "idle-delay": 0, "lock-delay": 0}, (False, 0)),
    ({"lock-enabled": True, "idle-delay": 300, "disable-lock-screen": True}, (False, 300)),
    ({"lock-enabled": False, "idle-delay": 900}, (False, 900)),
], ids=["defaults", "lock-delay-adds", "never-blanks", "lockdown-disables", "lock-off"])
def test_gnome_settings_table(values: Dict[str, Any], expected: Tuple[bool, int]) -> None:
    assert linux.gnome_settings(values) == expected


@pytest.mark.parametrize(("text", "value"), [("true", True), ("uint32 300", 300), ("0", 0), ("int32 5", 5)])
def test_gsettings_values(text: str, value: Any) -> None:
    assert linux.parse_gsettings_value(text + "\n", "k") == value


@pytest.mark.parametrize(("desktop", "family"), [
    ("ubuntu", "gnome"), ("GNOME-Classic:GNOME", "gnome"), ("KDE", "kde"), ("plasma", "kde"),
    ("xfce", "xfce"), ("i3", None), ("", None)])
def test_desktop_family(desktop: str, family: Any) -> None:
    assert linux.desktop_family(desktop) == family


def test_kscreenlockerrc_defaults_when_absent() -> None:
    assert linux.parse_kscreenlockerrc("") == {"Autolock": True, "Timeout": 5, "LockOnResume": True,
                                               "enforced": False}


# -- garbage never crashes ------------------------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parsers_raise_only_parse_error(text: str) -> None:
    parsers = (linux.parse_session_list, lambda t: linux.parse_properties(t, "x"),
               lambda t: linux.parse_gsettings_value(t, "k"), linux.parse_kscreenlockerrc,
               linux.parse_xfconf_channel, linux.parse_passwd_home)
    for parse in parsers:
        try:
            parse(text)
        except ParseError:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_garbage_gsettings_output_is_an_error_outcome(text: str) -> None:
    rec = Recording.load(FIXTURES / "ubuntu-22.04/screen_lock-gnome-locked.json")
    for key, probe in list(rec.probes.items()):
        if probe.target[-1:] == ("idle-delay",):
            rec.probes[key] = ProbeResult("run", probe.target, stdout=text)
    outcome = run_collector(FAMILY, ReplayHost(rec))
    assert outcome.state in (OK, ERROR)


# -- this machine ---------------------------------------------------------------------------------

def test_this_machine_has_no_graphical_session_and_says_so() -> None:
    display_servers = [p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"] in linux.DISPLAY_SERVERS]
    outcome = run_collector(FAMILY, LiveHost())
    if display_servers:
        pytest.skip(f"this machine runs a display server ({display_servers}); the CI VM does not")
    assert outcome.state == NOT_APPLICABLE, outcome.reason
    assert (outcome.reason or "").startswith("no graphical session")


def test_recording_of_this_machine_replays_identically(tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILY, tmp_path / "rec.json")
