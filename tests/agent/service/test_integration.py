"""Acceptance: the real agent processes against the real collector process (`teleposture-server serve`).

* collector stopped while the service keeps producing -> everything arrives once it is back, in order,
  nothing twice;
* the service killed with SIGKILL >= 50 times while producing and uploading -> every report that reached the
  outbox reaches the collector exactly once in effect;
* outbox full -> oldest dropped, the count reported; corrupted outbox -> moved aside, work goes on;
* policy: a newer signed policy is applied; another key, a modified bundle and a replayed older genuine
  bundle are refused and the running policy stays.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Set

import pytest

from agent import protocol
from agent.service.core import AgentService
from tests.agent.service.conftest import agent_env, make_settings
from tests.agent.service.realcollector import AGENT, ROOT, RealCollector
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collector(collector: RealCollector) -> RealCollector:
    collector.allow_replacement()  # every test enrols this same machine again, from a fresh state directory
    return collector


@pytest.fixture()
def running(collector: RealCollector) -> Iterator[RealCollector]:
    """The collector, started again if a test left it stopped."""
    if collector.proc is None:
        collector.start()
    yield collector
    if collector.proc is None:
        collector.start()


def _agent(state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([AGENT, *args], env=agent_env(state), capture_output=True, text=True, timeout=timeout)


def _enrol(collector: RealCollector, state: Path) -> str:
    done = _agent(state, "enroll", "--server", collector.url, "--token", collector.token(), "--allow-http")
    assert done.returncode == 0, done.stderr
    return json.loads((state / "identity.json").read_text())["device_id"]


def _outbox_seqs(state: Path) -> Set[int]:
    path = state / "outbox.db"
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {int(r[0]) for r in conn.execute("SELECT seq FROM outbox")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def _last_allocated(state: Path) -> int:
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM counters WHERE name='seq'").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


# The collector keeps the raw payload of at most one report per device per ingested batch (its retention
# rule), and the tests read those payloads to see every seq: so these agents upload one report per request.
# Batching itself is covered against the in-test collector (test_core.py).
ONE_PER_BATCH = ["--upload-batch", "1"]
FAST_RUN = ["--check-interval", "0.2", "--upload-interval", "0.2", "--splay", "0", "--backoff-base", "0.2",
            "--backoff-cap", "0.5", "--log-format", "json", *ONE_PER_BATCH]


def test_collector_outage_then_everything_arrives_in_order_once(running, tmp_path, recording) -> None:
    state = tmp_path / "agent"
    device_id = _enrol(running, state)
    proc = subprocess.Popen([AGENT, "run", "--replay", str(recording), *FAST_RUN], env=agent_env(state),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: len(running.stored_seqs(device_id)) >= 2, 30)
        running.stop()
        before = _last_allocated(state)
        assert eventually(lambda: _last_allocated(state) >= before + 8, 30)  # produced while the collector is away
        assert len(_outbox_seqs(state)) >= 6
        running.start()
        produced_during_outage = _last_allocated(state)
        assert eventually(lambda: max(running.stored_seqs(device_id) or [0]) >= produced_during_outage, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    final = _agent(state, "report", "--now", "--replay", str(recording), *ONE_PER_BATCH)
    assert final.returncode == 0, final.stdout
    seqs = running.stored_seqs(device_id)
    last = _last_allocated(state)
    assert seqs == list(range(1, last + 1))  # all of them, received in seq order, none twice
    detail = running.api(f"/devices/{device_id}")
    assert detail["checks"]


def test_sigkill_loop_loses_nothing_that_was_queued(running, tmp_path, recording) -> None:
    state = tmp_path / "agent"
    device_id = _enrol(running, state)
    rng = random.Random(20261129)
    # a real `run` (cycles every 30 ms, an upload after each) forked per round, killed at a random moment
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.service.forkloop", "run", "--replay", str(recording),
         "--check-interval", "0.03", "--upload-interval", "0.05", "--splay", "0", "--backoff-base", "0.1",
         "--backoff-cap", "0.2", "--log-level", "error", *ONE_PER_BATCH],
        env=agent_env(state), cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert driver.stdin is not None and driver.stdout is not None
    spooled_seen: Set[int] = set()
    kills = 0
    started = time.monotonic()
    try:
        while kills < 60:
            driver.stdin.write("go\n")
            driver.stdin.flush()
            pid = int(driver.stdout.readline())
            time.sleep(rng.uniform(0.05, 0.8))
            os.kill(pid, signal.SIGKILL)
            assert driver.stdout.readline().startswith("reaped")
            kills += 1
            spooled_seen |= _outbox_seqs(state)
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)
    loop_seconds = time.monotonic() - started
    flush = _agent(state, "report", "--now", "--replay", str(recording), *ONE_PER_BATCH)
    assert flush.returncode == 0, flush.stdout + flush.stderr
    assert _outbox_seqs(state) == set()
    stored = running.stored_seqs(device_id)
    last = _last_allocated(state)
    assert stored == sorted(set(stored))  # received in seq order, nothing twice
    assert spooled_seen <= set(stored), f"queued but never delivered: {sorted(spooled_seen - set(stored))}"
    assert stored[-1] == last
    # a kill between allocating a seq and committing its report leaves a gap, never more than one per kill
    missing = sorted(set(range(1, last + 1)) - set(stored))
    assert len(missing) <= kills
    assert last >= kills, f"only {last} reports in {kills} runs: the kills did not hit a working agent"
    print(f"\nkill loop: {kills} SIGKILLs in {loop_seconds:.1f}s, {last} seqs allocated, {len(stored)} delivered, "
          f"{len(spooled_seen)} seen queued, {len(missing)} gaps")


def test_outbox_full_drops_oldest_and_reports_the_count(running, tmp_path, replay_host) -> None:
    state = tmp_path / "agent"
    device_id = _enrol(running, state)
    service = AgentService(make_settings(state, outbox_max_reports="3", upload_batch="1"), host=replay_host)
    try:
        service.produce_report()
        assert service.upload_pending().delivered == 1
        running.stop()
        for _ in range(5):
            service.produce_report()
        outcome = service.upload_pending()
        assert outcome.error and "cannot connect" in outcome.error
        assert service.spool.seqs() == [4, 5, 6] and service.spool.dropped_total() == 2
        running.start()
        service.produce_report()  # seq 7 carries the count; putting it drops seq 4 too
        assert service.upload_pending().error is None
    finally:
        service.close()
    assert running.stored_seqs(device_id) == [1, 5, 6, 7]
    payloads = running.stored_payloads(device_id)
    assert json.loads(payloads[7])["dropped_reports"] == 2
    assert json.loads(payloads[6])["dropped_reports"] == 1
    status = json.loads(_agent(state, "status", "--json").stdout)
    assert status["outbox"]["dropped_total"] == 3 and status["outbox"]["depth"] == 0


def test_corrupted_outbox_is_moved_aside_and_the_agent_keeps_working(running, tmp_path, recording) -> None:
    state = tmp_path / "agent"
    device_id = _enrol(running, state)
    assert _agent(state, "report", "--now", "--replay", str(recording)).returncode == 0
    for suffix in ("-wal", "-shm"):
        Path(str(state / "outbox.db") + suffix).unlink(missing_ok=True)
    (state / "outbox.db").write_bytes(os.urandom(64 * 1024))
    status = json.loads(_agent(state, "status", "--json").stdout)
    assert "unreadable" in status["outbox"]["problem"]
    again = _agent(state, "report", "--now", "--replay", str(recording))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "moved aside" in again.stderr
    assert len(list(state.glob("outbox.db.corrupt-*"))) == 1
    assert running.stored_seqs(device_id) == [1, 2]
    status = json.loads(_agent(state, "status", "--json").stdout)
    assert status["outbox_reset"]["moved_to"].startswith(str(state / "outbox.db.corrupt-"))
    assert status["outbox"]["depth"] == 0


def test_policy_from_the_real_collector(running, tmp_path, replay_host) -> None:
    state = tmp_path / "agent"
    _enrol(running, state)
    original_bundle = json.loads((state / "policy.json").read_text())
    service = AgentService(make_settings(state), host=replay_host)
    try:
        assert service.policy_from_bundle
        version = service.policy.version
        assert service.refresh_policy().message == "policy not modified" or not service.refresh_policy().changed
        newer = json.loads(original_bundle["payload"])
        newer["version"] = version + 1
        newer["intervals"] = dict(newer["intervals"], check=1800)
        policy_file = tmp_path / "newer.json"
        policy_file.write_text(json.dumps(newer))
        running.cli("policy", "push", str(policy_file), "--default")
        outcome = service.refresh_policy()
        assert outcome.changed, outcome.message
        assert service.policy.version == version + 1 and service.intervals()["check"] == 1800
        applied = (state / "policy.json").read_text()

        other_key = protocol.sign_policy_bundle(protocol.generate_private_key(), dict(newer, version=version + 5))
        modified = dict(json.loads(applied))
        modified["payload"] = modified["payload"].replace(f'"version":{version + 1}', f'"version":{version + 9}')
        for bad, reason in ((other_key, "pinned server key"), (modified, "does not verify"),
                            (original_bundle, "never goes back")):
            result = service.apply_bundle(bad)
            assert result.error and reason in result.message
            assert service.policy.version == version + 1
            assert (state / "policy.json").read_text() == applied
    finally:
        service.close()
    status = json.loads(_agent(state, "status", "--json").stdout)
    assert status["policy"]["version"] == version + 1
    assert "never goes back" in status["last_error"]["message"]
