"""Forged, replayed and unauthorised requests: the right status code and nothing changed in the DB."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from agent import protocol
from benchmarks.collector_sim import SimDevice
from server.store import enrolment
from server.store.accounts import ensure_org_unit
from server.store.schema import audit_log
from tests.server.conftest import Collector, snapshot


def _reject_reason(collector: Collector, envelope: dict[str, str]) -> str:
    before = snapshot(collector.db)
    answer = collector.send(envelope)
    assert snapshot(collector.db) == before, "a refused envelope must change nothing"
    result = answer["results"][0]
    assert answer["rejected"] == 1 and result["status"].startswith("rejected: ")
    return str(result["reason"])


def test_forged_envelopes_are_rejected_and_change_nothing(collector: Collector) -> None:
    device, other = collector.enroll(), collector.enroll()
    collector.send(device.report())

    envelope = device.report()
    payload = json.loads(envelope["payload"])
    payload["facts"]["disk_encryption"]["facts"]["system_volume_encrypted"] = True
    tampered = {**envelope, "payload": protocol.canonical_json({**payload, "seq": payload["seq"] + 100})}
    assert _reject_reason(collector, tampered) == "bad signature"

    stranger_key = protocol.generate_private_key()
    wrong_key = protocol.seal(stranger_key, device.device_id, json.loads(device.report()["payload"])).to_json()
    assert _reject_reason(collector, wrong_key) == "bad signature"

    # Report for another device: the envelope names the other device but the key is ours ...
    ours = json.loads(device.report()["payload"])
    as_other = protocol.seal(device.key, other.device_id, {**ours, "device_id": other.device_id}).to_json()
    assert _reject_reason(collector, as_other) == "bad signature"
    # ... or the payload names the other device inside our own correctly signed envelope.
    inside = protocol.seal(device.key, device.device_id, {**ours, "device_id": other.device_id}).to_json()
    assert "differs" in _reject_reason(collector, inside)

    future = device.report(created_at=time.time() + 3600)
    assert "future" in _reject_reason(collector, future)

    unknown = SimDevice.numbered(500)
    unknown.device_id = "00000000-0000-4000-8000-000000000000"
    assert "unknown device" in _reject_reason(collector, unknown.report())

    assert "signature" in _reject_reason(collector, {**device.report(), "signature": "not base64!"})


def test_replayed_envelope_is_a_duplicate_with_no_effect(collector: Collector) -> None:
    device = collector.enroll()
    first = device.report()
    collector.send(first)
    collector.send(device.report())
    before = snapshot(collector.db)
    answer = collector.send(first)
    assert answer["results"][0]["status"] == "duplicate"
    assert snapshot(collector.db) == before


def test_revoked_device_is_refused_everywhere(collector: Collector) -> None:
    device = collector.enroll()
    collector.send(device.report())
    revoked = collector.admin("POST", f"/devices/{device.device_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    before = snapshot(collector.db)
    assert "revoked" in _reject_reason(collector, device.report())
    policy = collector.client.get("/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy"))
    assert policy.status_code == 403 and "revoked" in policy.json()["detail"]
    assert collector.admin("POST", f"/devices/{device.device_id}/revoke").status_code == 409
    assert snapshot(collector.db) == before


def test_expired_used_up_and_unknown_enrolment_tokens(collector: Collector) -> None:
    with collector.db.write() as conn:
        unit = ensure_org_unit(conn, "Finance")
        _id, expired, _ = enrolment.create_enroll_token(conn, unit, uses_allowed=None, lifetime=60,
                                                        created_by="test", now=time.time() - 120)
    single = collector.enroll_token(uses=1)
    collector.enroll(token=single)
    before = snapshot(collector.db)
    cases = [(expired, 403, "expired"), (single, 403, "used up"), ("tpe_" + "A" * 43, 401, "not recognised"),
             ("garbage", 401, "not recognised")]
    for token, status, words in cases:
        response = collector.client.post("/api/v1/enroll", json=SimDevice.numbered(7).enroll_body(token))
        assert response.status_code == status, (token, response.text)
        assert words in response.json()["detail"]
    bad_key = SimDevice.numbered(8).enroll_body(collector.enroll_token())
    before_bad_key = snapshot(collector.db)
    bad_key["public_key"] = "AAAA"
    assert collector.client.post("/api/v1/enroll", json=bad_key).status_code == 400
    assert snapshot(collector.db) == before_bad_key
    assert snapshot(collector.db, exclude=("enroll_tokens", "org_units", "audit_log")) == \
        {k: v for k, v in before.items() if k not in ("enroll_tokens", "org_units", "audit_log")}


def _audit_rows(collector: Collector) -> list[tuple[str, str, str]]:
    with collector.db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(audit_log.c.actor, audit_log.c.action, audit_log.c.outcome)
                                               .order_by(audit_log.c.id))]  # type: ignore[misc]


def test_viewer_cannot_act_and_the_attempt_is_audited(collector: Collector) -> None:
    device = collector.enroll()
    viewer = collector.api_token("viewer", name="analyst")
    assert collector.admin("GET", "/devices", token=viewer).json()["total"] == 1
    before = snapshot(collector.db, exclude=("audit_log", "api_tokens"))
    audit_before = _audit_rows(collector)
    attempts = [
        ("POST", f"/devices/{device.device_id}/revoke", {}),
        ("POST", "/enroll-tokens", {"json": {"org_unit": "Finance"}}),
        ("POST", "/policies", {"json": {"document": "{}"}}),
        ("PUT", "/policies/default", {"json": {"policy_id": "x"}}),
        ("PUT", "/org-units/Finance/policy", {"json": {"policy_id": None}}),
        ("DELETE", "/enroll-tokens/1", {}),
    ]
    for method, path, kwargs in attempts:
        response = collector.admin(method, path, token=viewer, **kwargs)
        assert response.status_code == 403, (path, response.text)
        assert "admin role" in response.json()["detail"]
    assert snapshot(collector.db, exclude=("audit_log", "api_tokens")) == before
    new_audit = _audit_rows(collector)[len(audit_before):]
    assert new_audit == [("token:analyst", f"{m} /api/v1/admin{p}", "denied") for m, p, _ in attempts]


def test_missing_or_bad_api_token(collector: Collector) -> None:
    before = snapshot(collector.db)
    assert collector.client.get("/api/v1/admin/devices").status_code == 401
    assert collector.admin("GET", "/devices", token="tpa_not-a-real-token").status_code == 401
    assert collector.client.post("/api/v1/admin/devices/x/revoke",
                                 headers={"Authorization": "Basic YTpi"}).status_code == 401
    assert snapshot(collector.db) == before


def test_token_scoped_to_another_org_unit_sees_and_changes_nothing(collector: Collector) -> None:
    finance = collector.enroll(org_unit="Finance")
    collector.send(finance.report())
    hr = collector.enroll(org_unit="HR")
    collector.send(hr.report())
    hr_admin = collector.api_token("admin", org_units=("HR",), name="hr-admin")
    listed = collector.admin("GET", "/devices", token=hr_admin).json()
    assert [d["id"] for d in listed["items"]] == [hr.device_id]
    summary = collector.admin("GET", "/summary", token=hr_admin).json()
    assert summary["devices"] == 1 and all(sum(c.values()) == 1 for c in summary["rules"].values())
    assert collector.admin("GET", "/devices", token=hr_admin, params={"org_unit": "Finance"}).json()["total"] == 0
    export = collector.admin("GET", "/devices/export", token=hr_admin, params={"format": "json"}).json()
    assert [d["id"] for d in export] == [hr.device_id]

    before = snapshot(collector.db, exclude=("audit_log",))
    assert collector.admin("GET", f"/devices/{finance.device_id}", token=hr_admin).status_code == 404
    assert collector.admin("GET", f"/devices/{finance.device_id}/history", token=hr_admin).status_code == 404
    assert collector.admin("POST", f"/devices/{finance.device_id}/revoke", token=hr_admin).status_code == 404
    created = collector.admin("POST", "/enroll-tokens", token=hr_admin, json={"org_unit": "Finance"})
    assert created.status_code == 403 and "own org units" in created.json()["detail"]
    assert collector.admin("PUT", "/org-units/Finance/policy", token=hr_admin,
                           json={"policy_id": None}).status_code == 404
    push = collector.admin("POST", "/policies", token=hr_admin, json={"document": "{}"})
    assert push.status_code == 403
    assert snapshot(collector.db, exclude=("audit_log",)) == before
    finance_ids = {t["id"] for t in collector.admin("GET", "/enroll-tokens").json() if t["org_unit"] == "Finance"}
    visible = {t["id"] for t in collector.admin("GET", "/enroll-tokens", token=hr_admin).json()}
    assert finance_ids and not finance_ids & visible
    audit_entries = collector.admin("GET", "/audit", token=hr_admin).json()["items"]
    assert audit_entries and all(e["org_unit_id"] is not None for e in audit_entries)
