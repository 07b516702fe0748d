"""The policy assignment counter, real agent code against the real collector process: a replayed older
bundle of ANOTHER policy id (which the version check alone let through) is refused, and so are bundles
assigned to another device or stripped of their assignment."""

from __future__ import annotations

import json
from pathlib import Path

from agent import protocol
from agent.policy import baseline
from agent.service.core import AgentService
from tests.agent.service.conftest import make_settings
from tests.agent.service.realcollector import RealCollector
from tests.agent.service.test_reenrol import _enrol


def _push(collector: RealCollector, tmp_path: Path, policy_id: str, version: int) -> None:
    document = baseline().to_json()
    document.update(id=policy_id, version=version)
    path = tmp_path / f"{policy_id}-{version}.json"
    path.write_text(json.dumps(document))
    collector.cli("policy", "push", str(path))


def test_replayed_bundle_of_another_policy_id_is_refused(collector: RealCollector, tmp_path: Path,
                                                         replay_host: object) -> None:
    state = tmp_path / "agent"
    device_id, _ = _enrol(collector, state)
    first = json.loads((state / "policy.json").read_text())
    first_counter = protocol.open_assignment(first, protocol.load_public_key(
        json.loads((state / "identity.json").read_text())["server_key"]), device_id)
    assert isinstance(first_counter, int)
    other_state = tmp_path / "other-agent"
    _enrol(collector, other_state)  # same machine, pending: its bundle is assigned to another device id
    foreign = json.loads((other_state / "policy.json").read_text())

    service = AgentService(make_settings(state), host=replay_host)  # type: ignore[arg-type]
    try:
        _push(collector, tmp_path, "finance-telework", 1)
        collector.cli("policy", "assign", "--org-unit", "default", "finance-telework")
        outcome = service.refresh_policy()
        assert outcome.changed and service.policy.id == "finance-telework", outcome.message
        applied = (state / "policy.json").read_text()
        running = protocol.open_assignment(json.loads(applied), service.server_key, device_id)
        assert running is not None and running > first_counter

        # The enrolment bundle of the baseline: genuine, signed, another policy id, an older assignment.
        replay = service.apply_bundle(first)
        assert replay.error and "lower than the running" in replay.message, replay.message
        stripped = {k: v for k, v in first.items() if not k.startswith("assignment")}
        assert "no assignment counter" in service.apply_bundle(stripped).message
        assert "another device" in service.apply_bundle(foreign).message
        forged = dict(json.loads(applied), assignment_signature=first["assignment_signature"])
        assert "does not verify" in service.apply_bundle(forged).message
        assert service.policy.id == "finance-telework" and (state / "policy.json").read_text() == applied

        # A real newer assignment still goes through: back to the default policy, with a higher counter.
        collector.cli("policy", "assign", "--org-unit", "default")
        outcome = service.refresh_policy()
        assert outcome.changed and service.policy.id == baseline().id, outcome.message
    finally:
        service.close()
