"""The structured message beside each English reason: kept with every status change (migration 0006)
and returned by the admin API, so a client can show the reason in its reader's language."""

from __future__ import annotations

import json
from dataclasses import replace

import sqlalchemy as sa

from agent.i18n import catalogue
from agent.policy.messages import render_complete
from benchmarks.collector_sim import SimDevice
from server.store.schema import check_state, transitions
from tests.server.conftest import Collector


def test_a_status_change_keeps_the_message_of_its_reason(collector: Collector) -> None:
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report())
    collector.send(device.report(posture=replace(device.posture, disk_encrypted=False)))
    with collector.db.read() as conn:
        changes = conn.execute(sa.select(transitions.c.new_status, transitions.c.reason, transitions.c.message)
                               .where(transitions.c.device_id == device.device_id,
                                      transitions.c.rule_id == "disk-encryption")
                               .order_by(transitions.c.seq)).all()
        current = conn.execute(sa.select(check_state.c.message).where(
            check_state.c.device_id == device.device_id, check_state.c.rule_id == "disk-encryption")).scalar_one()
    assert [c.new_status for c in changes] == ["pass", "fail"]
    assert changes[-1].message == current, "the change keeps the message of the state it led to"
    for change in changes:
        msg = json.loads(change.message)
        assert msg["key"] == ("eq_pass" if change.new_status == "pass" else "eq_fail")
        assert render_complete(msg) == change.reason, "the message says what the English reason says"


def test_admin_api_gives_the_english_reason_and_its_message(collector: Collector) -> None:
    device = collector.enroll(SimDevice.numbered(1))
    collector.send(device.report(posture=replace(device.posture, disk_encrypted=False)))
    detail = collector.admin("GET", f"/devices/{device.device_id}")
    assert detail.status_code == 200, detail.text
    check = next(c for c in detail.json()["checks"] if c["rule_id"] == "disk-encryption")
    assert check["reason"] == "system volume encrypted: no (expected: yes)"
    assert check["message"] == {"key": "eq_fail", "params": {"fact": "system_volume_encrypted", "value": False,
                                                             "expected": True}}
    french = render_complete(check["message"], catalogue("fr"))
    assert french is not None and french != check["reason"]
    change = next(h for h in detail.json()["history"]["items"] if h["rule_id"] == "disk-encryption")
    assert change["reason"] == check["reason"] and change["message"] == check["message"]
    history = collector.admin("GET", f"/devices/{device.device_id}/history")
    assert history.status_code == 200, history.text
    assert [h["message"] for h in history.json()["items"] if h["rule_id"] == "disk-encryption"] == [check["message"]]
