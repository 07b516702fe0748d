"""Collector side of agent durability: where the device's seq stands in every answer, the collector's
clock, and the notices an agent sends about itself (seq reset, dropped reports, a cloned identity)."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
import sqlalchemy as sa

from agent import protocol
from server.device_notices import list_notices
from server.store.schema import device_notices, devices, events, server_settings
from tests.server.conftest import Collector
from tests.web.conftest import csrf_of


def _seal(device, seq: int, **extra) -> dict:
    payload = protocol.build_report(device_id=device.device_id, seq=seq, agent_version="test", platform="linux",
                                    policy=device.policy.ref(), facts={}, results=[], extra=extra)
    return protocol.seal(device.key, device.device_id, payload).to_json()


def test_answers_carry_last_seq_report_id_and_server_time(collector: Collector) -> None:
    device = collector.enroll()
    first = device.report()
    before = time.time()
    answer = collector.send(first)
    assert before - 1 <= answer["server_time"] <= time.time() + 1
    assert answer["results"][0]["last_seq"] == 1
    first_id = json.loads(first["payload"])["report_id"]
    # the same report again: its report_id is the one stored at the last seq (a resend)
    again = collector.send(first)["results"][0]
    assert again["status"] == "duplicate" and again["last_seq"] == 1 and again["last_report_id"] == first_id
    # another report with a seq already used (an agent that lost its counter): another report_id
    other = collector.send(_seal(device, 1))["results"][0]
    assert other["status"] == "duplicate" and other["last_report_id"] == first_id
    assert json.loads(_seal(device, 1)["payload"])["report_id"] != first_id

    policy = collector.client.get("/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy"))
    assert policy.headers["X-Teleposture-Last-Seq"] == "1"
    assert abs(float(policy.headers["X-Teleposture-Server-Time"]) - time.time()) < 5
    cached = collector.client.get("/api/v1/policy", headers={
        **device.signed_headers("GET", "/api/v1/policy"), "If-None-Match": policy.headers["ETag"]})
    assert cached.status_code == 304 and cached.headers["X-Teleposture-Last-Seq"] == "1"


def test_seq_reset_and_dropped_reports_become_device_notices(collector: Collector) -> None:
    device = collector.enroll()
    reset = [{"from": 1, "to": 8, "renumbered": 2, "reason": "state restored", "at": "2026-12-05T06:00:00Z"}]
    assert collector.send(_seal(device, 8, seq_reset=reset, dropped_reports=3))["accepted"] == 1
    assert collector.send(_seal(device, 9, dropped_reports=3))["accepted"] == 1  # no growth: no new notice
    assert collector.send(_seal(device, 10, dropped_reports=5))["accepted"] == 1
    with collector.db.read() as conn:
        notices = list_notices(conn, device.device_id)
    assert [(n["kind"], n["seq"]) for n in notices] == [("reports_dropped", 10), ("reports_dropped", 8),
                                                         ("seq_reset", 8)]
    assert notices[0]["details"] == {"total": 5, "new": 2}
    assert notices[2]["details"]["from"] == 1 and notices[2]["details"]["to"] == 8
    # each notice is an event in the outbox too, in its transaction, in order
    with collector.db.read() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.body).where(events.c.device_id == device.device_id,
                                                                          events.c.type != "device.enrolled")
                            .order_by(events.c.id)).all()
    assert [row.type for row in rows] == ["seq.reset", "reports.dropped", "reports.dropped"]
    assert json.loads(rows[0].body)["metadata"]["event_code"] == "seq.reset"


def test_a_report_from_another_machine_is_refused_and_flagged_once(collector: Collector) -> None:
    device = collector.enroll()
    assert collector.send(_seal(device, 1, machine_id=device.machine_id))["accepted"] == 1
    for seq in (2, 3):
        answer = collector.send(_seal(device, seq, machine_id="another-machine"))["results"][0]
        assert answer["status"].startswith("rejected: cloned identity") and "enroll --force" in answer["reason"]
    with collector.db.read() as conn:
        notices = list_notices(conn, device.device_id)
        last_report = conn.execute(sa.select(devices.c.last_report_id).where(devices.c.id == device.device_id)).scalar()
    assert [n["kind"] for n in notices] == ["cloned_identity"]
    assert last_report is not None
    assert notices[0]["details"] == {"machine_id": "another-machine", "enrolled_machine_id": device.machine_id}
    with collector.db.read() as conn:
        cloned = conn.execute(sa.select(events.c.body).where(events.c.device_id == device.device_id,
                                                             events.c.type == "device.cloned")).scalars().all()
    assert len(cloned) == 1 and "another-machine" in cloned[0]


def _device_page(collector: Collector, monkeypatch: pytest.MonkeyPatch, device_id: str) -> str:
    """The device's dashboard page, as an admin who signs in first."""
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    assert collector.cli("user", "create", "--username", "dana", "--role", "admin", "--password-stdin")[0] == 0
    login = collector.client.get("/login")
    assert collector.client.post("/login", data={"username": "dana", "password": "a long enough passphrase",
                                                 "csrf_token": csrf_of(login.text)},
                                 follow_redirects=False).status_code == 303
    return str(collector.client.get(f"/devices/{device_id}").text)


