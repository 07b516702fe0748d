"""The helper scripts the packages share, run for real against a stand-in agent (no root): enrolment
from enroll.env (parsing, errors, the token kept off the command line, the file deleted only once
used) and the venv builder's refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from tests.installers.conftest import LINUX

ENROLL = LINUX / "teleposture-enroll"
FAKE_AGENT = """#!/bin/sh
# Stand-in for teleposture-agent: records how it was called, answers with $FAKE_RC.
{{
  printf 'argv:'; printf ' %s' "$@"; printf '\\n'
  printf 'token:%s\\n' "${{TELEPOSTURE_TOKEN:-}}"
  printf 'allow_http:%s\\n' "${{TELEPOSTURE_ALLOW_HTTP:-}}"
  printf 'ca_file:%s\\n' "${{TELEPOSTURE_CA_FILE:-}}"
}} > "{calls}"
exit "${{FAKE_RC:-0}}"
"""


@pytest.fixture
def machine(tmp_path: Path) -> Dict[str, Path]:
    state = tmp_path / "state"
    state.mkdir()
    calls = tmp_path / "calls.txt"
    agent = tmp_path / "agent"
    agent.write_text(FAKE_AGENT.format(calls=calls))
    agent.chmod(0o755)
    return {"env_file": tmp_path / "enroll.env", "state": state, "agent": agent, "calls": calls}


def enrol(machine: Dict[str, Path], agent_rc: int = 0) -> Tuple[int, str, Dict[str, str]]:
    env = {"PATH": os.environ["PATH"], "TELEPOSTURE_ENROLL_FILE": str(machine["env_file"]),
           "TELEPOSTURE_STATE_DIR": str(machine["state"]), "TELEPOSTURE_AGENT": str(machine["agent"]),
           "FAKE_RC": str(agent_rc)}
    result = subprocess.run(["sh", str(ENROLL)], env=env, capture_output=True, text=True, timeout=30)
    calls: Dict[str, str] = {}
    if machine["calls"].exists():
        for line in machine["calls"].read_text().splitlines():
            key, _, value = line.partition(":")
            calls[key] = value.strip()
    return result.returncode, result.stderr, calls


def test_no_file_nothing_to_do(machine: Dict[str, Path]) -> None:
    rc, err, calls = enrol(machine)
    assert (rc, err, calls) == (0, "", {})


def test_enrols_with_token_in_environment_and_deletes_file(machine: Dict[str, Path]) -> None:
    machine["env_file"].write_text("# from the MDM\nTELEPOSTURE_SERVER=https://posture.example.org\n"
                                   'TELEPOSTURE_TOKEN="tpe_secret-123"\n\nTELEPOSTURE_CA_FILE=\'/etc/ca.pem\'\n'
                                   "TELEPOSTURE_ALLOW_HTTP=1")  # no final newline: the last line still counts
    rc, err, calls = enrol(machine)
    assert rc == 0, err
    assert calls["argv"] == "enroll --server https://posture.example.org"
    assert calls["token"] == "tpe_secret-123" and "tpe_secret" not in calls["argv"]
    assert calls["ca_file"] == "/etc/ca.pem" and calls["allow_http"] == "1"
    assert not machine["env_file"].exists()
    assert "enrolled with https://posture.example.org" in err


def test_failed_enrolment_keeps_the_file_for_a_retry(machine: Dict[str, Path]) -> None:
    machine["env_file"].write_text("TELEPOSTURE_SERVER=https://posture.example.org\nTELEPOSTURE_TOKEN=t\n")
    machine["env_file"].chmod(0o644)  # dropped world-readable by a careless deployment tool
    rc, err, calls = enrol(machine, agent_rc=2)
    assert rc == 1
    assert calls["argv"].startswith("enroll")
    assert machine["env_file"].exists()
    kept = machine["env_file"].stat()
    assert kept.st_mode & 0o777 == 0o600, "the kept token is readable by its owner only"
    if os.geteuid() == 0:
        assert kept.st_uid == 0 and kept.st_gid == 0
    assert "kept, the service retries at its next start" in err


def test_enrolled_machine_ignores_and_deletes_token(machine: Dict[str, Path]) -> None:
    (machine["state"] / "identity.json").write_text("{}")
    (machine["state"] / "device_key.pem").write_text("key")
    machine["env_file"].write_text("TELEPOSTURE_SERVER=https://posture.example.org\nTELEPOSTURE_TOKEN=t\n")
    rc, err, calls = enrol(machine)
    assert rc == 0 and calls == {}
    assert not machine["env_file"].exists()
    assert "already enrolled" in err and "--force" in err


@pytest.mark.parametrize("content, message", [
    ("TELEPOSTURE_SERVER=https://x\n", "must set both TELEPOSTURE_SERVER and TELEPOSTURE_TOKEN"),
    ("TELEPOSTURE_TOKEN=t\n", "must set both TELEPOSTURE_SERVER and TELEPOSTURE_TOKEN"),
    ("TELEPOSTURE_SERVER=https://x\nTOKEN=t\n", "line 2: unknown key 'TOKEN'"),
    ("TELEPOSTURE_SERVER=https://x\nexport TELEPOSTURE_TOKEN t\n", "line 2: expected KEY=VALUE"),
    ("TELEPOSTURE_SERVER=$(touch /tmp/pwned)\nTELEPOSTURE_TOKEN=t\n", None),
])
def test_bad_files_are_refused_clearly(machine: Dict[str, Path], content: str, message: Optional[str]) -> None:
    machine["env_file"].write_text(content)
    rc, err, calls = enrol(machine)
    if message is None:
        # Parsed, never executed: the value reaches the agent as a literal string.
        assert rc == 0 and calls["argv"] == "enroll --server $(touch /tmp/pwned)"
        return
    assert rc == 1 and calls == {}
    assert message in err and "fix the file" in err
    assert machine["env_file"].exists()


def test_venv_builder_refuses_a_damaged_package(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    env = {"PATH": os.environ["PATH"], "TELEPOSTURE_PREFIX": str(tmp_path)}
    result = subprocess.run(["sh", str(LINUX / "teleposture-venv")], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"no teleposture wheel in {tmp_path}/wheels: the package is damaged, reinstall it." in result.stderr
    for name in ("teleposture-0.1.0-py3-none-any.whl", "teleposture-0.2.0-py3-none-any.whl"):
        (tmp_path / "wheels" / name).write_bytes(b"")
    result = subprocess.run(["sh", str(LINUX / "teleposture-venv")], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "several teleposture wheels" in result.stderr
    assert not (tmp_path / "venv").exists()


