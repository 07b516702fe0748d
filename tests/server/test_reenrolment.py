"""No device takeover: re-enrolling a known machine replaces it at once only with the old device key's
signature (or the org unit's same-org-unit setting); otherwise the new device waits for an admin."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from typing import Any, Optional

import pytest
import sqlalchemy as sa

from agent import protocol
from benchmarks.collector_sim import SimDevice
from server.store.schema import audit_log
from tests.server.conftest import Collector
from tests.web.conftest import csrf_of


def _again(device: SimDevice) -> SimDevice:
    """The same machine (machine id, host name) with a new key, as after a reinstall or by an impostor."""
    return dataclasses.replace(device, key=protocol.generate_private_key(), device_id=None, seq=0)


def _enrol(collector: Collector, device: SimDevice, token: str, proof: Optional[dict[str, str]] = None
           ) -> dict[str, Any]:
    body = device.enroll_body(token)
    if proof is not None:
        body["previous"] = proof
    response = collector.client.post("/api/v1/enroll", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    device.device_id = answer["device_id"]
    return dict(answer)


def _state(collector: Collector, device: SimDevice) -> str:
    return str(collector.admin("GET", f"/devices/{device.device_id}").json()["device"]["state"])


def _actions(collector: Collector, target: str) -> list[tuple[str, str]]:
    with collector.db.read() as conn:
        return [(r.action, r.outcome) for r in conn.execute(
            sa.select(audit_log.c.action, audit_log.c.outcome).where(audit_log.c.target == target)
            .order_by(audit_log.c.id))]


def test_unproven_reenrolment_waits_and_an_admin_approves(collector: Collector) -> None:
    old = collector.enroll()
    assert collector.send(old.report())["accepted"] == 1
    # any org unit's token: before, this pushed the laptop out of the fleet at once
    impostor = _again(old)
    answer = _enrol(collector, impostor, collector.enroll_token("Other"))
    assert answer["state"] == "pending" and answer["replaced"] is None
    assert _state(collector, old) == "active" and _state(collector, impostor) == "pending"
    assert collector.send(old.report())["accepted"] == 1, "the real laptop keeps reporting"
    refused = collector.send(impostor.report())["results"][0]
    assert refused["status"].startswith("rejected: device is pending") and "approve" in refused["reason"]
    policy = collector.client.get("/api/v1/policy", headers=impostor.signed_headers("GET", "/api/v1/policy"))
    assert policy.status_code == 403 and "pending" in policy.json()["detail"]
    assert ("device.enroll_conflict", "denied") in _actions(collector, str(impostor.device_id))
    listed = collector.admin("GET", "/devices", params={"state": "pending"}).json()
    assert [d["id"] for d in listed["items"]] == [impostor.device_id]

    viewer = collector.api_token(role="viewer")
    assert collector.admin("POST", f"/devices/{impostor.device_id}/approve", token=viewer).status_code == 403
    approved = collector.admin("POST", f"/devices/{impostor.device_id}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "active"
    assert _state(collector, old) == "replaced"
    assert collector.send(impostor.report())["accepted"] == 1
    assert "replaced" in collector.send(old.report())["results"][0]["reason"]
    assert ("device.replace", "ok") in _actions(collector, str(old.device_id))
    assert ("device.approve", "ok") in _actions(collector, str(impostor.device_id))
    assert collector.admin("POST", f"/devices/{impostor.device_id}/approve").status_code == 409


def test_rejected_reenrolment_leaves_the_old_device_alone(collector: Collector) -> None:
    old = collector.enroll()
    impostor = _again(old)
    _enrol(collector, impostor, collector.enroll_token())
    rejected = collector.admin("POST", f"/devices/{impostor.device_id}/reject")
    assert rejected.status_code == 200 and rejected.json()["state"] == "revoked"
    assert _state(collector, old) == "active"
    assert collector.send(old.report())["accepted"] == 1
    assert ("device.reject", "ok") in _actions(collector, str(impostor.device_id))


def test_reenrolment_signed_by_the_old_key_replaces_at_once(collector: Collector) -> None:
    old = collector.enroll()
    again = _again(old)
    assert old.device_id
    proof = protocol.reenrol_proof(old.key, old.device_id, protocol.public_key_b64(again.key))
    answer = _enrol(collector, again, collector.enroll_token("Elsewhere"), proof)
    assert answer["state"] == "active" and answer["replaced"] == old.device_id
    assert _state(collector, old) == "replaced"
    assert collector.send(again.report())["accepted"] == 1
    details = [json.loads(r) for r in _details(collector, str(old.device_id), "device.replace")]
    assert details == [{"replaced_by": again.device_id, "how": "previous_key"}]


def _details(collector: Collector, target: str, action: str) -> list[str]:
    with collector.db.read() as conn:
        return [str(d) for d in conn.execute(sa.select(audit_log.c.details).where(
            audit_log.c.target == target, audit_log.c.action == action)).scalars()]


def test_a_bad_or_stale_proof_does_not_count(collector: Collector) -> None:
    old = collector.enroll()
    assert old.device_id
    stranger = protocol.generate_private_key()
    for key, when in ((stranger, None), (old.key, time.time() - 3600)):
        again = _again(old)
        proof = protocol.reenrol_proof(key, old.device_id, protocol.public_key_b64(again.key), now=when)
        assert _enrol(collector, again, collector.enroll_token(), proof)["state"] == "pending"
        problem = json.loads(_details(collector, str(again.device_id), "device.enroll")[0])["proof_problem"]
        assert "re-enrolment proof" in problem
    # a proof over another public key (replayed from an earlier re-enrolment) does not count either
    again = _again(old)
    replayed = protocol.reenrol_proof(old.key, old.device_id, protocol.public_key_b64(stranger))
    assert _enrol(collector, again, collector.enroll_token(), replayed)["state"] == "pending"
    assert _state(collector, old) == "active"


def test_org_unit_setting_allows_replacement_within_that_org_unit_only(collector: Collector) -> None:
    old = collector.enroll(org_unit="Finance")
    setting = collector.admin("PUT", "/org-units/Finance/enrolment", json={"replace_within_org_unit": True})
    assert setting.status_code == 200
    from_other_unit = _again(old)
    assert _enrol(collector, from_other_unit, collector.enroll_token("HR"))["state"] == "pending"
    same_unit = _again(old)
    answer = _enrol(collector, same_unit, collector.enroll_token("Finance"))
    assert answer["state"] == "active" and answer["replaced"] == old.device_id
    assert json.loads(_details(collector, str(old.device_id), "device.replace")[0])["how"] == "org_unit_setting"
    assert collector.admin("PUT", "/org-units/Nowhere/enrolment",
                           json={"replace_within_org_unit": True}).status_code == 404


def test_dashboard_shows_the_conflict_and_an_admin_approves_it(collector: Collector,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    code, _out, err = collector.cli("user", "create", "--username", "dana", "--role", "admin", "--password-stdin")
    assert code == 0, err
    old = collector.enroll()
    impostor = _again(old)
    _enrol(collector, impostor, collector.enroll_token("Other"))
    page = collector.client.get("/login")
    signed_in = collector.client.post("/login", data={"username": "dana", "password": "a long enough passphrase",
                                                      "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert signed_in.status_code == 303
    old_page = collector.client.get(f"/devices/{old.device_id}").text
    assert str(impostor.device_id) in old_page and "device.enroll_conflict" in old_page
    pending_page = collector.client.get(f"/devices/{impostor.device_id}")
    assert 'id="pending-explain"' in pending_page.text and 'id="approve-button"' in pending_page.text
    refused = collector.client.post(f"/devices/{impostor.device_id}/approve", data={"csrf_token": "forged"},
                                    follow_redirects=False)
    assert refused.status_code == 403 and _state(collector, impostor) == "pending"
    approved = collector.client.post(f"/devices/{impostor.device_id}/approve",
                                     data={"csrf_token": csrf_of(pending_page.text)}, follow_redirects=False)
    assert approved.status_code == 303
    assert _state(collector, impostor) == "active" and _state(collector, old) == "replaced"
    after = collector.client.get(f"/devices/{impostor.device_id}").text
    assert "device.approve" in after and "device.replace" in after and 'id="approve-button"' not in after
