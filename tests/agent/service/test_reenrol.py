"""Re-enrolment from the agent side, real processes: `enroll --force` on an enrolled machine signs with the
old key and replaces the old device at once; a fresh state directory on a known machine waits for approval."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.agent.service.conftest import agent_env
from tests.agent.service.realcollector import AGENT, RealCollector


def _enrol(collector: RealCollector, state: Path, *extra: str) -> tuple[str, str]:
    done = subprocess.run([AGENT, "enroll", "--server", collector.url, "--token", collector.token(), "--allow-http",
                           *extra], env=agent_env(state), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads((state / "identity.json").read_text())["device_id"], done.stdout


def _state(collector: RealCollector, device_id: str) -> str:
    return str(collector.api(f"/devices/{device_id}")["device"]["state"])


def test_force_reenrol_signs_with_the_old_key_and_a_stranger_waits(collector: RealCollector, tmp_path: Path) -> None:
    first, out = _enrol(collector, tmp_path / "laptop")
    assert "pending" not in out and _state(collector, first) == "active"
    # Same machine (this host's machine id), no old key: an impostor, or a wiped state directory.
    stranger, out = _enrol(collector, tmp_path / "other-state")
    assert _state(collector, stranger) == "pending" and _state(collector, first) == "active"
    assert "enrolment pending" in out and "administrator must approve" in out
    # The laptop re-enrolling itself: the old key signs, the old device is replaced at once.
    second, out = _enrol(collector, tmp_path / "laptop", "--force")
    assert second != first and "pending" not in out
    assert _state(collector, second) == "active" and _state(collector, first) == "replaced"
    assert collector.api(f"/devices/{first}")["device"]["replaced_by"] == second
