"""The scheduled service: cycles and uploads on schedule, backoff, network-change cycles, policy-driven
intervals, clean shutdown on SIGTERM (real `teleposture-agent run` process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from agent import protocol
from agent.policy import baseline
from agent.probes import ProbeResult, ReplayHost
from agent.service.core import AgentService, enroll
from agent.service.scheduler import Daemon
from tests.agent.service.conftest import agent_env, make_settings
from tests.waiting import eventually

FAST = {"check_interval": "0.2", "upload_interval": "0.2", "policy_refresh_interval": "0.5",
        "vpn_sample_interval": "0.1", "splay": "0"}


def _service(tmp_path, fake, host, **flags) -> AgentService:
    settings = make_settings(tmp_path / "state", **dict(FAST, **flags))
    enroll(settings, fake.url, "tok", None, True, host=host)
    return AgentService(settings, host=host)


def _run(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run_forever, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    return thread


def test_cycles_and_uploads_on_schedule_without_overlap(tmp_path, fake, replay_host) -> None:
    service = _service(tmp_path, fake, replay_host)
    running = []
    overlaps = []

    def on_cycle(produced, cpu) -> None:
        running.append(produced.seq)

    original = service.produce_report
    busy = threading.Lock()

    def guarded(trigger="schedule"):
        if not busy.acquire(blocking=False):
            overlaps.append(trigger)
            return original(trigger)
        try:
            time.sleep(0.3)  # longer than the interval: coalesce, never two at once
            return original(trigger)
        finally:
            busy.release()

    service.produce_report = guarded  # type: ignore[method-assign]
    daemon = Daemon(service, splay=0, on_cycle=on_cycle, max_cycles=4, first_cycle_delay=0)
    thread = _run(daemon)
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert running == [1, 2, 3, 4] and overlaps == []
    assert not daemon.scheduler.running
    # the last cycle's upload may not have run before the stop: send what is left
    service.upload_pending()
    assert fake.accepted == [1, 2, 3, 4]
    assert "GET /api/v1/policy" in fake.requests
    service.close()


def test_backoff_honours_retry_after_and_delivers_later(tmp_path, fake, replay_host) -> None:
    service = _service(tmp_path, fake, replay_host, check_interval="3600")
    service.produce_report()
    fake.faults.extend([{"status": 429, "headers": {"Retry-After": "1"}}])
    daemon = Daemon(service, splay=0, first_cycle_delay=3600)
    thread = _run(daemon)
    try:
        assert eventually(lambda: fake.requests.count("POST /api/v1/reports") >= 1, interval=0.05)
        failed_at = time.monotonic()
        assert eventually(lambda: fake.accepted == [1])
        assert time.monotonic() - failed_at >= 0.9  # not before the Retry-After
        assert fake.requests.count("POST /api/v1/reports") == 2  # no hammering in between
    finally:
        daemon.stop()
        thread.join(timeout=10)
        service.close()


class _SwitchingHost(ReplayHost):
    """Replays a machine whose tunnel comes up when the test says so."""

    def __init__(self, recording, tunnel_up: threading.Event) -> None:
        super().__init__(recording)
        self.tunnel_up = tunnel_up

    def interfaces(self) -> ProbeResult:
        data = {"eth0": {"up": True, "mtu": 1500, "addresses": [{"family": "ipv4", "address": "192.0.2.2"}]}}
        if self.tunnel_up.is_set():
            data["tun0"] = {"up": True, "mtu": 1500, "addresses": [{"family": "ipv4", "address": "10.8.0.2"}]}
        return ProbeResult("interfaces", ("psutil",), stdout=json.dumps(data))


def test_network_change_triggers_an_immediate_cycle(tmp_path, fake, replay_host) -> None:
    event = threading.Event()
    host = _SwitchingHost(replay_host.recording, event)
    service = _service(tmp_path, fake, host, check_interval="3600")
    triggers = []
    daemon = Daemon(service, splay=0, first_cycle_delay=3600,
                    on_cycle=lambda produced, cpu: triggers.append(service.state.status()["last_cycle"]["trigger"]))
    thread = _run(daemon)
    try:
        time.sleep(0.5)
        assert triggers == []
        event.set()
        assert eventually(lambda: triggers == ["network_change"], 5, interval=0.05)
        assert eventually(lambda: fake.accepted == [1])
        share = fake.payloads[0]["facts"]["vpn"]["facts"]["vpn_up_share"]
        assert 0 < share < 1  # samples with eth0 only, then one with the tunnel up
    finally:
        daemon.stop()
        thread.join(timeout=10)
        service.close()


def test_new_policy_reschedules_the_jobs(tmp_path, fake, replay_host) -> None:
    service = _service(tmp_path, fake, replay_host, check_interval=None)
    doc = baseline().to_json()
    doc["version"] = 7
    doc["intervals"] = dict(doc["intervals"], check=1234)
    fake.set_policy(protocol.sign_policy_bundle(fake.server_key, doc), '"7"')
    daemon = Daemon(service, splay=0, first_cycle_delay=3600)
    thread = _run(daemon)
    try:
        assert eventually(lambda: service.policy.version == 7)
        assert eventually(lambda: daemon.scheduler.get_job("cycle").trigger.interval.total_seconds() == 1234)
    finally:
        daemon.stop()
        thread.join(timeout=10)
        service.close()


def test_sigterm_stops_the_real_service_cleanly(tmp_path, fake, recording) -> None:
    state = tmp_path / "state"
    env = agent_env(state)
    enrolled = subprocess.run([sys.executable, "-m", "agent.cli.main", "enroll", "--server", fake.url, "--token", "t",
                               "--allow-http"], env=env, capture_output=True, text=True, timeout=60)
    assert enrolled.returncode == 0, enrolled.stderr
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--replay", str(recording),
                             "--log-format", "json", "--check-interval", "0.3", "--upload-interval", "0.3",
                             "--splay", "0"], env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(json.loads(line))
            if sum(1 for entry in lines if entry.get("event") == "cycle") >= 2:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 0
    events = [entry.get("event") for entry in lines]
    assert events[0] == "started" and "signal" in events and events[-1] == "stopped"
    cycle_lines = [entry for entry in lines if entry.get("event") == "cycle"]
    assert all(entry["level"] == "info" and entry["seq"] >= 1 and entry["status"] for entry in cycle_lines)
    assert fake.accepted[:1] == [1]


def test_stop_does_not_wait_forever_for_a_stuck_job(tmp_path, fake, replay_host) -> None:
    service = _service(tmp_path, fake, replay_host)
    release = threading.Event()
    started = threading.Event()

    def stuck(trigger="schedule"):
        started.set()
        release.wait(30)  # a probe or a request that hangs past any reasonable stop
        raise AssertionError("not reached in time")

    service.produce_report = stuck  # type: ignore[method-assign]
    daemon = Daemon(service, splay=0, first_cycle_delay=0)
    thread = _run(daemon)
    try:
        assert started.wait(10), "the cycle job started"
        begin = time.monotonic()
        daemon.stop()
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert time.monotonic() - begin < 15
        assert daemon.running_jobs() == ["cycle"]
    finally:
        release.set()
