"""Report ingest through the API: history only on change, dedupe, grace, disagreement, limits."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from agent import protocol
from benchmarks.collector_sim import SimDevice
from server.ingest import KeyCache
from server.store import ingest_sql
from server.store.schema import check_state, devices, ladder_state, org_units, reports, transitions
from tests.server.conftest import Collector, Template, in_process, snapshot


def _transitions(collector: Collector, device_id: str) -> list[tuple[str, str | None, str, float, int]]:
    with collector.db.read() as conn:
        rows = conn.execute(sa.select(transitions.c.rule_id, transitions.c.old_status, transitions.c.new_status,
                                      transitions.c.at, transitions.c.seq)
                            .where(transitions.c.device_id == device_id)
                            .order_by(transitions.c.seq, transitions.c.rule_id)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_status_change_is_recorded_once_and_unchanged_reports_write_no_history(collector: Collector) -> None:
    device = collector.enroll()
    first_at = time.time() - 30
    assert collector.send(device.report(created_at=first_at))["accepted"] == 1
    initial = _transitions(collector, device.device_id)
    # The first report creates one transition per rule (from nothing to its status).
    assert len(initial) == len(device.policy.rules)
    assert all(old is None for _, old, _, _, _ in initial)

    before = snapshot(collector.db, exclude=("devices",))
    assert collector.send(device.report(created_at=first_at + 10))["accepted"] == 1
    after = snapshot(collector.db, exclude=("devices",))
    assert after == before, "an unchanged report must not write state, history or a raw report"

    change_at = first_at + 20
    result = collector.send(device.report(created_at=change_at, posture=replace(device.posture, disk_encrypted=False)))
    assert result["results"][0]["compliance"] == "not_compliant"
    changes = [t for t in _transitions(collector, device.device_id) if t not in initial]
    assert changes == [("disk-encryption", "pass", "fail", changes[0][3], 3)]
    assert abs(changes[0][3] - change_at) < 0.01, "the change is dated by the report that showed it"
    # Same failing posture again: still exactly one transition for the change.
    collector.send(device.report(created_at=change_at + 5))
    assert [t for t in _transitions(collector, device.device_id) if t not in initial] == changes
    with collector.db.read() as conn:
        row = conn.execute(sa.select(check_state.c.status, check_state.c.since).where(
            check_state.c.device_id == device.device_id, check_state.c.rule_id == "disk-encryption")).one()
        summary = conn.execute(sa.select(devices.c.compliance, devices.c.fail_count, devices.c.last_seq)
                               .where(devices.c.id == device.device_id)).one()
    assert row.status == "fail" and abs(row.since - change_at) < 0.01
    assert tuple(summary) == ("not_compliant", 1, 4)


def test_duplicate_seq_has_no_effect(collector: Collector) -> None:
    device = collector.enroll()
    envelope = device.report()
    assert collector.send(envelope)["results"][0]["status"] == "accepted"
    before = snapshot(collector.db)
    answer = collector.send(envelope)
    assert answer["results"][0]["status"] == "duplicate" and answer["duplicate"] == 1
    assert snapshot(collector.db) == before


def test_batch_out_of_order_and_mixed(collector: Collector) -> None:
    device = collector.enroll()
    first, second, third = device.report(), device.report(), device.report()
    answer = collector.send(third, first, {"device_id": "x"}, second)
    statuses = [r["status"] for r in answer["results"]]
    # Applied in seq order: 1 and 2 are older than 3 but were processed first, so all three count.
    assert statuses[0] == "accepted" and statuses[1] == "accepted" and statuses[3] == "accepted"
    assert statuses[2].startswith("rejected: ") and "payload" in statuses[2]
    with collector.db.read() as conn:
        assert conn.execute(sa.select(devices.c.last_seq).where(devices.c.id == device.device_id)).scalar() == 3


def test_grace_period_turns_young_failures_into_warnings(collector: Collector) -> None:
    device = collector.enroll()
    start = time.time() - 3 * 3600
    collector.send(device.report(created_at=start))
    vpn_down = replace(device.posture, vpn_up=False)
    collector.send(device.report(created_at=start + 60, posture=vpn_down))
    with collector.db.read() as conn:
        valid_until = conn.execute(sa.select(devices.c.eval_valid_until)
                                   .where(devices.c.id == device.device_id)).scalar()
    assert abs(valid_until - (start + 60 + 3600)) < 0.01, "the warn holds until the grace period ends"
    before = snapshot(collector.db, exclude=("devices",))
    collector.send(device.report(created_at=start + 1800))  # still inside the 1 h grace: the same results
    assert snapshot(collector.db, exclude=("devices",)) == before
    collector.send(device.report(created_at=start + 60 + 3600 + 1))  # grace over: the same facts now fail
    vpn = [(old, new, seq) for rule, old, new, _, seq in _transitions(collector, device.device_id)
           if rule == "vpn-corporate-traffic"]
    assert vpn == [(None, "pass", 1), ("pass", "warn", 2), ("warn", "fail", 4)]
    with collector.db.read() as conn:
        failing_since = conn.execute(sa.select(check_state.c.failing_since).where(
            check_state.c.device_id == device.device_id, check_state.c.rule_id == "vpn-corporate-traffic")).scalar()
    assert abs(failing_since - (start + 60)) < 0.01


def test_disagreement_with_the_agent_is_recorded(collector: Collector) -> None:
    device = collector.enroll()
    envelope = device.report(posture=replace(device.posture, disk_encrypted=False))
    payload = json.loads(envelope["payload"])
    for result in payload["results"]:
        if result["rule_id"] == "disk-encryption":
            result["status"] = "pass"  # the agent claims a pass the facts do not support
    forged_by_agent = protocol.seal(device.key, device.device_id, payload).to_json()
    collector.send(forged_by_agent)
    detail = collector.admin("GET", f"/devices/{device.device_id}").json()
    firewall = next(c for c in detail["checks"] if c["rule_id"] == "disk-encryption")
    assert firewall["status"] == "fail" and firewall["agent_status"] == "pass" and firewall["disagrees"]
    assert detail["device"]["disagreements"] == 1


def test_gzip_body_and_limits(initialised: Template) -> None:
    with in_process(initialised, max_body_bytes=64 * 1024, max_decompressed_bytes=256 * 1024, max_batch=2,
                    rate_limit_device_per_minute=3) as collector:
        client = collector.client
        device = collector.enroll()
        body = gzip.compress(json.dumps({"envelopes": [device.report()]}).encode())
        response = client.post("/api/v1/reports", content=body,
                               headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert response.status_code == 200 and response.json()["accepted"] == 1

        bomb = gzip.compress(b'{"envelopes": [' + b" " * (1024 * 1024) + b"]}")
        response = client.post("/api/v1/reports", content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413 and "decompressed" in response.json()["detail"]

        response = client.post("/api/v1/reports", content=b"x" * (65 * 1024))
        assert response.status_code == 413 and "limit" in response.json()["detail"]

        response = client.post("/api/v1/reports", json={"envelopes": [device.report() for _ in range(3)]})
        assert response.status_code == 413 and "at most 2" in response.json()["detail"]

        response = client.post("/api/v1/reports", content=b"not json")
        assert response.status_code == 400
        response = client.post("/api/v1/reports", content=b"\x1f\x8bnope", headers={"Content-Encoding": "gzip"})
        assert response.status_code == 400

        # Envelopes in the device's name that do not verify do not spend its budget ...
        for _ in range(5):
            forged = {**device.report(), "signature": protocol.sign(protocol.generate_private_key(), "x")}
            device.seq -= 1
            answer = client.post("/api/v1/reports", json={"envelopes": [forged]})
            assert answer.status_code == 200 and answer.json()["rejected"] == 1
        # ... its own do: 3 requests per minute, one used above; the 429 says when to come back.
        statuses = [client.post("/api/v1/reports", json={"envelopes": [device.report()]}).status_code
                    for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        limited = client.post("/api/v1/reports", json={"envelopes": [device.report()]})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_reenrolment_replaces_the_old_device(collector: Collector) -> None:
    first = collector.enroll()
    collector.send(first.report())
    again = SimDevice(hostname=first.hostname, machine_id=first.machine_id, serial=first.serial)
    token = collector.enroll_token()
    assert first.device_id
    # the agent re-enrolling itself signs with its old key (without it: pending, tests/server/test_reenrolment.py)
    body = {**again.enroll_body(token),
            "previous": protocol.reenrol_proof(first.key, first.device_id, protocol.public_key_b64(again.key))}
    response = collector.client.post("/api/v1/enroll", json=body)
    assert response.status_code == 200
    assert response.json()["replaced"] == first.device_id
    again.device_id = response.json()["device_id"]
    assert again.device_id != first.device_id
    answer = collector.send(first.report())["results"][0]
    assert answer["status"].startswith("rejected") and "replaced" in answer["reason"]
    assert collector.send(again.report())["accepted"] == 1
    old = collector.admin("GET", f"/devices/{first.device_id}").json()["device"]
    assert old["state"] == "replaced" and old["replaced_by"] == again.device_id
    listed = collector.admin("GET", "/devices").json()
    assert [d["id"] for d in listed["items"]] == [again.device_id]


def test_policy_bundle_is_signed_and_cached_with_etag(collector: Collector) -> None:
    device = collector.enroll()
    response = collector.client.get("/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy"))
    assert response.status_code == 200
    server_key = protocol.load_public_key(collector.client.post(
        "/api/v1/enroll", json=SimDevice.numbered(99).enroll_body(collector.enroll_token())).json()["server_key"])
    policy, _text = protocol.open_policy_bundle(response.json(), server_key)
    assert policy["id"] == "ma-telework-baseline"
    etag = response.headers["ETag"]
    again = collector.client.get("/api/v1/policy", headers={
        **device.signed_headers("GET", "/api/v1/policy"), "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag

    headers = device.signed_headers("GET", "/api/v1/policy")
    headers[protocol.HEADER_SIGNATURE] = protocol.sign(protocol.generate_private_key(), "GET\n/api/v1/policy\n1")
    assert collector.client.get("/api/v1/policy", headers=headers).status_code == 401
    old = device.signed_headers("GET", "/api/v1/policy")
    stale = protocol.sign_request(device.key, device.device_id, "GET", "/api/v1/policy", now=time.time() - 3600)
    assert collector.client.get("/api/v1/policy", headers=stale).status_code == 401
    assert collector.client.get("/api/v1/policy").status_code == 401
    assert old  # a fresh signature still works after the refusals
    assert collector.client.get("/api/v1/policy", headers=old).status_code == 200


def test_raw_reports_are_sampled(collector: Collector) -> None:
    device = collector.enroll()
    for _ in range(4):
        collector.send(device.report())
    with collector.db.read() as conn:
        kept = conn.execute(sa.select(reports.c.seq).where(reports.c.device_id == device.device_id)).scalars().all()
    # The first report is kept; unchanged ones within raw_report_interval (7 days) are not.
    assert kept == [1]
    collector.send(device.report(posture=replace(device.posture, screen_lock=False)))
    with collector.db.read() as conn:
        kept = conn.execute(sa.select(reports.c.seq).where(reports.c.device_id == device.device_id)
                            .order_by(reports.c.seq)).scalars().all()
    assert kept == [1, 5]


def test_the_reports_fast_lane_answers_as_the_route_did(collector: Collector) -> None:
    """POST /api/v1/reports runs through server.api.agent.ReportsFastLane (compared with the route in
    tests/server/test_reports_lane.py): errors keep the app's shapes, other methods and the OpenAPI
    document still come from the declared route."""
    client = collector.client
    bad = client.post("/api/v1/reports", content=b"not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("request body is not JSON")
    shape = client.post("/api/v1/reports", json={"reports": []})
    assert shape.status_code == 400 and shape.json() == {"detail": 'expected a JSON object {"envelopes": [...]}'}
    assert client.get("/api/v1/reports").status_code == 405
    assert "post" in client.get("/openapi.json").json()["paths"]["/api/v1/reports"]
    empty = client.post("/api/v1/reports", json={"envelopes": []})
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_update_device_sets_only_the_columns_an_evaluation_sets() -> None:
    """update_device builds its SET list from the names it is given: any other column is refused before a
    statement is sent (the driver is never used)."""
    with pytest.raises(ValueError, match="last_seq"):
        ingest_sql.update_device(None, "dev", {"compliance": "compliant", "last_seq": 7})  # type: ignore[arg-type]


def _resigned(device: SimDevice, envelope: dict[str, str], **changes: object) -> dict[str, str]:
    payload = {**json.loads(envelope["payload"]), **changes}
    assert device.device_id
    return protocol.seal(device.key, device.device_id, payload).to_json()


def _spy_unchanged(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What each one-statement claim of an unchanged report (Ingestor._claim_unchanged) returned."""
    outcomes: list[str | None] = []
    real = ingest_sql.claim_unchanged

    def spy(*args: Any, **kwargs: Any) -> str | None:
        outcomes.append(real(*args, **kwargs))
        return outcomes[-1]

    monkeypatch.setattr(ingest_sql, "claim_unchanged", spy)
    return outcomes