def test_a_silent_device_is_flagged_stale_once_per_silence(collector: Collector,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from server.device_notices import flag_stale_devices

    device = collector.enroll()
    assert collector.send(_seal(device, 1))["accepted"] == 1
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=time.time(), stale_after=60) == 0  # not silent long enough
    time.sleep(1.1)
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=time.time(), stale_after=1) == 1
        assert flag_stale_devices(conn, now=time.time() + 5, stale_after=1) == 0  # the same silence
    assert collector.send(_seal(device, 2))["accepted"] == 1  # it reports again: the next silence counts anew
    time.sleep(1.1)
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=time.time(), stale_after=1) == 1
    with collector.db.read() as conn:
        notices = list_notices(conn, device.device_id)
        stale_events = conn.execute(sa.select(events.c.body).where(events.c.device_id == device.device_id,
                                                                   events.c.type == "device.stale")).scalars().all()
    assert [n["kind"] for n in notices] == ["stale", "stale"]
    assert notices[0]["details"]["silent_seconds"] >= 1 and len(stale_events) == 2
    page = _device_page(collector, monkeypatch, device.device_id)
    assert 'class="notice-stale"' in page and "no report for 0.0 days" in page


def _skewed(device, seq: int, skew: float) -> dict:
    payload = protocol.build_report(device_id=device.device_id, seq=seq, agent_version="test", platform="linux",
                                    policy=device.policy.ref(), results=[],
                                    facts={"os_identity": {"status": "ok", "facts": {"clock_skew_seconds": skew}}})
    return protocol.seal(device.key, device.device_id, payload).to_json()


