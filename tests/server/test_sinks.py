"""E-mail and syslog sinks against real receivers: aiosmtpd (STARTTLS + AUTH) and rsyslogd (TCP and TLS)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.collector_sim import Posture
from server.actions import delivery
from server.actions.sinks import Sink
from tests.server.conftest import Collector
from tests.server.receivers import RsyslogReceiver, SmtpReceiver
from tests.server.test_actions import push_ladder_policy
from tests.waiting import eventually


def _deliver_all(collector: Collector, name: str) -> Sink:
    with collector.db.read() as conn:
        sink = next(s for s in delivery.load_sinks(conn, collector.client.app.state.ctx.server_key) if s.name == name)
    for _ in range(20):
        if not delivery.deliver_sink(collector.db, sink, policy=delivery.DeliveryPolicy()).delivered:
            break
    return sink


def test_email_sink_starttls_auth_in_the_recipients_language(collector: Collector, tmp_path: Path) -> None:
    push_ladder_policy(collector)
    smtp = SmtpReceiver(tmp_path)
    try:
        made = collector.admin("POST", "/sinks", json={
            "name": "mail-fr", "kind": "email", "secret": smtp.password,
            "config": {"host": "127.0.0.1", "port": smtp.port, "starttls": True, "username": smtp.user,
                       "from": "teleposture@example.org", "to": ["soc@example.org"], "language": "fr",
                       "ca_file": smtp.cert},
            "filters": {"event_types": ["rule.failing", "device.compliant"]}})
        assert made.status_code == 201, made.text
        assert "secret" not in collector.admin("GET", "/sinks").json()[0]
        device = collector.enroll()
        collector.send(device.report(posture=Posture(disk_encrypted=False)))
        collector.send(device.report(posture=Posture()))
        _deliver_all(collector, "mail-fr")
        assert [m["to"] for m in smtp.messages] == [["soc@example.org"], ["soc@example.org"]]
        first = smtp.messages[0]["message"]
        assert first["Subject"] == f"{device.hostname} : la règle disk-encryption échoue"
        plain = first.get_body(("plain",)).get_content()
        html = first.get_body(("html",)).get_content()
        assert "Règle: disk-encryption" in plain and '<html lang="fr"' in html
        assert smtp.messages[1]["message"]["Subject"] == f"{device.hostname} est de nouveau conforme"
        # A wrong password: the delivery fails, is kept, and says why.
        bad = collector.admin("POST", "/sinks", json={
            "name": "mail-bad", "kind": "email", "secret": "wrong",
            "config": {"host": "127.0.0.1", "port": smtp.port, "username": smtp.user, "from": "t@example.org",
                       "to": ["x@example.org"], "ca_file": smtp.cert, "timeout": 3}}).json()
        tested = collector.admin("POST", f"/sinks/{bad['id']}/test").json()
        assert tested["ok"] is False and tested["detail"].startswith("SMTP")
        assert len(smtp.messages) == 2
        # notify_manager: the org unit's contacts get the step, in the org unit's language.
        assert collector.admin("PUT", "/org-units/Finance/ladder", json={
            "actions": {"critical": [{"after": "0s", "do": "notify_manager"}]}, "contacts": ["chef@example.org"],
            "language": "ar"}).status_code == 200
        assert collector.admin("PATCH", f"/sinks/{made.json()['id']}",
                               json={"filters": {"event_types": ["step.reached"]}}).status_code == 200
        second = collector.enroll()
        collector.send(second.report(posture=Posture(disk_encrypted=False)))
        _deliver_all(collector, "mail-fr")
        manager = smtp.messages[-1]
        assert manager["to"] == ["chef@example.org"] and manager["message"]["Content-Language"] == "ar"
        assert manager["message"]["Subject"] == f"{second.hostname}: إخطار المسؤول للقاعدة disk-encryption (المرحلة 1)"
    finally:
        smtp.stop()


def test_syslog_sink_tcp_json_and_tls_cef_into_rsyslog(collector: Collector, tmp_path: Path) -> None:
    rsyslog = RsyslogReceiver(tmp_path)
    try:
        for name, body in (("siem-tcp", {"host": "127.0.0.1", "port": rsyslog.plain_port, "transport": "tcp",
                                         "format": "json"}),
                           ("siem-tls", {"host": "127.0.0.1", "port": rsyslog.tls_port, "transport": "tls",
                                         "format": "cef", "ca_file": rsyslog.cert})):
            made = collector.admin("POST", "/sinks", json={"name": name, "kind": "syslog", "config": body})
            assert made.status_code == 201, made.text
        device = collector.enroll()
        collector.send(device.report(posture=Posture(disk_encrypted=False)))
        _deliver_all(collector, "siem-tcp")
        _deliver_all(collector, "siem-tls")
        assert eventually(lambda: len(rsyslog.lines()) >= 4), rsyslog.lines()
        plain = [line for line in rsyslog.lines() if line.startswith("plain ")]
        tls = [line for line in rsyslog.lines() if line.startswith("tls ")]
        assert plain and tls
        failing = next(line for line in plain if " teleposture - rule.failing " in line)
        header, _, rest = failing[len("plain "):].partition(" [teleposture@32473 eventId=")
        assert header.startswith("<") and ">1 " in header and " teleposture - rule.failing" in header
        document = json.loads(rest.split("] ", 1)[1].lstrip("\ufeff"))
        assert document["class_uid"] == 2003 and document["device"]["uid"] == device.device_id
        assert any("CEF:0|Teleposture|Teleposture collector|1|rule.failing|" in line for line in tls)
        assert any(f"deviceExternalId={device.device_id}" in line for line in tls)
    finally:
        rsyslog.stop()