def _device_row(collector: Collector, device_id: str) -> dict[str, Any]:
    with collector.db.read() as conn:
        return dict(conn.execute(sa.select(devices).where(devices.c.id == device_id)).one()._mapping)


def test_unchanged_report_of_a_batch_of_one_is_one_statement_with_the_transactions_effect(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = _spy_unchanged(collector, monkeypatch)
    device = collector.enroll()
    machine = {"machine_id": device.machine_id}  # as the agent sends it (agent/service/core.py)
    at = time.time() - 60
    assert collector.send(_resigned(device, device.report(created_at=at), **machine))["accepted"] == 1
    assert outcomes == [], "no policy looked up in this process yet: the transaction's way"
    before = snapshot(collector.db, exclude=("devices",))
    fast_envelope = _resigned(device, device.report(created_at=at + 10), **machine)
    fast = collector.send(fast_envelope)
    assert outcomes == ["compliant"]
    assert snapshot(collector.db, exclude=("devices",)) == before
    row = _device_row(collector, str(device.device_id))
    assert (row["last_seq"], row["last_report_id"]) == (2, json.loads(fast_envelope["payload"])["report_id"])
    assert abs(row["last_report_at"] - (at + 10)) < 0.01 and abs(row["last_seen"] - time.time()) < 60

    # the same report through the transaction: the same answer, the same row
    monkeypatch.setattr(collector.client.app.state.ctx.ingestor, "_claim_unchanged", lambda *_: None)
    slow = collector.send(_resigned(device, device.report(created_at=at + 20), **machine))
    assert snapshot(collector.db, exclude=("devices",)) == before
    for answer in (fast, slow):
        del answer["server_time"]
        answer["results"][0].pop("seq"), answer["results"][0].pop("last_seq")
    assert fast == slow and fast["results"][0]["actions"] == [] and fast["access"] == {}
    after = _device_row(collector, str(device.device_id))
    assert {k: v for k, v in after.items() if not k.startswith("last_")} == \
        {k: v for k, v in row.items() if not k.startswith("last_")}


def _moved(collector: Collector, device_id: str) -> None:
    with collector.db.write() as conn:
        conn.execute(org_units.insert().values(name="Elsewhere", created_at=time.time()))
        unit = conn.execute(sa.select(org_units.c.id).where(org_units.c.name == "Elsewhere")).scalar()
        conn.execute(devices.update().where(devices.c.id == device_id).values(org_unit_id=unit))


def _set_device(**values: Any) -> Callable[[Collector, str], None]:
    def change(collector: Collector, device_id: str) -> None:
        with collector.db.write() as conn:
            conn.execute(devices.update().where(devices.c.id == device_id).values(**values))
    return change


def _ladder(collector: Collector, device_id: str) -> None:
    with collector.db.write() as conn:
        unit = conn.execute(sa.select(devices.c.org_unit_id).where(devices.c.id == device_id)).scalar()
        conn.execute(ladder_state.insert().values(
            device_id=device_id, rule_id="disk-encryption", org_unit_id=unit, severity="critical",
            started_at=time.time(), steps_fired=0, next_action="notify", next_at=time.time() + 3600,
            ladder='[[3600, "notify"]]', updated_at=time.time()))


def test_unchanged_report_is_one_statement_in_a_process_that_never_saw_the_device(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker or node (no key cached, no claim of this device yet): the org unit read with the key
    is enough for the one-statement claim. Agents report hourly, so with several workers most reports land
    where the device's previous one did not."""
    outcomes = _spy_unchanged(collector, monkeypatch)
    device = collector.enroll()
    machine = {"machine_id": device.machine_id}
    at = time.time() - 60
    assert collector.send(_resigned(device, device.report(created_at=at), **machine))["accepted"] == 1
    ingestor = collector.client.app.state.ctx.ingestor
    monkeypatch.setattr(ingestor, "keys", KeyCache())  # as in a process that never saw this device
    outcomes.clear()
    answer = collector.send(_resigned(device, device.report(created_at=at + 10), **machine))
    assert answer["accepted"] == 1 and outcomes == ["compliant"]
    assert ingestor.keys.org_unit(str(device.device_id)) == _device_row(collector, str(device.device_id))["org_unit_id"]


@pytest.mark.parametrize("case", ["raw-due", "results-expired", "moved", "other-machine", "notices", "duplicate",
                                  "revoked", "ladder"])
def test_unchanged_report_goes_the_transactions_way_when_the_statement_cannot_judge_it(
        collector: Collector, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    outcomes = _spy_unchanged(collector, monkeypatch)
    device = collector.enroll()
    device_id = str(device.device_id)
    at = time.time() - 60
    collector.send(device.report(created_at=at))
    envelope = device.report(created_at=at + 10)
    if case == "raw-due":
        _set_device(last_raw_report_at=None)(collector, device_id)
    elif case == "results-expired":
        _set_device(eval_valid_until=at + 5)(collector, device_id)
    elif case == "moved":
        _moved(collector, device_id)
    elif case == "other-machine":
        envelope = _resigned(device, envelope, machine_id="copied-machine")
    elif case == "notices":
        envelope = _resigned(device, envelope, dropped_reports=3)
    elif case == "duplicate":
        collector.send(envelope)
        outcomes.clear()
    elif case == "revoked":
        _set_device(state="revoked")(collector, device_id)
    elif case == "ladder":
        _ladder(collector, device_id)
    with collector.db.read() as conn:
        raw_before = conn.execute(sa.select(sa.func.count()).select_from(reports)).scalar()
    result = collector.send(envelope)["results"][0]
    assert None in outcomes or (case == "notices" and outcomes == []), outcomes
    with collector.db.read() as conn:
        raw_after = conn.execute(sa.select(sa.func.count()).select_from(reports)).scalar()
        evaluated_until = conn.execute(sa.select(devices.c.eval_valid_until).where(devices.c.id == device_id)).scalar()
    expected = {"raw-due": "accepted", "results-expired": "accepted", "moved": "accepted", "notices": "accepted",
                "other-machine": "rejected: cloned identity", "duplicate": "duplicate", "revoked": "rejected: device",
                "ladder": "accepted"}
    assert result["status"].startswith(expected[case]), result
    if case == "raw-due":
        assert raw_after == raw_before + 1, "the transaction kept the raw payload that was due"
    if case == "results-expired":
        assert evaluated_until != at + 5, "the transaction evaluated the report again"
    if case == "ladder":
        assert [a["rule_id"] for a in result["actions"]] == ["disk-encryption"], "the answer shows the ladder"
