"""The collector's ladder as the employee sees it: `status` and `check` show the deadlines an upload answer
brought, `privacy` shows what the last report sent (real agent processes, in-test collector)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.agent.service.conftest import agent_env


def _agent(env, *args, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "agent.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_status_check_and_privacy_show_what_the_employee_needs(tmp_path, fake, recording) -> None:
    env = {**agent_env(tmp_path / "state"), "TELEPOSTURE_NOTIFY": "false"}
    block_at = time.time() + 3 * 86400
    fake.actions = [{"rule_id": "disk-encryption", "severity": "critical", "started_at": time.time() - 60,
                     "step": 1, "steps": 3, "last_action": "notify_employee", "next_action": "notify_team",
                     "next_at": time.time() + 86400, "block_at": block_at, "blocked_since": None}]
    assert _agent(env, "enroll", "--server", fake.url, "--token", "t", "--allow-http").returncode == 0
    assert _agent(env, "report", "--now", "--replay", str(recording)).returncode == 0
    deadline = time.strftime("%Y-%m-%d %H:%M", time.localtime(block_at))

    status = _agent(env, "status")
    assert "failing disk-encryption" in status.stdout, status.stdout
    assert f"loses VPN access on {deadline}" in status.stdout and "next: notify_team on" in status.stdout
    info = json.loads(_agent(env, "status", "--json").stdout)
    assert info["noncompliance"][0]["rule_id"] == "disk-encryption"

    check = _agent(env, "check", "--only", "firewall", "--lang", "fr")
    assert "Échéances connues du collecteur" in check.stdout, check.stdout + check.stderr
    assert f"loses VPN access on {deadline}" in check.stdout
    as_json = json.loads(_agent(env, "check", "--only", "firewall", "--json").stdout)
    assert as_json["deadlines"]["items"][0]["block_at"] == block_at

    privacy = _agent(env, "privacy", "--lang", "fr")
    assert privacy.returncode == 0
    sent = fake.payloads[-1]
    assert "Ce que Teleposture envoie sur cet ordinateur" in privacy.stdout
    assert f"numéro {sent['seq']}" in privacy.stdout and "Jamais collecté" in privacy.stdout
    for check_id, outcome in sent["facts"].items():
        assert f"[{check_id}]" in privacy.stdout
        for name in (outcome.get("facts") or {}):
            assert f"    {name}: " in privacy.stdout
    assert json.loads(_agent(env, "privacy", "--json").stdout) == sent

    # The episode ended at the collector: the next answer's empty list clears what status shows.
    fake.actions = []
    assert _agent(env, "report", "--now", "--replay", str(recording)).returncode == 0
    assert "failing disk-encryption" not in _agent(env, "status").stdout


def test_privacy_before_any_report(tmp_path) -> None:
    env = agent_env(tmp_path / "state")
    shown = _agent(env, "privacy", "--lang", "ar")
    assert shown.returncode == 0 and "لم يُرسل أي تقرير" in shown.stdout and "لا يُجمع أبدا" in shown.stdout
