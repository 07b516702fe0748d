"""The dashboard side of server.actions: blocked and due counts on the overview, step and deadline on the
device page, sinks (secret shown once, test event, dead letters and retry), ladders and exceptions edited
through the forms (real SQLite/PostgreSQL database, the app in process, a real webhook receiver)."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks.collector_sim import Posture
from server.actions import delivery, ladder
from server.store import accounts
from server.store.schema import deliveries
from tests.server.conftest import Collector
from tests.server.receivers import WebhookReceiver
from tests.server.test_actions import push_ladder_policy


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _signed_in(collector: Collector) -> TestClient:
    with collector.db.write() as conn:
        accounts.create_user(conn, "secadmin", "a-long-enough-password-1", "admin")
    client = collector.client
    page = client.get("/login")
    answer = client.post("/login", data={"username": "secadmin", "password": "a-long-enough-password-1",
                                         "csrf_token": _csrf(page.text), "next": "/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return client


def test_dashboard_shows_and_edits_actions(collector: Collector) -> None:
    push_ladder_policy(collector)
    device = collector.enroll()
    t0 = time.time()
    collector.send(device.report(created_at=t0, posture=Posture(disk_encrypted=False)))
    web = _signed_in(collector)
    page = web.get(f"/devices/{device.device_id}").text
    assert "Loses VPN access on" in page and "Step 1 of 3" in page
    with collector.db.write() as conn:
        ladder.fire_due_steps(conn, now=t0 + 45)
    assert re.search(r'id="blocked-count">1<', web.get("/").text)
    assert "VPN access blocked since" in web.get(f"/devices/{device.device_id}").text

    receiver = WebhookReceiver(secret="")
    url = receiver.start()
    try:
        actions = web.get("/actions")
        assert actions.status_code == 200
        made = web.post("/actions/sinks", data={"csrf_token": _csrf(actions.text), "name": "soc", "kind": "webhook",
                                                "config": f"url: {url}"})
        assert made.status_code == 201
        secret = re.search(r'id="new-secret"[^>]*>([^<]+)<', made.text)
        assert secret and secret.group(1).startswith("whsec_")
        receiver.secret = secret.group(1)
        assert secret.group(1) not in web.get("/actions").text  # shown once
        sink_id = collector.admin("GET", "/sinks").json()[0]["id"]
        tested = web.post(f"/actions/sinks/{sink_id}/test", data={"csrf_token": _csrf(actions.text)})
        assert "Test event delivered" in tested.text and receiver.types() == ["sink.test"]
        # Down long enough to be dead-lettered; the dashboard lists it and its retry puts it back.
        collector.send(device.report(created_at=t0 + 50, posture=Posture()))
        receiver.down = True
        with collector.db.read() as conn:
            sink = delivery.load_sinks(conn, collector.client.app.state.ctx.server_key)[0]
        delivery.deliver_sink(collector.db, sink, policy=delivery.DeliveryPolicy(dead_after=0.0))
        page = web.get("/actions").text
        assert re.search(r"\b[1-9][0-9]* undelivered events?\b", page) and "503" in page
        retried = web.post(f"/actions/sinks/{sink_id}/retry", data={"csrf_token": _csrf(page)},
                           follow_redirects=False)
        assert retried.status_code == 303
        with collector.db.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)
                                .where(deliveries.c.state == "dead")).scalar() == 0
    finally:
        receiver.stop()

    page = web.get("/actions").text
    bad = web.post("/actions/ladder", data={"csrf_token": _csrf(page), "org_unit": "Finance",
                                            "actions": "critical: [{after: 1h, do: explode}]"})
    assert bad.status_code == 400 and "unknown action" in bad.text
    good = web.post("/actions/ladder", data={"csrf_token": _csrf(page), "org_unit": "Finance",
                                             "actions": "critical: [{after: 0s, do: notify_employee}]",
                                             "contacts": "chef@example.org", "language": "fr"},
                    follow_redirects=False)
    assert good.status_code == 303
    assert collector.admin("GET", "/org-units/Finance/ladder").json()["contacts"] == ["chef@example.org"]
    granted = web.post("/actions/exceptions", data={"csrf_token": _csrf(page), "rule_id": "firewall-enabled",
                                                    "device_id": device.device_id, "reason": "lab machine",
                                                    "days": "30"}, follow_redirects=False)
    assert granted.status_code == 303
    device_page = web.get(f"/devices/{device.device_id}").text
    assert "Exempted" in device_page and "lab machine" in device_page
    assert "lab machine" in web.get("/actions").text
