"""The five checks of baseline v3 on Linux: recorded machines with their traps, parsers, and this machine's truth."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from agent.checks.base import ERROR, NOT_APPLICABLE, OK, ParseError, run_collector
from agent.checks.collectors import REGISTRY
from agent.checks.local_admin.linux import judge, parse_sudoers
from agent.checks.remote_access.linux import parse_ss
from agent.checks.secure_boot.linux import parse_efivar_flag, parse_mokutil
from agent.checks.time_sync.linux import parse_chronyc_tracking, parse_ntpq_peers
from agent.checks.wifi.linux import nm_security, parse_wpa_cli_status, split_terse
from agent.cli.check import run_check
from agent.cli.main import build_parser
from agent.policy import baseline, evaluate
from agent.probes import LiveHost, Recording
from tests.agent.checks.linux_recordings import FIXTURES, assert_live_recording_replays, replay_fixture

FAMILIES = {"local_admin": REGISTRY["local_admin"], "secure_boot": REGISTRY["secure_boot"],
            "remote_access": REGISTRY["remote_access"], "time_sync": REGISTRY["time_sync"], "wifi": REGISTRY["wifi"]}

RECORDED: List[Tuple[str, str, Dict[str, Any]]] = [
    ("local_admin", "debian-12/local_admin-wheel-without-rule.json",
     {"console_user": "amina", "is_admin": False, "admin_via": [],
      "limited_rules": ["sudoers: amina ALL=(root) NOPASSWD: /usr/bin/systemctl restart openvpn-client@corp"]}),
    ("local_admin", "ubuntu-24.04/local_admin-sudo-group.json",
     {"console_user": "amina", "is_admin": True, "admin_via": ["sudoers: %sudo\tALL=(ALL:ALL) ALL"]}),
    ("local_admin", "fedora-41/local_admin-not-root-wheel.json",
     {"console_user": "amina", "is_admin": True}),
    ("secure_boot", "ubuntu-24.04/secure_boot-enabled.json",
     {"firmware": "uefi", "secure_boot_enabled": True, "setup_mode": False, "source": "efivars"}),
    ("secure_boot", "fedora-41/secure_boot-setup-mode.json",
     {"firmware": "uefi", "secure_boot_enabled": False, "setup_mode": True}),
    ("secure_boot", "ubuntu-22.04/secure_boot-mokutil-disabled.json",
     {"firmware": "uefi", "secure_boot_enabled": False, "source": "mokutil"}),
    ("remote_access", "ubuntu-24.04/remote_access-ssh-socket-activated.json",
     {"exposed": True, "exposed_services": ["ssh"]}),
    ("remote_access", "ubuntu-22.04/remote_access-xrdp-and-local-ssh.json",
     {"exposed": True, "exposed_services": ["rdp"]}),
    ("time_sync", "ubuntu-24.04/time_sync-timesyncd.json",
     {"service": "systemd-timesyncd", "service_running": True, "synchronized": True}),
    ("time_sync", "fedora-41/time_sync-chrony-unsynchronised.json",
     {"service": "chronyd", "service_running": True, "synchronized": False, "source": None}),
    ("time_sync", "fedora-41/time_sync-chrony-synchronised.json",
     {"service": "chronyd", "synchronized": True, "source": "192.168.10.1", "offset_seconds": -0.000012345}),
    ("time_sync", "ubuntu-22.04/time_sync-ntpd.json",
     {"service": "ntpd", "synchronized": True, "source": "162.159.200.1", "offset_seconds": 0.000732}),
    ("wifi", "ubuntu-24.04/wifi-wpa2-enterprise.json",
     {"connected": True, "ssid": "MEF:Agents", "security": "wpa2", "enterprise": True, "encrypted": True,
      "interfaces": ["wlp0s20f3"]}),
    ("wifi", "fedora-41/wifi-open.json",
     {"connected": True, "ssid": "GARE-WIFI-GRATUIT", "security": "open", "encrypted": False}),
    ("wifi", "ubuntu-22.04/wifi-wep-wpa_cli.json",
     {"connected": True, "ssid": "VieuxRouteur", "security": "wep", "encrypted": False}),
    ("wifi", "ubuntu-24.04/wifi-not-connected.json",
     {"connected": False, "security": None, "encrypted": None}),
]


@pytest.mark.parametrize(("check", "fixture", "expected"), RECORDED,
                         ids=[f"{c}:{f.replace('.json', '')}" for c, f, _ in RECORDED])
def test_recorded_machines(check: str, fixture: str, expected: Dict[str, Any]) -> None:
    recording = Recording.load(FIXTURES / fixture)
    assert "sources:" in recording.note
    outcome = replay_fixture(FAMILIES[check], fixture)
    assert outcome.state == OK, outcome.reason
    for name, value in expected.items():
        assert outcome.facts[name] == value, name
    assert outcome.evidence


VERDICTS = {
    "debian-12/local_admin-wheel-without-rule.json": ("no-local-admin", "pass"),
    "ubuntu-24.04/local_admin-sudo-group.json": ("no-local-admin", "fail"),
    "fedora-41/local_admin-not-root-wheel.json": ("no-local-admin", "fail"),
    "ubuntu-22.04/local_admin-greeter.json": ("no-local-admin", "not_applicable"),
    "ubuntu-24.04/secure_boot-enabled.json": ("secure-boot", "pass"),
    "fedora-41/secure_boot-setup-mode.json": ("secure-boot", "fail"),
    "ubuntu-22.04/secure_boot-mokutil-disabled.json": ("secure-boot", "fail"),
    "ubuntu-24.04/remote_access-ssh-socket-activated.json": ("no-remote-access", "fail"),
    "ubuntu-22.04/remote_access-xrdp-and-local-ssh.json": ("no-remote-access", "fail"),
    "ubuntu-24.04/time_sync-timesyncd.json": ("time-sync", "pass"),
    "fedora-41/time_sync-chrony-unsynchronised.json": ("time-sync", "fail"),
    "fedora-41/time_sync-chrony-synchronised.json": ("time-sync", "pass"),
    "ubuntu-22.04/time_sync-ntpd.json": ("time-sync", "pass"),
}


@pytest.mark.parametrize(("fixture", "rule", "status"), [(f, r, s) for f, (r, s) in VERDICTS.items()],
                         ids=[f.replace(".json", "") for f in VERDICTS])
def test_check_replay_gives_the_rules_verdict(fixture: str, rule: str, status: str, tmp_path: Path) -> None:
    """`teleposture-agent check --json --replay FILE --only CHECK` with the bundled baseline."""
    check = fixture.split("/")[1].split("-")[0]
    out, err = io.StringIO(), io.StringIO()
    code = run_check(build_parser().parse_args(["check", "--json", "--replay", str(FIXTURES / fixture), "--only", check,
                                                "--state-dir", str(tmp_path / "state")]), out=out, err=err)
    document = json.loads(out.getvalue())
    assert {r["rule_id"]: r["status"] for r in document["results"]}[rule] == status, err.getvalue()
    assert code == (1 if status == "fail" else 0)


@pytest.mark.parametrize(("fixture", "vpn_up", "status"), [
    ("ubuntu-24.04/wifi-wpa2-enterprise.json", False, "pass"), ("fedora-41/wifi-open.json", False, "fail"),
    ("fedora-41/wifi-open.json", True, "not_applicable"), ("ubuntu-22.04/wifi-wep-wpa_cli.json", False, "fail"),
    ("ubuntu-24.04/wifi-not-connected.json", False, "not_applicable"),
], ids=["wpa2-enterprise", "open-no-vpn", "open-on-vpn", "wep-no-vpn", "not-connected"])
def test_wifi_verdicts_with_and_without_the_vpn(fixture: str, vpn_up: bool, status: str) -> None:
    outcome = replay_fixture(REGISTRY["wifi"], fixture)
    facts = {"wifi": outcome.to_json(), "vpn": {"state": "ok", "facts": {"tunnel_up": vpn_up}, "evidence": []}}
    results = {r.rule_id: r.status for r in evaluate(baseline(), facts, "linux", 1.7e9)}
    assert results["wifi-security"] == status


def test_greeter_only_means_no_console_user() -> None:
    outcome = replay_fixture(REGISTRY["local_admin"], "ubuntu-22.04/local_admin-greeter.json")
    assert outcome.state == NOT_APPLICABLE and "nobody is signed in" in (outcome.reason or "")


# -- parsers --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "groups", "admin"), [
    ("alice", ["alice", "sudo"], True), ("bob", ["bob"], True), ("eve", ["eve", "netops"], True),
    ("carol", ["carol", "wheel"], False), ("dave", ["dave"], True), ("root", ["root"], True),
    ("mallory", ["mallory", "notsudo"], False),
])
def test_sudoers_rules_table(user: str, groups: List[str], admin: bool) -> None:
    rules, aliases, includes = parse_sudoers(
        "# comment\nDefaults env_reset\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n"
        "User_Alias ADMINS = bob, %netops\nADMINS ALL = (root) NOPASSWD: ALL\n"
        "carol ALL=(root) /usr/bin/systemctl restart nginx, \\\n    /usr/bin/journalctl\n"
        "dave ALL=(ALL) NOPASSWD: /bin/ls : other = ALL\n!mallory ALL=(ALL) ALL\n#includedir /etc/sudoers.d\n")
    assert includes == ["dir:/etc/sudoers.d"]
    assert judge(user, groups, rules, aliases)[0] is admin


def test_sudoers_garbage_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_sudoers("justoneword=ALL\n")


@pytest.mark.parametrize(("text", "value"), [("\x07\x00\x00\x00\x01", True), ("\x06\x00\x00\x00\x00", False)])
def test_efivar_flag(text: str, value: bool) -> None:
    assert parse_efivar_flag(text, "SecureBoot") is value


@pytest.mark.parametrize("text", ["", "\x06\x00\x00\x00", "\x06\x00\x00\x00\x02", "garbage!"])
def test_efivar_garbage_is_an_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_efivar_flag(text, "SecureBoot")


def test_mokutil_states() -> None:
    assert parse_mokutil("SecureBoot enabled\n") is True
    assert parse_mokutil("SecureBoot disabled\nPlatform is in Setup Mode\n") is False
    assert parse_mokutil("EFI variables are not supported on this system\n") is None
    with pytest.raises(ParseError):
        parse_mokutil("Failed to read SecureBoot\n")


def test_ss_scope_and_wildcards() -> None:
    sockets = parse_ss('LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=611,fd=15))\n'
                       "LISTEN 0 128 0.0.0.0:2024 0.0.0.0:*\n")
    assert sockets == [{"address": "127.0.0.53%lo", "port": 53, "process": "systemd-resolve"},
                       {"address": "0.0.0.0", "port": 2024, "process": None}]
    with pytest.raises(ParseError):
        parse_ss("ESTAB 0 0 10.0.0.1:22 10.0.0.2:5555\n")


def test_chrony_and_ntpq_without_a_source() -> None:
    assert parse_chronyc_tracking("Reference ID    : 00000000 ()\nLeap status     : Not synchronised\n")[0] is False
    assert parse_ntpq_peers("     remote           refid      st t when poll reach   delay   offset  jitter\n"
                            "=====\n 10.0.0.1        .INIT.          16 u    -   64    0    0.000   +0.000   0.000\n"
                            ) == (False, None, None)
    with pytest.raises(ParseError):
        parse_chronyc_tracking("506 Cannot talk to daemon\n")


@pytest.mark.parametrize(("field", "security", "enterprise"), [
    ("", "open", False), ("--", "open", False), ("WEP", "wep", False), ("WPA1", "wpa", False),
    ("WPA1 WPA2", "wpa", False), ("WPA2 WPA3", "wpa2", False), ("WPA3", "wpa3", False),
    ("WPA2 802.1X", "wpa2", True), ("OWE", "owe", False),
])
def test_nmcli_security_field(field: str, security: str, enterprise: bool) -> None:
    assert nm_security(field) == (security, enterprise)


def test_nmcli_terse_escapes() -> None:
    assert split_terse("yes:a\\:b\\\\c:WPA2:wlan0") == ["yes", "a:b\\c", "WPA2", "wlan0"]


def test_wpa_cli_states() -> None:
    assert parse_wpa_cli_status("wpa_state=SCANNING\n") is None
    assert parse_wpa_cli_status("ssid=x\nkey_mgmt=SAE\nwpa_state=COMPLETED\n")["security"] == "wpa3"
    assert parse_wpa_cli_status("ssid=x\nkey_mgmt=WPA2/IEEE 802.1X/EAP\nwpa_state=COMPLETED\n")["enterprise"] is True


# -- this machine -------------------------------------------------------------------------------------

def _logind_sessions() -> bool:
    try:
        return subprocess.run(["loginctl", "list-sessions", "--no-legend"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip() != ""
    except FileNotFoundError:
        return False


def test_this_machine_local_admin() -> None:
    """No logind session and no desktop process here: nobody at the console, so not applicable."""
    outcome = run_collector(REGISTRY["local_admin"], LiveHost())
    desktop = subprocess.run(["pgrep", "-x", "gnome-shell|kwin_wayland|Xorg|Xwayland|sway"],
                             capture_output=True, check=False).returncode == 0
    if not _logind_sessions() and not desktop:
        assert outcome.state == NOT_APPLICABLE, outcome.reason
    else:
        assert outcome.state in (OK, NOT_APPLICABLE, ERROR)


def test_this_machine_secure_boot() -> None:
    outcome = run_collector(REGISTRY["secure_boot"], LiveHost())
    assert outcome.state == OK, outcome.reason
    if not os.path.exists("/sys/firmware/efi"):
        assert outcome.facts["firmware"] == "bios" and outcome.facts["secure_boot_enabled"] is False
    else:
        assert outcome.facts["firmware"] == "uefi"


def _listening_tcp() -> List[Tuple[str, int]]:
    """Listening TCP sockets read from /proc (not from ss, which the collector uses)."""
    found = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(path).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            address_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found


def test_this_machine_remote_access_matches_proc() -> None:
    outcome = run_collector(REGISTRY["remote_access"], LiveHost())
    assert outcome.state == OK, outcome.reason
    remote_ports = {22, 23, 139, 445, 3283, 3389, 5900, 5901, 5902, 5903}
    exposed_ports = {port for address, port in _listening_tcp()
                     if port in remote_ports and not ipaddress.ip_address(address).is_loopback}
    # This machine: nothing serves a remote login on a non-loopback address, so exposed is false here.
    assert outcome.facts["exposed"] is bool(exposed_ports), (exposed_ports, outcome.facts)


def test_this_machine_time_sync() -> None:
    outcome = run_collector(REGISTRY["time_sync"], LiveHost())
    assert outcome.state == OK, outcome.reason
    running = subprocess.run(["pgrep", "-x", "chronyd|ntpd|systemd-timesyn|openntpd"], capture_output=True,
                             check=False).returncode == 0
    assert outcome.facts["service_running"] is running
    if not running:
        assert outcome.facts["synchronized"] is False and outcome.facts["service"] is None


def test_this_machine_wifi() -> None:
    outcome = run_collector(REGISTRY["wifi"], LiveHost())
    wireless = [n for n in os.listdir("/sys/class/net") if os.path.exists(f"/sys/class/net/{n}/wireless")
                or os.path.exists(f"/sys/class/net/{n}/phy80211")]
    if not wireless:
        assert outcome.state == NOT_APPLICABLE and "no Wi-Fi interface" in (outcome.reason or "")
    else:
        assert outcome.state in (OK, ERROR)


@pytest.mark.parametrize("check", sorted(FAMILIES))
def test_recording_of_this_machine_replays_identically(check: str, tmp_path: Path) -> None:
    assert_live_recording_replays(FAMILIES[check], tmp_path / f"{check}.json")


def test_the_five_checks_in_the_cli_tell_this_machines_truth(tmp_path: Path) -> None:
    """`teleposture-agent check --json --only ...` as the employee would run it."""
    import sys
    agent = Path(sys.executable).parent / "teleposture-agent"
    proc = subprocess.run([str(agent), "check", "--json", "--only",
                           "local_admin,secure_boot,remote_access,time_sync,wifi,os_identity",
                           "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr
    document = json.loads(proc.stdout)
    by_rule = {r["rule_id"]: r["status"] for r in document["results"]}
    assert document["facts"]["os_identity"]["facts"]["os_support_phase"] in ("supported", "extended")
    if not os.path.exists("/sys/firmware/efi"):
        assert by_rule["secure-boot"] == "fail"
    assert by_rule["os-end-of-life"] in ("pass", "warn")
    assert set(by_rule) >= {"no-local-admin", "secure-boot", "no-remote-access", "time-sync", "wifi-security"}
