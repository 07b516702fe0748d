"""The README's main command, non-interactively: scripts/up.sh with TELEPOSTURE_UP_ONESHOT=1 ends with this
machine visible in the collector's admin API with its real check results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.agent.service.realcollector import ROOT, RealCollector, free_port

pytestmark = pytest.mark.slow


def test_up_sh_oneshot_shows_this_machine_in_the_collector(tmp_path) -> None:
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEPOSTURE_")}
    env.update({"TELEPOSTURE_UP_DIR": str(var), "TELEPOSTURE_UP_PORT": "0", "TELEPOSTURE_UP_ONESHOT": "1"})
    done = subprocess.run(["bash", str(ROOT / "scripts" / "up.sh")], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "delivered to http://127.0.0.1:" in out
    assert "up: dashboard      http://127.0.0.1:" in out and "up: password" in out
    credentials = (var / "admin-credentials.txt").read_text()
    assert oct((var / "admin-credentials.txt").stat().st_mode & 0o777) == "0o600"
    token = credentials.strip().splitlines()[-1]
    assert token in out  # printed for the user, and kept for re-runs

    # The collector stopped with the script; serve the same data directory again and look.
    collector = RealCollector.__new__(RealCollector)
    collector.data_dir, collector.port, collector.proc = var, free_port(), None
    collector.env = {k: v for k, v in env.items() if not k.startswith("TELEPOSTURE_")}
    collector.env["TELEPOSTURE_DATA_DIR"] = str(var)
    collector.admin_token = token
    collector.start()
    try:
        page = collector.api("/devices")
        mine = [d for d in page["items"] if d["hostname"] == socket.gethostname()]
        assert len(mine) == 1, page
        detail = collector.api(f"/devices/{mine[0]['id']}")
    finally:
        collector.stop()
    checks = {c["rule_id"]: c for c in detail["checks"]}
    # the same verdicts as a local check of this machine against the same (baseline) policy
    local = subprocess.run([sys.executable, "-m", "agent.cli", "check", "--json", "--state-dir",
                            str(var / "agent")], capture_output=True, text=True, timeout=120,
                           env=dict(env, TELEPOSTURE_CONFIG=""))
    results = json.loads(local.stdout)["results"]
    assert set(checks) == {r["rule_id"] for r in results}
    stable = {"disk-encryption", "firewall-enabled", "supported-os-version"}
    for result in results:
        if result["rule_id"] in stable:
            assert checks[result["rule_id"]]["status"] == result["status"], result["rule_id"]
    assert detail["device"]["platform"] == "linux"
