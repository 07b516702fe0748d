"""End to end with real processes: a `teleposture-server serve` process with a seconds-scale ladder and three
sinks (a webhook receiver verifying Standard Webhooks signatures, aiosmtpd with STARTTLS + AUTH, rsyslogd over
TLS); a device fails disk encryption, the employee is notified over a real session D-Bus, the ladder reaches
`block`, the device is fixed. Every sink is down for a while and the collector is killed (SIGKILL) once in the
middle: each receiver still gets every event of the device, in the outbox's order."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from agent.policy import baseline
from agent.probes import LiveHost
from agent.service import ladder_view
from agent.service.config import load_settings
from agent.service.state import StateDir
from benchmarks.collector_sim import Posture, SimDevice
from benchmarks.loopback import serve
from server.store.schema import events
from tests.agent.service.test_notify import session_bus  # noqa: F401 (fixture)
from tests.server.conftest import Template
from tests.server.receivers import RsyslogReceiver, SmtpReceiver, WebhookReceiver
from tests.waiting import wait_until

LADDER = {"critical": [{"after": "0s", "do": "notify_employee"}, {"after": "2s", "do": "notify_team"},
                       {"after": "4s", "do": "block"}]}
ENV = {"TELEPOSTURE_ACTIONS_INTERVAL": "0.2", "TELEPOSTURE_DELIVERY_BACKOFF_MAX": "1",
       "TELEPOSTURE_DELIVERY_LEASE": "3", "TELEPOSTURE_POLICY_CACHE_SECONDS": "0"}


def _first_seen(ids: list[str]) -> list[str]:
    seen: list[str] = []
    for uid in ids:
        if uid not in seen:
            seen.append(uid)
    return seen


def test_ladder_sinks_outages_and_a_killed_collector(initialised: Template, tmp_path: Path,
                                                     session_bus: tuple[Path, Path]) -> None:  # noqa: F811
    runtime, monitor_log = session_bus
    admin = {"Authorization": f"Bearer {initialised.admin_token}"}
    webhook = WebhookReceiver(secret="")
    hook_url = webhook.start()
    (tmp_path / "smtp").mkdir()
    (tmp_path / "syslog").mkdir()
    smtp = SmtpReceiver(tmp_path / "smtp")
    rsyslog = RsyslogReceiver(tmp_path / "syslog")
    timings: dict[str, float] = {}
    try:
        with serve(initialised.data_dir, initialised.database_url, env=ENV) as server:
            api = httpx.Client(base_url=server.url, headers=admin, timeout=30)
            document = baseline().to_json()
            document.update(version=document["version"] + 100, actions=LADDER)
            assert api.post("/api/v1/admin/policies", json={"document": json.dumps(document)}).status_code == 201
            made = api.post("/api/v1/admin/sinks", json={"name": "hook", "kind": "webhook",
                                                         "config": {"url": hook_url}}).json()
            webhook.secret = made["secret"]
            assert api.post("/api/v1/admin/sinks", json={
                "name": "mail", "kind": "email", "secret": smtp.password,
                "config": {"host": "127.0.0.1", "port": smtp.port, "username": smtp.user, "from": "tp@example.org",
                           "to": ["soc@example.org"], "ca_file": smtp.cert, "language": "ar"}}).status_code == 201
            assert api.post("/api/v1/admin/sinks", json={
                "name": "siem", "kind": "syslog", "config": {"host": "127.0.0.1", "port": rsyslog.tls_port,
                                                             "transport": "tls", "ca_file": rsyslog.cert}
            }).status_code == 201
            token = api.post("/api/v1/admin/enroll-tokens", json={"org_unit": "Finance", "expires": "1h"}).json()
            device = SimDevice.numbered(1)
            device.device_id = httpx.post(server.url + "/api/v1/enroll",
                                          json=device.enroll_body(token["token"])).json()["device_id"]
            # Every sink is down when the device starts failing.
            webhook.down = True
            smtp.down = True
            ports = (rsyslog.plain_port, rsyslog.tls_port)
            rsyslog.stop()
            t0 = time.monotonic()
            answer = httpx.post(server.url + "/api/v1/reports", json={"envelopes": [
                device.report(posture=Posture(disk_encrypted=False))]}).json()["results"][0]
            assert answer["compliance"] == "not_compliant"
            # The agent's side: the answer's ladder becomes a notification on the employee's session bus.
            state = StateDir(tmp_path / "agent-state")
            state.ensure()
            settings = load_settings({"state_dir": str(state.root), "language": "fr"}, environ={})
            ladder_view.record(state, LiveHost(), settings, baseline(), answer["actions"], runtime_root=str(runtime))
            wait_until(lambda: "sera bloqué le" in monitor_log.read_text(encoding="utf-8"), 10, "the notification")
            timings["notification"] = time.monotonic() - t0
            timings["block"] = wait_until(lambda: api.get(f"/api/v1/admin/devices/{device.device_id}/actions")
                                     .json()["blocked"], 30, "the block step")
            # Killed in the middle, with undelivered events in the outbox.
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
        rsyslog = RsyslogReceiver(tmp_path / "syslog", ports=ports)
        webhook.down = False
        smtp.down = False
        with serve(initialised.data_dir, initialised.database_url, env=ENV) as server:
            t1 = time.monotonic()
            shown = httpx.get(server.url + f"/api/v1/admin/devices/{device.device_id}/actions", headers=admin).json()
            assert shown["blocked"] is True and shown["ladders"][0]["step"] == 3
            fixed = httpx.post(server.url + "/api/v1/reports", json={"envelopes": [
                device.report(posture=Posture())]}).json()["results"][0]
            assert fixed["compliance"] == "compliant" and fixed["actions"] == []
            engine = sa.create_engine(initialised.database_url)
            with engine.connect() as conn:
                outbox = [r.uid for r in conn.execute(sa.select(events.c.uid).where(
                    events.c.device_id == device.device_id).order_by(events.c.id))]
            engine.dispose()

            def hook_ids() -> list[str]:
                return _first_seen([r["id"] for r in webhook.received
                                    if r["body"].get("device", {}).get("uid") == device.device_id])

            def mail_ids() -> list[str]:
                return _first_seen([m["message"]["X-Teleposture-Event-Id"] for m in smtp.messages])

            def syslog_ids() -> list[str]:
                return _first_seen([line.split('eventId="')[1].split('"')[0] for line in rsyslog.lines()
                                    if 'eventId="' in line and device.device_id in line])

            timings["all delivered after restart"] = wait_until(
                lambda: hook_ids() == outbox and mail_ids() == outbox and syslog_ids() == outbox, 60,
                "every event at every sink")
            timings["compliant again"] = time.monotonic() - t1
        types = [r["body"]["metadata"]["event_code"] for r in webhook.received]
        for expected in ("rule.failing", "step.reached", "device.blocked", "rule.passing", "device.unblocked",
                         "device.compliant"):
            assert expected in types
        assert webhook.bad_signatures == 0
        assert smtp.messages[0]["message"]["Content-Language"] == "ar"
        print("e2e timings (s):", {k: round(v, 2) for k, v in timings.items()})
    finally:
        webhook.stop()
        smtp.stop()
        rsyslog.stop()
