"""`enroll`, `report --now`, `status` as a user runs them (real processes, in-test collector)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

from tests.agent.service.conftest import agent_env


def _agent(env, *args, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "agent.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _files(root: Path) -> Dict[str, Tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_enroll_report_status_and_exit_codes(tmp_path, fake, recording) -> None:
    env = agent_env(tmp_path / "state")
    not_enrolled = _agent(env, "report", "--now", "--replay", str(recording))
    assert not_enrolled.returncode == 2 and "teleposture-agent enroll" in not_enrolled.stderr
    no_http = _agent(env, "enroll", "--server", fake.url, "--token", "t")
    assert no_http.returncode == 2 and "--allow-http" in no_http.stderr
    enrolled = _agent(env, "enroll", "--server", fake.url, "--token", "t", "--allow-http")
    assert enrolled.returncode == 0 and "enrolled as device dev-1" in enrolled.stdout

    delivered = _agent(env, "report", "--now", "--replay", str(recording))
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    assert "report seq 1 queued" in delivered.stdout and "delivered" in delivered.stdout
    assert fake.accepted == [1]

    fake.faults.extend([{"status": 503}] * 50)
    queued = _agent(env, "report", "--now", "--replay", str(recording), "--deadline", "1")
    assert queued.returncode == 1
    assert "queued but not delivered: upload: collector answered HTTP 503" in queued.stdout

    # no agent process runs now: `status` reads state.db and outbox.db and leaves every file as it was
    # (SQLite's read-only mode would create their -wal and -shm)
    before = _files(tmp_path / "state")
    status = _agent(env, "status", "--json")
    info = json.loads(status.stdout)
    assert info["device_id"] == "dev-1" and info["collector"] == fake.url
    assert info["policy"]["id"] == "ma-telework-baseline" and info["policy"]["source"] == "signed by the collector"
    assert info["last_cycle"]["seq"] == 2 and info["last_cycle"]["status"] in ("compliant", "not_compliant", "error")
    assert info["outbox"]["depth"] == 1 and info["outbox"]["dropped_total"] == 0
    assert info["last_upload_at"] and "503" in info["last_error"]["message"]

    text = _agent(env, "status").stdout
    for label in ("device", "collector", "policy", "last cycle", "outbox", "last upload", "last error"):
        assert f"\n{label}" in "\n" + text
    assert "1 report(s) queued" in text
    assert _files(tmp_path / "state") == before

    fake.faults.clear()
    again = _agent(env, "report", "--now", "--replay", str(recording))
    assert again.returncode == 0 and fake.accepted == [1, 2, 3]


def test_usage_errors_exit_2(tmp_path) -> None:
    env = agent_env(tmp_path / "state")
    assert _agent(env, "report").returncode == 2
    bad = _agent(dict(env, TELEPOSTURE_UPLOAD_BATCH="lots"), "status")
    assert bad.returncode == 2 and "TELEPOSTURE_UPLOAD_BATCH" in bad.stderr
    fresh = _agent(env, "status", "--json")
    assert fresh.returncode == 0 and json.loads(fresh.stdout)["enrolled"] is False


def _subcommands(parser, prefix=()):
    """Every subcommand path of an argparse parser, nested ones included (`policy validate`)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(child, (*prefix, name))


def test_help_of_every_subcommand_works(tmp_path) -> None:
    from agent.cli.main import build_parser

    commands = list(_subcommands(build_parser()))
    assert {("run",), ("enroll",), ("report",), ("status",), ("check",), ("policy", "validate")} <= set(commands)
    env = agent_env(tmp_path / "state")
    for command in [(), *commands]:
        done = _agent(env, *command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr and "usage: teleposture-agent" in done.stdout, command
