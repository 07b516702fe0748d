"""The noncompliance ladder, exceptions, the events outbox and webhook delivery, against a real database
(SQLite and PostgreSQL) and a real HTTP receiver that checks signatures with `standardwebhooks`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa

from agent.policy import PolicyError, baseline, load_policy_text
from benchmarks.collector_sim import Posture
from server.actions import delivery, ladder
from server.store.db import Database
from server.store.schema import check_state, deliveries, events
from tests.server.conftest import Collector
from tests.server.receivers import WebhookReceiver

LADDER = {"critical": [{"after": "0s", "do": "notify_employee"}, {"after": "20s", "do": "notify_team"},
                       {"after": "40s", "do": "block"}],
          "low": [{"after": "0s", "do": "notify_employee"}]}


def push_ladder_policy(collector: Collector, actions: Any = None) -> None:
    document = baseline().to_json()
    document.update(version=document["version"] + 100, actions=actions or LADDER)
    pushed = collector.admin("POST", "/policies", json={"document": json.dumps(document)})
    assert pushed.status_code == 201, pushed.text


def add_webhook(collector: Collector, receiver_url: str, **filters: Any) -> tuple[int, str]:
    made = collector.admin("POST", "/sinks", json={"name": "siem-hook", "kind": "webhook",
                                                   "config": {"url": receiver_url}, "filters": filters})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret"].startswith("whsec_") and body["has_secret"] is True
    return int(body["id"]), str(body["secret"])


def test_policy_ladder_validation_names_lines() -> None:
    text = (baseline().to_json() and
            "schema: teleposture/policy/v1\nid: p\nversion: 1\ntitle: {en: a, fr: b, ar: c}\n"
            "rules:\n  - id: disk\n    check: disk_encryption\n    severity: critical\n"
            "    expect: {system_volume_encrypted: true}\n    title: {en: a, fr: b, ar: c}\n"
            "    remediation: {en: a, fr: b, ar: c}\n"
            "actions:\n  critical:\n    - {after: 1h, do: notify_employee}\n    - {after: 5x, do: block}\n"
            "    - {after: 10m, do: notify_team}\n  urgent:\n    - {after: 0s, do: explode}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    problems = caught.value.problems
    assert any(p.startswith("p.yaml:15:") and "`after` must be a duration" in p for p in problems), problems
    assert any(p.startswith("p.yaml:16:") and "in order" in p for p in problems), problems
    assert any(p.startswith("p.yaml:17:") and "unknown severity 'urgent'" in p for p in problems), problems
    good = load_policy_text(text.split("    - {after: 5x")[0], "p.yaml")
    assert [(s.after, s.action) for s in good.actions["critical"]] == [(3600, "notify_employee")]
    # A policy without actions keeps its canonical text (and digest).
    assert "actions" not in baseline().to_json()


def test_ladder_steps_block_and_recovery_with_webhook(collector: Collector) -> None:
    push_ladder_policy(collector)
    receiver = WebhookReceiver(secret="")
    url = receiver.start()
    try:
        sink_id, secret = add_webhook(collector, url)
        receiver.secret = secret
        device = collector.enroll()
        t0 = time.time()
        answer = collector.send(device.report(created_at=t0, posture=Posture(disk_encrypted=False)))["results"][0]
        assert answer["status"] == "accepted" and answer["compliance"] == "not_compliant"
        running = {item["rule_id"]: item for item in answer["actions"]}
        disk = running["disk-encryption"]
        assert disk["step"] == 1 and disk["last_action"] == "notify_employee"
        assert disk["next_action"] == "notify_team" and disk["next_at"] == pytest.approx(t0 + 20)
        assert disk["block_at"] == pytest.approx(t0 + 40)
        with collector.db.write() as conn:
            assert ladder.fire_due_steps(conn, now=t0 + 10) == 0  # nothing due yet
            assert ladder.fire_due_steps(conn, now=t0 + 45) >= 1  # team and block at once
            assert ladder.fire_due_steps(conn, now=t0 + 46) == 0  # each step once
            assert ladder.device_blocked(conn, str(device.device_id))
        shown = collector.admin("GET", f"/devices/{device.device_id}/actions").json()
        assert shown["blocked"] is True and shown["ladders"][0]["step"] == 3
        assert collector.admin("GET", "/actions/summary").json()["blocked"] == 1
        # A second failing report does not restart the episode or fire anything again.
        collector.send(device.report(created_at=t0 + 50, posture=Posture(disk_encrypted=False)))
        # Fixed: the episode ends, the block lifts.
        fixed = collector.send(device.report(created_at=t0 + 60, posture=Posture()))["results"][0]
        assert fixed["compliance"] == "compliant" and fixed["actions"] == []
        with collector.db.read() as conn:
            assert not ladder.device_blocked(conn, str(device.device_id))
        with collector.db.read() as conn:
            sink = next(s for s in delivery.load_sinks(conn, collector.client.app.state.ctx.server_key)
                        if s.id == sink_id)
        for _ in range(20):
            if not delivery.deliver_sink(collector.db, sink, policy=delivery.DeliveryPolicy()).delivered:
                break
        types = receiver.types(str(device.device_id))
        assert receiver.bad_signatures == 0
        assert types[:2] == ["device.enrolled", "rule.failing"] and types.count("step.reached") == 3
        assert types.index("device.blocked") < types.index("rule.passing") < types.index("device.unblocked")
        assert types[-1] == "device.compliant"
        ids = [r["id"] for r in receiver.received]
        assert len(ids) == len(set(ids))
        with collector.db.read() as conn:
            order = [r.uid for r in conn.execute(sa.select(events.c.uid).where(
                events.c.device_id == device.device_id).order_by(events.c.id))]
        assert [r["id"] for r in receiver.received if r["body"]["device"]["uid"] == device.device_id] == order
        step = next(r["body"] for r in receiver.received if r["body"]["metadata"]["event_code"] == "device.blocked")
        assert step["class_uid"] == 2003 and step["compliance"]["control"] == "disk-encryption"
        assert step["device"]["hostname"] == device.hostname and step["severity_id"] == 5
    finally:
        receiver.stop()


def test_delivery_retries_in_order_then_dead_letter_and_retry(collector: Collector) -> None:
    push_ladder_policy(collector)
    receiver = WebhookReceiver(secret="")
    url = receiver.start()
    try:
        sink_id, receiver.secret = add_webhook(collector, url)
        device = collector.enroll()
        t0 = time.time()
        collector.send(device.report(created_at=t0, posture=Posture(disk_encrypted=False)))
        collector.send(device.report(created_at=t0 + 1, posture=Posture()))
        ctx = collector.client.app.state.ctx
        with collector.db.read() as conn:
            sink = delivery.load_sinks(conn, ctx.server_key)[0]
        receiver.down = True
        policy = delivery.DeliveryPolicy(backoff_base=0.0, dead_after=3600)
        first = delivery.deliver_sink(collector.db, sink, policy=policy)
        assert first.delivered == 0 and first.failed == 1  # only the device's head event was tried
        with collector.db.read() as conn:
            states = conn.execute(sa.select(deliveries.c.state, deliveries.c.attempts, deliveries.c.last_error)
                                  .order_by(deliveries.c.event_id)).all()
        assert states[0].attempts == 1 and "503" in states[0].last_error
        assert all(s.attempts == 0 for s in states[1:])
        # Down for longer than dead_after: the head goes to the dead-letter list, the rest follow in order.
        dead_policy = delivery.DeliveryPolicy(backoff_base=0.0, dead_after=0.0)
        delivery.deliver_sink(collector.db, sink, policy=dead_policy)
        letters = collector.admin("GET", f"/sinks/{sink_id}/dead-letters").json()
        assert len(letters) >= 1 and letters[-1]["type"] == "device.enrolled"  # newest first
        listed = collector.admin("GET", "/sinks").json()[0]
        assert listed["dead"] >= 1 and "secret" not in listed
        receiver.down = False
        retried = collector.admin("POST", f"/sinks/{sink_id}/retry").json()["retried"]
        assert retried == len(letters)
        for _ in range(30):
            if not delivery.deliver_sink(collector.db, sink, policy=policy).delivered:
                break
        assert receiver.types(str(device.device_id))[-1] == "device.compliant"
        assert collector.admin("GET", f"/sinks/{sink_id}/dead-letters").json() == []
        tested = collector.admin("POST", f"/sinks/{sink_id}/test").json()
        assert tested["ok"] is True and receiver.types()[-1] == "sink.test"
    finally:
        receiver.stop()


def test_exception_ends_episode_and_expires(collector: Collector) -> None:
    push_ladder_policy(collector)
    device = collector.enroll()
    t0 = time.time()
    collector.send(device.report(created_at=t0, posture=Posture(disk_encrypted=False)))
    with collector.db.write() as conn:
        ladder.fire_due_steps(conn, now=t0 + 45)
        assert ladder.device_blocked(conn, str(device.device_id))
    too_long = collector.admin("POST", "/exceptions", json={
        "rule_id": "disk-encryption", "device_id": device.device_id, "reason": "x", "expires_at": t0 + 400 * 86400})
    assert too_long.status_code == 400 and "at most a year" in too_long.json()["detail"]
    no_reason = collector.admin("POST", "/exceptions", json={
        "rule_id": "disk-encryption", "device_id": device.device_id, "reason": "  ", "expires_at": t0 + 3600})
    assert no_reason.status_code == 400
    granted = collector.admin("POST", "/exceptions", json={
        "rule_id": "disk-encryption", "device_id": device.device_id, "reason": "replacement laptop ordered",
        "expires_at": t0 + 3600})
    assert granted.status_code == 201, granted.text
    shown = collector.admin("GET", f"/devices/{device.device_id}/actions").json()
    assert shown["blocked"] is False and shown["ladders"] == []
    assert shown["exceptions"][0]["reason"] == "replacement laptop ordered"
    audit = collector.admin("GET", "/audit", params={"action": "exception.grant"}).json()
    assert audit["total"] == 1
    # Still failing while exempt: no new episode.
    collector.send(device.report(created_at=t0 + 60, posture=Posture(disk_encrypted=False, firewall_enabled=False)))
    with collector.db.read() as conn:
        assert "disk-encryption" not in {r["rule_id"] for r in ladder.device_ladders(conn, [str(device.device_id)])[
            str(device.device_id)]}
    with collector.db.write() as conn:
        assert ladder.expire_exceptions(conn, now=t0 + 3601) == 1
        running = ladder.device_ladders(conn, [str(device.device_id)])[str(device.device_id)]
        disk = next(r for r in running if r["rule_id"] == "disk-encryption")
        assert disk["started_at"] == pytest.approx(t0 + 3601) and disk["step"] == 1
        types = [r.type for r in conn.execute(sa.select(events.c.type).order_by(events.c.id))]
    assert "exception.granted" in types and "exception.ended" in types and "device.unblocked" in types
    unit = collector.admin("POST", "/exceptions", json={"rule_id": "firewall-enabled", "org_unit": "Finance",
                                                        "reason": "pilot of a new firewall", "expires_at": t0 + 86400})
    assert unit.status_code == 201 and unit.json()["device_id"] is None and unit.json()["org_unit"] == "Finance"
    ended = collector.admin("DELETE", f"/exceptions/{unit.json()['id']}")
    assert ended.status_code == 200 and ended.json()["ended_at"] is not None
    assert collector.admin("DELETE", f"/exceptions/{unit.json()['id']}").status_code == 404
    assert [e["id"] for e in collector.admin("GET", "/exceptions").json()] == []


def test_org_unit_exception_end_restarts_failing_rules_past_and_within_grace(collector: Collector) -> None:
    """Ending an org unit's exception restarts the ladder of each of its devices whose rule fails, past its
    grace (``fail``) or still within it (``warn``), and of no other device."""
    push_ladder_policy(collector, {**LADDER, "high": [{"after": "0s", "do": "notify_employee"}]})
    t0 = time.time()
    off = Posture(firewall_enabled=False)  # firewall-enabled: high, a day of grace
    within, past, passing = collector.enroll(), collector.enroll(), collector.enroll()
    elsewhere = collector.enroll(org_unit="Sales")
    collector.send(past.report(created_at=t0 - 2 * 86400, posture=off))
    collector.send(within.report(created_at=t0, posture=off), past.report(created_at=t0, posture=off),
                   passing.report(created_at=t0), elsewhere.report(created_at=t0, posture=off))
    ids = [str(d.device_id) for d in (within, past, passing, elsewhere)]
    with collector.db.read() as conn:
        statuses = dict(conn.execute(sa.select(check_state.c.device_id, check_state.c.status).where(
            check_state.c.rule_id == "firewall-enabled")).all())
    assert [statuses[i] for i in ids] == ["warn", "fail", "pass", "warn"]

    def firewall_ladders() -> dict[str, float]:
        with collector.db.read() as conn:
            running = ladder.device_ladders(conn, ids)
        return {device_id: item["started_at"] for device_id, items in running.items()
                for item in items if item["rule_id"] == "firewall-enabled"}

    assert set(firewall_ladders()) == {ids[0], ids[1], ids[3]}
    granted = collector.admin("POST", "/exceptions", json={"rule_id": "firewall-enabled", "org_unit": "Finance",
                                                           "reason": "firewall migration", "expires_at": t0 + 86400})
    assert granted.status_code == 201, granted.text
    assert set(firewall_ladders()) == {ids[3]}
    ended_at = time.time()
    assert collector.admin("DELETE", f"/exceptions/{granted.json()['id']}").status_code == 200
    restarted = firewall_ladders()
    assert set(restarted) == {ids[0], ids[1], ids[3]}
    assert restarted[ids[0]] >= ended_at and restarted[ids[1]] >= ended_at
    assert restarted[ids[3]] == pytest.approx(t0)  # another org unit: its episode went on untouched


def test_unchanged_report_shows_a_ladder_another_node_started(collector: Collector) -> None:
    """An upload answer lists the device's running ladders even when its report changed nothing (no
    evaluation) and the ladder was started elsewhere: here by another node's exception-expiry job."""
    push_ladder_policy(collector)
    device = collector.enroll()
    other = collector.enroll()
    t0 = time.time()
    failing = Posture(disk_encrypted=False)
    granted = collector.admin("POST", "/exceptions", json={
        "rule_id": "disk-encryption", "device_id": device.device_id, "reason": "laptop on order",
        "expires_at": t0 + 3600})
    assert granted.status_code == 201, granted.text
    assert collector.send(device.report(created_at=t0, posture=failing))["results"][0]["actions"] == []
    collector.send(other.report(created_at=t0))
    other_node = Database(collector.database_url)
    try:
        with other_node.write() as conn:
            assert ladder.expire_exceptions(conn, now=t0 + 3601) == 1
    finally:
        other_node.dispose()
    answers = collector.send(device.report(created_at=t0 + 10, posture=failing),
                             other.report(created_at=t0 + 10))["results"]
    assert [a["status"] for a in answers] == ["accepted", "accepted"]
    assert [item["rule_id"] for item in answers[0]["actions"]] == ["disk-encryption"]
    assert answers[1]["actions"] == []


