"""The service core against the in-test collector: enrolment, reports, uploads, faults, policy refresh."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from agent import protocol
from agent.policy import baseline
from agent.service.core import AgentService, ServiceError, enroll
from agent.service.state import StateDir
from tests.agent.service.conftest import make_settings
from tests.agent.service.fakecollector import FakeCollector


def _enrolled(tmp_path: Path, fake: FakeCollector, replay_host, **flags) -> AgentService:
    settings = make_settings(tmp_path / "state", **flags)
    enroll(settings, fake.url, "tok", None, True, host=replay_host)
    return AgentService(settings, host=replay_host)


def test_enroll_writes_identity_key_0600_and_policy(tmp_path, fake, replay_host) -> None:
    settings = make_settings(tmp_path / "state")
    identity = enroll(settings, fake.url, "tok", None, True, host=replay_host)
    state = StateDir(tmp_path / "state")
    assert identity.device_id == "dev-1"
    assert identity.server_key == fake.server_key_b64
    assert stat.S_IMODE(os.stat(state.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state.root).st_mode) == 0o700
    bundle = json.loads(state.policy_path.read_text())
    assert set(bundle) == {"payload", "signature", "key_id"}
    with pytest.raises(ServiceError, match="already enrolled"):
        enroll(settings, fake.url, "tok", None, True, host=replay_host)


def test_enroll_refuses_plain_http_without_the_flag(tmp_path, fake, replay_host) -> None:
    from agent.service.transport import ConfigurationError

    with pytest.raises(ConfigurationError, match="--allow-http"):
        enroll(make_settings(tmp_path / "s"), fake.url, "tok", None, False, host=replay_host)
    assert not (tmp_path / "s" / "identity.json").exists()


def test_report_is_signed_spooled_then_uploaded_in_seq_order(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    produced = [service.produce_report() for _ in range(3)]
    assert [p.seq for p in produced] == [1, 2, 3]
    assert service.spool.seqs() == [1, 2, 3]
    assert fake.accepted == []  # nothing is sent while producing
    outcome = service.upload_pending()
    assert outcome.error is None and outcome.delivered == 3 and outcome.remaining == 0
    assert fake.accepted == [1, 2, 3]
    assert service.state.status()["last_upload_at"]
    service.close()


def test_payload_carries_policy_ref_results_and_dropped_count(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host, outbox_max_reports="2")
    for _ in range(4):
        service.produce_report()
    assert service.spool.seqs() == [3, 4]
    assert service.spool.dropped_total() == 2
    fifth = service.produce_report()
    row = service.spool.batch(10)[-1]
    envelope = protocol.Envelope.from_json(json.loads(row.envelope))
    payload = protocol.open_envelope(envelope, service.key.public_key())
    assert row.seq == fifth.seq == payload["seq"] == 5
    assert payload["dropped_reports"] == 2  # counted when it was signed; putting it evicted #3
    assert service.spool.dropped_total() == 3
    assert payload["policy"] == baseline().ref()
    assert payload["results"] and {"rule_id", "status"} <= set(payload["results"][0])
    assert "os_identity" in payload["facts"]
    service.close()


def test_vpn_up_share_goes_into_the_vpn_facts(tmp_path, fake, replay_host) -> None:
    from agent.service.sampler import Sample

    service = _enrolled(tmp_path, fake, replay_host)
    for up in (True, True, False, True):
        service.sampler.add(Sample(online=True, vpn_up=up, tunnels=("tun0",) if up else (),
                                   default_route_interface="eth0"))
    service.sampler.add(Sample(online=False, vpn_up=False, tunnels=(), default_route_interface=None))
    service.produce_report()
    payload = json.loads(json.loads(service.spool.batch(1)[0].envelope)["payload"])
    assert payload["facts"]["vpn"]["facts"]["vpn_up_share"] == 0.75
    service.close()


@pytest.mark.parametrize("fault", [
    {"status": 500},
    {"status": 503, "headers": {"Retry-After": "1"}},
    {"status": 429, "headers": {"Retry-After": "7"}},
    {"status": 200, "body": "<html>proxy login</html>"},
    {"status": 200, "body": {"results": "nope"}},
], ids=["500", "503-retry-after", "429-retry-after", "garbage-html", "garbage-json"])
def test_faults_keep_reports_queued_then_deliver(tmp_path, fake, replay_host, fault) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    service.produce_report()
    service.produce_report()
    fake.faults.append(fault)
    outcome = service.upload_pending()
    assert outcome.error and outcome.retryable and outcome.remaining == 2
    expected_retry_after = float(fault.get("headers", {}).get("Retry-After", 0)) or None
    assert outcome.retry_after == expected_retry_after
    assert "upload failed" in service.state.status()["last_error"]["message"]
    assert service.spool.seqs() == [1, 2]
    again = service.upload_pending()
    assert again.error is None and again.delivered == 2
    assert fake.accepted == [1, 2] and fake.duplicates == []
    service.close()


def test_slow_collector_times_out_and_nothing_is_lost(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host, http_timeout="0.5")
    service.produce_report()
    fake.faults.append({"sleep": 1.5})
    outcome = service.upload_pending()
    assert outcome.error and "no answer within" in outcome.error
    assert service.spool.seqs() == [1]
    time.sleep(1.2)  # the slow request completes at the fake (accepted there): the retry is a duplicate
    assert service.upload_pending().error is None
    assert fake.accepted == [1] and fake.duplicates == [1] and service.spool.seqs() == []
    service.close()


def test_rejected_report_goes_to_dead_letter_and_does_not_block(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    for _ in range(3):
        service.produce_report()
    fake.reject_seqs.add(2)
    outcome = service.upload_pending()
    assert outcome.delivered == 2 and outcome.rejected == 1 and outcome.remaining == 0
    assert [d["seq"] for d in service.spool.dead_letters()] == [2]
    assert service.spool.rejected_total() == 1
    service.close()


def test_seq_survives_restart_and_is_never_reused(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    service.produce_report()
    service.state.next_seq()  # a process that died after allocating, before spooling
    service.close()
    again = AgentService(make_settings(tmp_path / "state"), host=replay_host)
    assert again.produce_report().seq == 3
    again.close()


def test_corrupted_outbox_is_moved_aside_and_work_goes_on(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    service.produce_report()
    service.close()
    outbox = tmp_path / "state" / "outbox.db"
    for extra in ("-wal", "-shm"):
        Path(str(outbox) + extra).unlink(missing_ok=True)
    outbox.write_bytes(b"this is not a database" * 100)
    again = AgentService(make_settings(tmp_path / "state"), host=replay_host)
    aside = list((tmp_path / "state").glob("outbox.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    status = again.state.status()
    assert "moved aside" in status["last_error"]["message"]
    assert again.spool.dropped_total() == 1  # the one that was queued in the lost outbox
    produced = again.produce_report()
    assert produced.seq == 2
    assert again.upload_pending().delivered == 1
    assert fake.accepted == [2]
    again.close()


# -- policy refresh -------------------------------------------------------------------------------------

def _bundle(key, version: int, **changes) -> dict:
    doc = baseline().to_json()
    doc["version"] = version
    doc.update(changes)
    return protocol.sign_policy_bundle(key, doc)


def test_newer_signed_policy_is_applied_and_kept(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    fake.set_policy(_bundle(fake.server_key, 5, intervals={"check": 120, "upload": 60,
                                                          "policy_refresh": 600, "vpn_sample": 60}), '"5"')
    changed: list = []
    service.on_policy_change.append(changed.append)
    outcome = service.refresh_policy()
    assert outcome.changed and service.policy.version == 5 and changed[0].version == 5
    assert service.intervals()["check"] == 120
    assert service.refresh_policy().message == "policy not modified"  # ETag honoured
    service.close()
    again = AgentService(make_settings(tmp_path / "state"), host=replay_host)
    assert again.policy.version == 5
    again.produce_report()
    payload = json.loads(json.loads(again.spool.batch(1)[0].envelope)["payload"])
    assert payload["policy"]["version"] == 5
    again.close()


def _tampered(fake: FakeCollector) -> dict:
    bundle = _bundle(fake.server_key, 9)
    return dict(bundle, payload=bundle["payload"].replace('"version":9', '"version":10'))


@pytest.mark.parametrize("make_bundle, reason", [
    (lambda fake: _bundle(protocol.generate_private_key(), 9), "pinned server key"),
    (_tampered, "does not verify"),
    (lambda fake: _bundle(fake.server_key, 3), "never goes back"),
    (lambda fake: _bundle(fake.server_key, 5, rules="not a list"), "policy bundle refused"),
], ids=["other-key", "modified", "older-version", "invalid-document"])
def test_bad_policy_bundles_are_refused_and_running_policy_stays(tmp_path, fake, replay_host,
                                                                  make_bundle, reason) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    # 4: newer than the bundled baseline (version 3) the service starts with
    fake.set_policy(_bundle(fake.server_key, 4), '"4"')
    assert service.refresh_policy().changed
    stored = (tmp_path / "state" / "policy.json").read_text()
    fake.set_policy(make_bundle(fake), '"bad"')
    outcome = service.refresh_policy()
    assert outcome.error and not outcome.changed and reason in outcome.message
    assert service.policy.version == 4
    assert (tmp_path / "state" / "policy.json").read_text() == stored
    assert reason in service.state.status()["last_error"]["message"]
    service.close()


def test_tampered_policy_on_disk_is_not_used(tmp_path, fake, replay_host) -> None:
    service = _enrolled(tmp_path, fake, replay_host)
    fake.set_policy(_bundle(fake.server_key, 4), '"4"')
    service.refresh_policy()
    service.close()
    path = tmp_path / "state" / "policy.json"
    bundle = json.loads(path.read_text())
    bundle["payload"] = bundle["payload"].replace('"version":4', '"version":40')
    path.write_text(json.dumps(bundle))
    again = AgentService(make_settings(tmp_path / "state"), host=replay_host)
    assert again.policy.version == baseline().version and not again.policy_from_bundle
    assert "refused" in again.state.status()["last_error"]["message"]
    again.close()


def test_not_enrolled_is_a_clear_error(tmp_path) -> None:
    from agent.service.state import NotEnrolled

    with pytest.raises(NotEnrolled, match="teleposture-agent enroll"):
        AgentService(make_settings(tmp_path / "nothing"))