def test_a_clock_days_off_is_a_notice_and_an_event_once_a_day(collector: Collector,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    device = collector.enroll()
    assert collector.send(_skewed(device, 1, 42.0))["accepted"] == 1  # within tolerance: nothing
    assert collector.send(_skewed(device, 2, -172800.0))["accepted"] == 1
    assert collector.send(_skewed(device, 3, -172790.0))["accepted"] == 1  # the same skew again: not repeated
    assert collector.send(_skewed(device, 4, 7200.0))["accepted"] == 1  # now ahead: a new notice
    with collector.db.read() as conn:
        notices = list_notices(conn, device.device_id)
        skew_events = conn.execute(sa.select(events.c.body).where(events.c.device_id == device.device_id,
                                                                  events.c.type == "clock.skew")
                                   .order_by(events.c.id)).scalars().all()
    assert [(n["kind"], n["seq"], n["details"]["skew_seconds"]) for n in notices] == [
        ("clock_skew", 4, 7200.0), ("clock_skew", 2, -172800.0)]
    assert len(skew_events) == 2 and json.loads(skew_events[0])["metadata"]["event_code"] == "clock.skew"
    page = _device_page(collector, monkeypatch, device.device_id)
    assert 'class="notice-clock_skew"' in page and "by -48.0 hours" in page


def _silent_copies(collector: Collector, count: int, last_seen: float | None, enrolled_at: float) -> list[str]:
    """``count`` active devices like an enrolled one, silent since ``last_seen`` (None: never reported)."""
    template = collector.enroll()
    with collector.db.write() as conn:
        row = dict(conn.execute(sa.select(devices).where(devices.c.id == template.device_id)).mappings().one())
        conn.execute(devices.update().where(devices.c.id == template.device_id).values(state="revoked"))
        ids = [str(uuid.uuid4()) for _ in range(count)]
        conn.execute(devices.insert(), [{**row, "id": device_id, "machine_id": f"m-{device_id}",
                                         "last_seen": last_seen, "enrolled_at": enrolled_at} for device_id in ids])
    return ids


def _stale_notices(collector: Collector) -> dict[str, int]:
    with collector.db.read() as conn:
        rows = conn.execute(sa.select(device_notices.c.device_id, sa.func.count())
                            .where(device_notices.c.kind == "stale").group_by(device_notices.c.device_id)).all()
    return {str(device_id): count for device_id, count in rows}


def test_a_silent_fleet_is_flagged_in_batches_each_device_once(collector: Collector) -> None:
    from server.device_notices import SWEEP_MARK, flag_stale_devices

    now = time.time()
    # 1,200 devices silent for 3 days, the same last_seen for all (ties across batch ends), and 7 that never reported
    silent = _silent_copies(collector, 1200, now - 3 * 86400, now - 30 * 86400)
    with collector.db.write() as conn:
        conn.execute(server_settings.delete().where(server_settings.c.name == SWEEP_MARK))  # a first sweep
        never = [str(i) for i in conn.execute(sa.update(devices).where(devices.c.id.in_(silent[:7]))
                                              .values(last_seen=None).returning(devices.c.id)).scalars()]
    flagged = []
    for _ in range(5):
        with collector.db.write() as conn:
            flagged.append(flag_stale_devices(conn, now=now, stale_after=2 * 86400, limit=500))
    assert flagged == [500, 500, 200, 0, 0]
    assert _stale_notices(collector) == {device_id: 1 for device_id in silent}
    with collector.db.read() as conn:
        mark = conn.execute(sa.select(server_settings.c.value).where(server_settings.c.name == SWEEP_MARK)).scalar()
    assert float(mark) == pytest.approx(now - 2 * 86400)  # done up to the cutoff
    assert set(never) <= set(_stale_notices(collector))


def test_the_sweep_looks_only_past_its_mark_and_follows_a_shorter_stale_after(collector: Collector) -> None:
    from server.device_notices import SWEEP_OVERLAP, flag_stale_devices

    now = time.time()
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=now, stale_after=2 * 86400) == 0  # an empty fleet: the mark is set
    # silent since before the mark (less its overlap): the sweep ran while it went silent, so it was
    # flagged then; the sweep does not look again (this one was made silent behind its back)
    behind = _silent_copies(collector, 1, now - 2 * 86400 - SWEEP_OVERLAP - 60, now - 30 * 86400)
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=now + 60, stale_after=2 * 86400) == 0
    # within the overlap: looked at again, flagged
    with collector.db.write() as conn:
        conn.execute(devices.update().where(devices.c.id == behind[0])
                     .values(last_seen=now - 2 * 86400 - SWEEP_OVERLAP / 2))
        assert flag_stale_devices(conn, now=now + 60, stale_after=2 * 86400) == 1
    # stale_after lowered to one day: the devices silent between the new and the old cutoff count now
    between = _silent_copies(collector, 1, now - 1.5 * 86400, now - 30 * 86400)
    with collector.db.write() as conn:
        assert flag_stale_devices(conn, now=now + 60, stale_after=2 * 86400) == 0
        assert flag_stale_devices(conn, now=now + 60, stale_after=86400) == 1
    assert _stale_notices(collector) == {behind[0]: 1, between[0]: 1}


def test_an_unreadable_sweep_mark_means_one_full_sweep(collector: Collector) -> None:
    from server.device_notices import SWEEP_MARK, flag_stale_devices

    now = time.time()
    silent = _silent_copies(collector, 3, now - 30 * 86400, now - 60 * 86400)
    with collector.db.write() as conn:
        conn.execute(server_settings.delete().where(server_settings.c.name == SWEEP_MARK))
        conn.execute(server_settings.insert().values(name=SWEEP_MARK, value="not a number"))
        assert flag_stale_devices(conn, now=now, stale_after=2 * 86400) == 3
        assert float(conn.execute(sa.select(server_settings.c.value)
                                  .where(server_settings.c.name == SWEEP_MARK)).scalar_one()) == now - 2 * 86400
    assert set(_stale_notices(collector)) == set(silent)