def test_org_unit_ladder_override_and_validation(collector: Collector) -> None:
    push_ladder_policy(collector)
    collector.enroll_token("Finance")  # creates the org unit
    bad = collector.admin("PUT", "/org-units/Finance/ladder", json={"actions": {"critical": [
        {"after": "1h", "do": "block"}, {"after": "0s", "do": "notify_employee"}]}})
    assert bad.status_code == 400 and "in order" in bad.json()["detail"]
    put = collector.admin("PUT", "/org-units/Finance/ladder", json={
        "actions": {"critical": [{"after": "0s", "do": "notify_employee"}, {"after": "5s", "do": "notify_manager"}]},
        "contacts": ["chef@example.org"], "language": "fr"})
    assert put.status_code == 200, put.text
    device = collector.enroll(org_unit="Finance")
    t0 = time.time()
    answer = collector.send(device.report(created_at=t0, posture=Posture(disk_encrypted=False)))["results"][0]
    disk = next(a for a in answer["actions"] if a["rule_id"] == "disk-encryption")
    assert disk["next_action"] == "notify_manager" and disk["block_at"] is None
    with collector.db.write() as conn:
        ladder.fire_due_steps(conn, now=t0 + 6)
        body = json.loads(conn.execute(sa.select(events.c.body).where(events.c.type == "step.reached")
                                       .order_by(events.c.id.desc()).limit(1)).scalar_one_or_none() or "{}")
    assert body["unmapped"]["teleposture"]["recipients"] == ["chef@example.org"]


