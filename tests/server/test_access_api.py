"""Access decisions through the collector's HTTP API: upload answers, gates, agents, admins."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from agent import protocol
from benchmarks.collector_sim import Posture
from gate import decision as tokens
from server.actions import ladder
from server.store import access as store
from server.store.ingest_sql import Driver
from server.store.schema import device_blocks, metadata
from tests.server.conftest import Collector

FP = "a1" * 32
OTHER_FP = "b2" * 32


def server_key(collector: Collector):
    enrolled = collector.client.get("/api/v1/health")  # any call; the key comes from the data dir
    assert enrolled.status_code == 200
    from server.context import load_server_key
    return tokens.public_jwk(load_server_key(collector.settings).public_key())


def gate_token(collector: Collector, name: str = "vpn1") -> str:
    code, out, err = collector.cli("gate-token", "create", name)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("collector public key")
    return lines[-1]


def test_upload_answers_carry_a_signed_decision_when_the_report_changed_something(collector: Collector) -> None:
    key = server_key(collector)
    device = collector.enroll()
    answer = collector.send(device.report())
    access = answer["access"][device.device_id]
    assert access["decision"] == "allow" and access["causes"] == []
    verified = tokens.verify(access["token"], key, now=time.time())
    assert verified.device_id == device.device_id and verified.allowed
    assert verified.expires_at - verified.issued_at == 900  # default lifetime: 15 min

    device.posture = Posture(disk_encrypted=False)
    answer = collector.send(device.report())
    access = answer["access"][device.device_id]
    assert access["decision"] == "deny"
    assert [(c["code"], c["rule_id"]) for c in access["causes"]] == [("rule_failed", "disk-encryption")]
    assert set(access["causes"][0]["title"]) == {"en", "fr", "ar"}
    assert tokens.verify(access["token"], key, now=time.time()).decision == "deny"
    # the same posture again: ingest's shortcut, the decision cannot have changed, none is issued
    answer = collector.send(device.report())
    assert answer["accepted"] == 1 and answer["access"] == {}


def test_gate_fetches_a_decision_bound_to_the_linked_certificate(collector: Collector) -> None:
    key = server_key(collector)
    device = collector.enroll()
    collector.send(device.report())
    token = gate_token(collector)
    headers = {"Authorization": f"Bearer {token}"}
    assert collector.client.get("/api/v1/gate/decision", params={"fingerprint": FP}, headers=headers
                                ).status_code == 404  # not linked yet
    linked = collector.admin("POST", f"/devices/{device.device_id}/credentials",
                             json={"fingerprint": ":".join(FP[i:i + 2] for i in range(0, 64, 2)).upper(),
                                   "label": "CN=laptop-1"})
    assert linked.status_code == 200, linked.text
    assert [c["fingerprint"] for c in linked.json()["credentials"]] == [FP]
    got = collector.client.get("/api/v1/gate/decision", params={"fingerprint": FP}, headers=headers)
    assert got.status_code == 200, got.text
    verified = tokens.verify(got.json()["token"], key, now=time.time(), fingerprint=FP)
    assert verified.device_id == device.device_id and verified.allowed
    with pytest.raises(tokens.DecisionError, match="another certificate"):
        tokens.verify(got.json()["token"], key, now=time.time(), fingerprint=OTHER_FP)
    # the same certificate cannot name a second device
    other = collector.enroll()
    clash = collector.admin("POST", f"/devices/{other.device_id}/credentials", json={"fingerprint": FP})
    assert clash.status_code == 409


def test_gate_token_is_scoped_to_decisions(collector: Collector) -> None:
    token = gate_token(collector)
    # no admin API, no dashboard data with a gate token
    assert collector.admin("GET", "/summary", token=token).status_code == 401
    assert collector.admin("GET", "/devices", token=token).status_code == 401
    # and no decisions without one (an admin token is not a gate token)
    for bearer in (None, collector.admin_token, "tpg_forged"):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        assert collector.client.get("/api/v1/gate/decision", params={"fingerprint": FP},
                                    headers=headers).status_code == 401
    code, out, err = collector.cli("gate-token", "revoke", "vpn1")
    assert code == 0, err
    assert collector.client.get("/api/v1/gate/decision", params={"fingerprint": FP},
                                headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_revoked_device_is_denied_even_with_an_exception(collector: Collector) -> None:
    device = collector.enroll()
    device.posture = Posture(disk_encrypted=False)
    collector.send(device.report())
    until = time.time() + 86400
    granted = collector.admin("POST", f"/devices/{device.device_id}/access-exception",
                              json={"reason": "encryption scheduled Monday", "expires_at": until})
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["decision"] == "allow" and body["exception"]["reason"] == "encryption scheduled Monday"
    assert [c["rule_id"] for c in body["causes"]] == ["disk-encryption"]  # what the exception overrides
    audit = collector.admin("GET", "/audit", params={"action": "device.access_exception.grant"}).json()
    assert audit["total"] == 1
    assert collector.admin("POST", f"/devices/{device.device_id}/access-exception",
                           json={"reason": "too long", "expires_at": time.time() + 200 * 86400}).status_code == 400
    assert collector.admin("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    after = collector.admin("GET", f"/devices/{device.device_id}/access").json()
    assert after["decision"] == "deny" and after["causes"] == [{"code": "device_revoked"}]


def test_the_decision_follows_the_org_units_ladder_and_its_block(collector: Collector) -> None:
    """The ladder inputs of a decision (read with the device row): the org unit's own ladder, whether it has a
    ``block`` step for the severity, and whether a block holds for this device and not another."""
    device, other = collector.enroll(), collector.enroll()

    def access(which: Any) -> dict[str, Any]:
        got = collector.admin("GET", f"/devices/{which.device_id}/access")
        assert got.status_code == 200, got.text
        return got.json()

    def codes(items: list[dict[str, Any]]) -> list[str]:
        return [f"{item['code']}:{item.get('rule_id', '')}" for item in items]

    t0 = time.time()
    collector.send(device.report(created_at=t0 - 30), other.report(created_at=t0 - 30))
    ladder_url = "/org-units/Finance/ladder"
    assert collector.admin("PUT", ladder_url, json={"actions": {"critical": [
        {"after": "0s", "do": "notify_employee"}, {"after": "1h", "do": "block"}]}}).status_code == 200
    failing = Posture(disk_encrypted=False)
    answer = collector.send(device.report(created_at=t0 - 20, posture=failing),
                            other.report(created_at=t0 - 20, posture=failing))
    # The org unit's ladder governs critical failures: a warning until its block step.
    for which in (device, other):
        decided = answer["access"][which.device_id]
        assert decided["decision"] == "allow" and decided["causes"] == []
        assert codes(decided["warnings"]) == ["rule_failed:disk-encryption"]
    with collector.db.write() as conn:
        assert ladder.fire_due_steps(conn, now=t0 + 7200) == 2
        conn.execute(device_blocks.delete().where(device_blocks.c.device_id == other.device_id))
    blocked = access(device)
    assert blocked["decision"] == "deny" and codes(blocked["causes"]) == ["blocked:"]
    assert codes(blocked["warnings"]) == ["rule_failed:disk-encryption"]
    assert access(other)["decision"] == "allow"
    # Back to the policy's ladder (none): a critical failure denies at once, the block still holds.
    assert collector.admin("PUT", ladder_url, json={"actions": None}).status_code == 200
    assert codes(access(device)["causes"]) == ["blocked:", "rule_failed:disk-encryption"]
    assert codes(access(other)["causes"]) == ["rule_failed:disk-encryption"]


def test_decision_inputs_are_read_by_device_not_across_the_fleet() -> None:
    """Each statement of load_inputs finds a device's rows through an index that starts with the device id.
    SQLite has no statistics here (a fresh database, no ANALYZE yet): with ``AND active IS 1`` it walked the index
    that starts with ``active``, i.e. every active rule row of the fleet, for each decision."""
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    executed: list[str] = []
    with engine.begin() as conn:
        conn.connection.dbapi_connection.set_trace_callback(executed.append)
        with Driver.on(conn) as driver:
            assert store.load_inputs(driver, ["dev-a", "dev-b"], time.time()) == {}
        conn.connection.dbapi_connection.set_trace_callback(None)
        assert len(executed) == 4
        for sql in executed:
            plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            assert not [step for step in plan if step.startswith("SCAN") or "_active_" in step], (sql, plan)
            assert "(device_id=?" in plan[0] or "(id=?)" in plan[0], (sql, plan)
    engine.dispose()


def test_denied_overview_since_and_gate_reports(collector: Collector) -> None:
    good, bad = collector.enroll(), collector.enroll()
    bad.posture = Posture(disk_encrypted=False)
    collector.send(good.report(), bad.report())
    denied = collector.admin("GET", "/access/denied").json()
    assert [item["device_id"] for item in denied["items"]] == [bad.device_id]
    since = denied["items"][0]["since"]
    collector.send(bad.report())  # still denied for the same reason: since does not move
    assert collector.admin("GET", f"/devices/{bad.device_id}/access").json()["since"] == since

    assert collector.admin("POST", f"/devices/{bad.device_id}/credentials", json={"fingerprint": FP}
                           ).status_code == 200
    token = gate_token(collector)
    report = {"decisions": [
        {"at": time.time() - 5, "fingerprint": FP, "event": "connect", "outcome": "deny", "reason": "rule_failed",
         "detail": "disk-encryption"},
        {"at": time.time() - 1, "fingerprint": OTHER_FP, "event": "connect", "outcome": "deny",
         "reason": "unknown_certificate"}]}
    stored = collector.client.post("/api/v1/gate/decisions", json=report, headers={"Authorization": f"Bearer {token}"})
    assert stored.status_code == 200 and stored.json() == {"stored": 2}
    last = collector.admin("GET", f"/devices/{bad.device_id}/access").json()["last_gate_decision"]
    assert (last["gate"], last["outcome"], last["reason"]) == ("vpn1", "deny", "rule_failed")
    export = collector.admin("GET", "/gate-decisions/export", params={"format": "csv"})
    assert export.status_code == 200
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("at,gate,device_id,fingerprint")
    assert len(lines) == 3 and "unknown_certificate" in lines[1] and bad.device_id in lines[2]
    bad_batch = {"decisions": [{**report["decisions"][0], "fingerprint": "xyz"}]}
    assert collector.client.post("/api/v1/gate/decisions", json=bad_batch,
                                 headers={"Authorization": f"Bearer {token}"}).status_code in (400, 422)


def test_agent_asks_for_its_decision_on_demand(collector: Collector) -> None:
    key = server_key(collector)
    device = collector.enroll()
    collector.send(device.report())
    headers = device.signed_headers("GET", "/api/v1/access")
    got = collector.client.get("/api/v1/access", headers=headers)
    assert got.status_code == 200, got.text
    assert tokens.verify(got.json()["token"], key, now=time.time()).device_id == device.device_id
    forged = dict(headers, **{protocol.HEADER_SIGNATURE: protocol.b64encode(b"x" * 64)})
    assert collector.client.get("/api/v1/access", headers=forged).status_code == 401


def test_device_certificate_needs_a_valid_csr_and_an_active_device(collector: Collector) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    device = collector.enroll()
    path = "/api/v1/device-certificate"
    bad = collector.client.post(path, headers=device.signed_headers("POST", path), json={"csr": "not a csr"})
    assert bad.status_code == 400 and "PEM certificate signing request" in bad.json()["detail"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                              "x")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    unsigned = collector.client.post(path, json={"csr": csr})
    assert unsigned.status_code == 401
    issued = collector.client.post(path, headers=device.signed_headers("POST", path), json={"csr": csr})
    assert issued.status_code == 200, issued.text
    body = issued.json()
    access = collector.admin("GET", f"/devices/{device.device_id}/access").json()
    assert [(c["fingerprint"], c["kind"]) for c in access["credentials"]] == [(body["fingerprint"], "device_tls")]
    assert collector.admin("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    again = collector.client.post(path, headers=device.signed_headers("POST", path), json={"csr": csr})
    assert again.status_code == 403
