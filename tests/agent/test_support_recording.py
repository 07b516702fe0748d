"""Support recordings (docs/support-recordings.md): only the process fields the parsers read, file 0600,
and the verdicts a replay gives are the live ones."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import probes
from agent.checks.antivirus import linux as antivirus_linux
from agent.checks.vpn import linux as vpn_linux
from agent.probes import (
    LiveHost,
    ProbeResult,
    RecordingHost,
    ReplayHost,
    minimal_process_row,
    minimal_processes,
)


def _processes(rows: list[dict[str, object]]) -> ProbeResult:
    return ProbeResult("processes", ("psutil",), stdout=json.dumps(rows))


ROWS = [
    {"pid": 10, "name": "bash", "exe": "/usr/bin/bash", "username": "root",
     "cmdline": ["bash", "/usr/bin/wg-quick", "up", "wg0"]},
    {"pid": 11, "name": "openvpn", "exe": "/usr/sbin/openvpn", "username": "root",
     "cmdline": ["/usr/sbin/openvpn", "--config", "/home/amina/secret-office.ovpn", "--auth-user-pass", "pw.txt"]},
    {"pid": 12, "name": "pppd", "exe": "/usr/sbin/pppd", "username": "root",
     "cmdline": ["/usr/sbin/pppd", "pty", "pptp vpn.example.org --nolaunchpppd", "user", "amina", "password", "hunter2"]},
    {"pid": 13, "name": "pppd", "exe": "/usr/sbin/pppd", "username": "root",
     "cmdline": ["/usr/sbin/pppd", "call", "provider"]},
    {"pid": 14, "name": "python3", "exe": "/usr/bin/python3.11", "username": "amina",
     "cmdline": ["/usr/bin/python3", "/opt/tool/agent.py", "--token", "s3cr3t"]},
    {"pid": 15, "name": "clamd", "exe": "/usr/sbin/clamd", "username": "clamav",
     "cmdline": ["/usr/sbin/clamd", "--foreground=true"]},
    {"pid": 16, "name": "firefox", "exe": "/usr/lib/firefox/firefox", "username": "amina",
     "cmdline": ["/usr/lib/firefox/firefox", "https://intranet.example.org/payslip?id=4411"]},
]


def test_minimal_rows_keep_only_what_parsers_read() -> None:
    kept = [minimal_process_row(r) for r in ROWS]
    assert all(set(row) == {"name", "exe", "cmdline"} for row in kept)
    assert [row["cmdline"] for row in kept] == [
        ["bash", "/usr/bin/wg-quick"], ["/usr/sbin/openvpn"], ["/usr/sbin/pppd", "pptp"], ["/usr/sbin/pppd"],
        ["/usr/bin/python3", "/opt/tool/agent.py"], ["/usr/sbin/clamd"], ["/usr/lib/firefox/firefox"]]
    text = json.dumps(kept)
    for secret in ("hunter2", "amina", "s3cr3t", "payslip", "secret-office", "vpn.example.org"):
        assert secret not in text


def test_parsers_see_the_same_in_the_minimal_list() -> None:
    full, minimal = _processes(ROWS), minimal_processes(_processes(ROWS))
    assert vpn_linux.parse_vpn_processes(minimal.stdout) == vpn_linux.parse_vpn_processes(full.stdout) == [
        "openvpn", "pppd (vpn)", "wireguard"]
    assert antivirus_linux.running_names(antivirus_linux.parse_processes(minimal.stdout)) == \
        antivirus_linux.running_names(antivirus_linux.parse_processes(full.stdout))


@pytest.mark.parametrize("word", probes.PPPD_VPN_WORDS)
def test_every_pppd_word_kept_is_one_the_vpn_parser_recognises(word: str) -> None:
    row: dict[str, object] = {"name": "pppd", "exe": "/usr/sbin/pppd", "cmdline": ["/usr/sbin/pppd", "plugin", f"{word}-x.so", "secret"]}
    minimal = minimal_processes(_processes([row]))
    assert json.loads(minimal.stdout)[0]["cmdline"] == ["/usr/sbin/pppd", word]
    assert vpn_linux.parse_vpn_processes(minimal.stdout) == ["pppd (vpn)"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads this Linux machine's real process list")
def test_real_recording_is_0600_and_holds_no_arguments(tmp_path: Path) -> None:
    secret = f"tp-secret-{os.getpid()}"
    sleeper = subprocess.Popen(["sh", "-c", "sleep 30", secret])
    try:
        time.sleep(0.2)
        host = RecordingHost(LiveHost())
        live = host.processes()
        assert secret in live.stdout, "the live check sees the full list"
        path = tmp_path / "support.json"
        Path(str(path) + ".tmp").write_text("left over")
        os.chmod(str(path) + ".tmp", 0o644)
        host.recording.save(path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert secret not in text and '"pid"' not in text and '"username"' not in text
    rows = json.loads(ReplayHost(probes.Recording.load(path)).processes().stdout)
    assert rows and all(set(r) == {"name", "exe", "cmdline"} and len(r["cmdline"]) <= 2 for r in rows if r["name"] != "pppd")
    assert ["sh", "-c"] in [r["cmdline"] for r in rows]