def test_a_rule_dropped_from_the_policy_loses_its_state_and_ends_its_episode(collector: Collector) -> None:
    """A new policy version without a rule: the next evaluation of a device deletes that rule's state (of that
    device only) and ends its running episode, whose block lifts."""
    push_ladder_policy(collector)
    device, other = collector.enroll(), collector.enroll()
    t0 = time.time()
    failing = Posture(disk_encrypted=False)
    answer = collector.send(device.report(created_at=t0, posture=failing))["results"][0]
    assert [item["rule_id"] for item in answer["actions"]] == ["disk-encryption"]
    collector.send(other.report(created_at=t0, posture=failing))
    with collector.db.write() as conn:
        assert ladder.fire_due_steps(conn, now=t0 + 45) >= 1
        assert ladder.device_blocked(conn, str(device.device_id))
    document = baseline().to_json()
    document.update(version=document["version"] + 200, actions=LADDER,
                    rules=[rule for rule in document["rules"] if rule["id"] != "disk-encryption"])
    pushed = collector.admin("POST", "/policies", json={"document": json.dumps(document)})
    assert pushed.status_code == 201, pushed.text
    answer = collector.send(device.report(created_at=t0 + 50, posture=failing))["results"][0]
    assert answer["status"] == "accepted" and answer["compliance"] == "compliant" and answer["actions"] == []
    with collector.db.read() as conn:
        rules = {str(row.device_id): {str(r) for r in row.rules.split(",")} for row in conn.execute(
            sa.select(check_state.c.device_id, sa.func.group_concat(check_state.c.rule_id).label("rules")
                      if not collector.db.is_postgres else
                      sa.func.string_agg(check_state.c.rule_id, ",").label("rules"))
            .group_by(check_state.c.device_id))}
        assert "disk-encryption" not in rules[str(device.device_id)]
        assert "disk-encryption" in rules[str(other.device_id)]  # not evaluated since: its state stays
        assert not ladder.device_blocked(conn, str(device.device_id))
        assert ladder.device_ladders(conn, [str(device.device_id)]) == {str(device.device_id): []}
        unblocked = conn.execute(sa.select(events.c.body).where(events.c.type == "device.unblocked",
                                                                events.c.device_id == device.device_id)).all()
    assert [json.loads(row.body)["unmapped"]["teleposture"]["why"] for row in unblocked] == [
        "rule removed from the policy"]
