"""Three collector nodes behind the shipped HAProxy configuration (installers/haproxy/teleposture.cfg),
TLS at HAProxy, one PostgreSQL: agents keep sending signed reports one at a time while a node is killed
(SIGKILL) mid-run. Every report ends acknowledged, is stored exactly once, and the agents that retry see
their reports answered, not lost or doubled."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.collector_load import Fleet
from benchmarks.loopback import REPO, ServerProcess, free_port, serve
from tests.server.conftest import init_collector, postgres_database, run_cli

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONFIG = REPO / "installers" / "haproxy" / "teleposture.cfg"
DEVICES = 48
ROUNDS = 8  # reports per device, sent one after the other like an agent's spool
CLIENTS = 6
METRICS_TOKEN = "haproxy-test-metrics-token"


@dataclass
class Outcome:
    answer: str = ""  # accepted | duplicate (a report is retried until it gets one of them)
    attempts: int = 0
    failed_attempts: list[str] = field(default_factory=list)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """(PEM for HAProxy: chain + key, CA file for the clients): a self-signed certificate for 127.0.0.1."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    bundle = directory / "haproxy.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    return bundle, cert


@contextlib.contextmanager
def haproxy(nodes: list[ServerProcess], bundle: Path, log_path: Path) -> Iterator[tuple[str, str]]:
    """The shipped configuration, unchanged, on free ports: (https URL, stats URL)."""
    assert shutil.which("haproxy"), "haproxy is not installed (scripts/setup-dev.sh installs it)"
    port, stats = free_port(), free_port()
    env = {**os.environ, "TELEPOSTURE_LB_BIND": f"127.0.0.1:{port}", "TELEPOSTURE_LB_CERT": str(bundle),
           "TELEPOSTURE_LB_STATS": f"127.0.0.1:{stats}",
           **{f"TELEPOSTURE_NODE{i + 1}": f"127.0.0.1:{node.port}" for i, node in enumerate(nodes)}}
    check = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield f"https://127.0.0.1:{port}", f"http://127.0.0.1:{stats}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _accepted_on(node: ServerProcess) -> float:
    answer = httpx.get(node.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == "teleposture_reports_total" and sample.labels.get("outcome") == "accepted":
                return sample.value
    raise AssertionError("no teleposture_reports_total in " + answer.text[:300])


def _server_states(stats_url: str) -> dict[str, str]:
    """server -> state, from HAProxy's own Prometheus exporter (the stats frontend of the config)."""
    states = {}
    for family in text_string_to_metric_families(httpx.get(stats_url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "haproxy_server_status" and sample.labels.get("proxy") == "collectors" \
                    and sample.value == 1:
                states[sample.labels["server"]] = sample.labels["state"]
    return states


def test_three_nodes_behind_haproxy_lose_and_double_nothing_when_one_dies(tmp_path: Path) -> None:
    bundle, ca_file = _certificate(tmp_path)
    tls = ssl.create_default_context(cafile=str(ca_file))
    env = {"TELEPOSTURE_TRUSTED_PROXIES": "127.0.0.1", "TELEPOSTURE_RAW_REPORT_INTERVAL": "0.001",
           "TELEPOSTURE_METRICS_TOKEN": METRICS_TOKEN}
    with postgres_database() as url, contextlib.ExitStack() as stack:
        data_dir = tmp_path / "data"
        init_collector(data_dir, url)
        code, out, err = run_cli("--data-dir", str(data_dir), "--database-url", url, "token", "create",
                                 "--org-unit", "Ops", "--uses", str(DEVICES))
        assert code == 0, err
        token = out.strip().splitlines()[-1]
        nodes = [stack.enter_context(serve(data_dir, url, env=env)) for _ in range(3)]
        lb_url, stats_url = stack.enter_context(haproxy(nodes, bundle, tmp_path / "haproxy.log"))
        with httpx.Client(base_url=lb_url, verify=tls, timeout=30) as client:
            deadline = time.monotonic() + 20
            while True:  # HAProxy up, and its first health checks passed
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/api/v1/health").status_code == 200:
                        break
                assert time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
                time.sleep(0.2)
            fleet = Fleet(DEVICES, change_fraction=0.1)
            for device in fleet.devices:
                answer = client.post("/api/v1/enroll", json=device.enroll_body(token))
                assert answer.status_code == 200, answer.text
                device.device_id = answer.json()["device_id"]
        rounds = [fleet.round() for _ in range(ROUNDS)]
        outcomes: dict[tuple[str, int], Outcome] = {}
        lock = threading.Lock()
        sent = [0]
        kill_at = DEVICES * ROUNDS // 3
        killed = threading.Event()
        victim = nodes[1]

        def agent_group(index: int) -> None:
            # Devices index, index + CLIENTS, ...: each sends its reports in order, the next only once the
            # previous one was answered, and retries a report until it is (an agent's spool).
            mine = range(index, DEVICES, CLIENTS)
            with httpx.Client(base_url=lb_url, verify=tls, timeout=30) as client:
                for envelopes in rounds:
                    for number in mine:
                        envelope = envelopes[number]
                        outcome = Outcome()
                        with lock:
                            outcomes[(envelope["device_id"], json.loads(envelope["payload"])["seq"])] = outcome
                        retry_until = time.monotonic() + 60
                        while not outcome.answer:
                            outcome.attempts += 1
                            try:
                                answer = client.post("/api/v1/reports", json={"envelopes": [envelope]})
                                if answer.status_code == 200:
                                    outcome.answer = answer.json()["results"][0]["status"]
                                    break
                                outcome.failed_attempts.append(f"HTTP {answer.status_code}")
                            except httpx.TransportError as exc:
                                outcome.failed_attempts.append(type(exc).__name__)
                            assert time.monotonic() < retry_until, f"no answer for a report: {outcome}"
                            time.sleep(0.2)
                        with lock:
                            sent[0] += 1
                            if sent[0] == kill_at:
                                killed.set()

        threads = [threading.Thread(target=agent_group, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        assert killed.wait(120), "the load did not reach a third of its reports"
        before_kill = _accepted_on(victim)
        os.killpg(victim.process.pid, 9)
        victim.process.wait()
        for thread in threads:
            thread.join(180)
        assert all(not t.is_alive() for t in threads)
        # HAProxy's health checks take the dead node out (fall 2 at 1 s intervals), the others stay in.
        deadline = time.monotonic() + 10
        while _server_states(stats_url) != {"node1": "UP", "node2": "DOWN", "node3": "UP"}:
            assert time.monotonic() < deadline, _server_states(stats_url)
            time.sleep(0.2)

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT device_id, seq, count(*) FROM reports GROUP BY device_id, seq"
                                          )).all()
            last_seq = dict(conn.execute(sa.text("SELECT id, last_seq FROM devices")).all())
        engine.dispose()

    assert before_kill > 0, "the killed node had taken no reports: the test proved nothing"
    answers = [o.answer for o in outcomes.values()]
    assert len(answers) == DEVICES * ROUNDS
    assert set(answers) <= {"accepted", "duplicate"}, {a for a in answers if a not in ("accepted", "duplicate")}
    retried = [o for o in outcomes.values() if o.failed_attempts]
    duplicates = [o for o in outcomes.values() if o.answer == "duplicate"]
    # A report is answered "duplicate" only when an earlier attempt reached a node that stored it and died
    # before answering: at most one per client in flight at the kill.
    assert len(duplicates) <= CLIENTS, duplicates
    # Stored exactly once: every report of every device, no (device, seq) twice, nothing else.
    expected = {(device.device_id, seq) for device in fleet.devices for seq in range(1, ROUNDS + 1)}
    assert {(row[0], int(row[1])) for row in stored} == expected
    assert all(int(row[2]) == 1 for row in stored)
    assert all(last_seq[device.device_id] == ROUNDS for device in fleet.devices)
    print(f"HAProxy, 3 nodes, one killed after {kill_at} of {DEVICES * ROUNDS} reports: "
          f"{len(retried)} reports retried by their agent, {len(duplicates)} answered duplicate, "
          f"{sum(o.attempts for o in outcomes.values())} requests, all stored once")
