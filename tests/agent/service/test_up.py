"""The README's main command, non-interactively: scripts/up.sh with TELEPOSTURE_UP_ONESHOT=1 ends with this
machine visible in the collector's admin API with its real check results."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess

import pytest

from benchmarks.loopback import free_port
from tests.agent.service.realcollector import AGENT, ROOT, RealCollector

pytestmark = pytest.mark.slow


def _os_release_version() -> str:
    for line in open("/etc/os-release", encoding="utf-8"):
        if line.startswith("VERSION_ID="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One non-interactive run of the main command on a fresh data directory (shared by the tests here)."""
    var = tmp_path_factory.mktemp("up") / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEPOSTURE_")}
    env.update({"TELEPOSTURE_UP_DIR": str(var), "TELEPOSTURE_UP_PORT": "0", "TELEPOSTURE_UP_ONESHOT": "1"})
    done = subprocess.run(["bash", str(ROOT / "scripts" / "up.sh")], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"var": var, "env": env, "out": done.stdout}


def test_up_sh_oneshot_shows_this_machine_in_the_collector(first_run) -> None:
    var, env, out = first_run["var"], first_run["env"], first_run["out"]
    assert "delivered to http://127.0.0.1:" in out
    assert "up: dashboard      http://127.0.0.1:" in out and "up: password" in out
    assert "up: collector stopped" in out
    credentials = var / "admin-credentials.txt"
    assert credentials.stat().st_mode & 0o777 == 0o600
    token = credentials.read_text().strip().splitlines()[-1]
    assert token in out  # printed for the user, and kept for re-runs

    # what the agent itself concluded in that cycle
    agent_status = json.loads(subprocess.run(
        [AGENT, "status", "--json", "--state-dir", str(var / "agent")], capture_output=True, text=True,
        timeout=60, env=dict(env, TELEPOSTURE_CONFIG="")).stdout)
    device_id = agent_status["device_id"]

    # The collector stopped with the script: serve the same data directory again and look.
    collector = RealCollector.__new__(RealCollector)
    collector.data_dir, collector.port, collector.proc = var, free_port(), None
    collector.env = {k: v for k, v in env.items() if not k.startswith("TELEPOSTURE_")}
    collector.env["TELEPOSTURE_DATA_DIR"] = str(var)
    collector.admin_token = token
    collector.start()
    try:
        page = collector.api("/devices")
        detail = collector.api(f"/devices/{device_id}")
    finally:
        collector.stop()
    assert [d["id"] for d in page["items"]] == [device_id]
    device = detail["device"]
    assert device["hostname"] == socket.gethostname()
    assert device["platform"] == platform.system().lower()
    assert device["os_version"] == _os_release_version()
    # the collector judged the live facts with the same baseline policy and reached the agent's verdicts
    checks = {c["rule_id"]: c["status"] for c in detail["checks"]}
    counts: dict = {}
    for status in checks.values():
        counts[status] = counts.get(status, 0) + 1
    assert counts == agent_status["last_cycle"]["counts"]
    failing = sorted(rule for rule, status in checks.items() if status in ("fail", "error"))
    assert failing == sorted(agent_status["last_cycle"]["failing"])


def _processes_using(path: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(path in part for part in proc.info.get("cmdline") or []):
            found.append(proc.info["pid"])
    return found


def test_up_sh_rerun_then_ctrl_c_stops_agent_and_collector(first_run) -> None:
    import signal
    import time

    var, env = first_run["var"], dict(first_run["env"])
    credentials = (var / "admin-credentials.txt").read_text()

    # a re-run reuses var/: same admin, same device; then the service runs until Ctrl-C
    env.pop("TELEPOSTURE_UP_ONESHOT")
    # SIGINT as a terminal's shell leaves it: a suite started in the background (`pytest &`) runs with
    # SIGINT ignored, and bash cannot trap a signal ignored when it starts
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "up.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "running the agent service" in line:
                break
        time.sleep(1.0)
        assert _processes_using(str(var)), "agent and collector should be running"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "delivered to" in out and "enrolled as device" not in out  # the same device, not a new one
    assert "users exist already" in out
    assert (var / "admin-credentials.txt").read_text() == credentials
    assert "up: collector stopped" in out
    deadline = time.monotonic() + 10
    while _processes_using(str(var)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_using(str(var)) == []
