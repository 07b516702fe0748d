"""Several collector nodes on one PostgreSQL and nothing else: shared rate and sign-in limits, policy
changes in force on every node within a second (LISTEN/NOTIFY), background jobs run by one node and
taken over when it dies (advisory locks). Real `serve` processes and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.collector_sim import SimDevice
from benchmarks.loopback import REPO, ServerProcess, serve
from server.ratelimit import SharedBuckets, SharedRateLimiter, prune_buckets, take_together
from server.store.db import Database
from tests.server.conftest import init_collector, postgres_database, run_cli
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def cluster_database(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """(data dir, database URL, admin token) of a collector initialised on a new PostgreSQL database."""
    with postgres_database() as url:
        data_dir = tmp_path / "data"
        yield data_dir, url, init_collector(data_dir, url)


@contextlib.contextmanager
def two_nodes(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[str, str, str, list[ServerProcess]]]:
    with cluster_database(tmp_path) as (data_dir, url, admin_token):
        with serve(data_dir, url, env=env) as first, serve(data_dir, url, env=env) as second:
            yield str(data_dir), url, admin_token, [first, second]


def enroll(node: ServerProcess, data_dir: str, url: str, number: int = 1) -> SimDevice:
    code, out, err = run_cli("--data-dir", data_dir, "--database-url", url, "token", "create", "--org-unit", "Ops")
    assert code == 0, err
    device = SimDevice.numbered(number)
    answer = httpx.post(node.url + "/api/v1/enroll", json=device.enroll_body(out.strip().splitlines()[-1]))
    assert answer.status_code == 200, answer.text
    device.device_id = answer.json()["device_id"]
    return device


def test_shared_buckets_grant_exactly_the_limit_across_nodes(tmp_path: Path) -> None:
    with cluster_database(tmp_path) as (_, url, _token):
        db = Database(url)
        buckets = [SharedBuckets(db), SharedBuckets(db)]  # two nodes' pools
        nodes = [SharedRateLimiter(buckets[0], "device", 10), SharedRateLimiter(buckets[1], "device", 10)]
        with ThreadPoolExecutor(8) as pool:
            waits = list(pool.map(lambda i: nodes[i % 2].take("lap-1"), range(40)))
        assert sum(1 for w in waits if w == 0) == 10, waits
        refused = [w for w in waits if w]
        assert all(0 < w <= 6.0 for w in refused), refused  # one token per 6 s at 10/min
        assert nodes[1].wait("lap-1") > 0 and nodes[0].wait("another-device") == 0
        assert nodes[0].take("another-device") == 0, "keys do not share a bucket"
        # Several buckets in one statement: the address is refused, the fresh device granted.
        address = SharedRateLimiter(buckets[0], "ip", 2)
        assert take_together([(address, "192.0.2.7"), (address, "192.0.2.7")]) == 0
        assert take_together([(address, "192.0.2.7"), (nodes[0], "third-device")]) == pytest.approx(30, abs=1)
        assert nodes[1].wait("third-device") == 0, "the third device's token was taken, 9 are left"
        for pool in buckets:
            pool.dispose()
        db.dispose()


def test_idle_buckets_are_pruned_and_busy_ones_kept(tmp_path: Path) -> None:
    with cluster_database(tmp_path) as (_, url, _token):
        db = Database(url)
        buckets = SharedBuckets(db)
        limiter = SharedRateLimiter(buckets, "device", 10)
        for key in ("idle-1", "idle-2", "busy"):
            assert limiter.take(key) == 0
        with db.write() as conn:  # two buckets last touched 3 minutes ago: full again, nothing to keep
            conn.execute(sa.text("UPDATE rate_buckets SET updated_at = updated_at - 180 WHERE key LIKE 'idle-%'"))
        assert prune_buckets(db) == 2
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT key FROM rate_buckets")).scalars().all() == ["busy"]
        assert limiter.wait("busy") == 0 and limiter.take("idle-1") == 0
        buckets.dispose()
        db.dispose()


def test_a_device_limit_holds_across_nodes_not_per_node(tmp_path: Path) -> None:
    with two_nodes(tmp_path, {"TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "6"}) as (data_dir, url, _, nodes):
        device = enroll(nodes[0], data_dir, url)
        codes = []
        for attempt in range(12):
            answer = httpx.post(nodes[attempt % 2].url + "/api/v1/reports", json={"envelopes": [device.report()]})
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["Retry-After"]) >= 1
                assert "too many requests from this address or device" in answer.json()["detail"]
        # In-process buckets would have let 6 through on each node (12 in all).
        assert codes == [200] * 6 + [429] * 6, codes


def test_an_address_limit_holds_across_nodes(tmp_path: Path) -> None:
    with two_nodes(tmp_path, {"TELEPOSTURE_RATE_LIMIT_IP_PER_MINUTE": "8"}) as (data_dir, url, _, nodes):
        devices = [enroll(nodes[0], data_dir, url, number) for number in range(2)]  # 2 of the 8
        codes = [httpx.post(nodes[attempt % 2].url + "/api/v1/reports",
                            json={"envelopes": [devices[attempt % 2].report()]}).status_code
                 for attempt in range(10)]
        # Each node alone would have allowed 8 requests from 127.0.0.1; together they allow 8.
        assert codes == [200] * 6 + [429] * 4, codes


def _login(node: ServerProcess, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=node.url, timeout=30) as client:
        page = client.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text[:500]
        return client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": match.group(1), "next": "/"})


def test_failed_sign_ins_count_across_nodes(tmp_path: Path) -> None:
    with cluster_database(tmp_path) as (data_dir, url, _):
        code, out, err = run_cli("--data-dir", str(data_dir), "--database-url", url, "user", "create",
                                 "--username", "amina", "--role", "viewer")
        assert code == 0, err
        password = out.strip().splitlines()[-1]
        with serve(data_dir, url) as first, serve(data_dir, url) as second:
            nodes = [first, second]
            for attempt in range(5):  # the per-user limit: 5 failures a minute
                assert _login(nodes[attempt % 2], "amina", "wrong password").status_code == 401
            for node in nodes:  # each node saw only 2 or 3 failures itself
                refused = _login(node, "amina", password)
                # the right password, refused before any check with the answer of a wrong one
                assert refused.status_code == 401 and "not recognised" in refused.text, refused.text[:300]
                assert "retry-after" not in refused.headers
            assert _login(first, "someone-else", "x").status_code == 401, "another user is not limited"
            engine = sa.create_engine(url)
            try:
                with engine.connect() as conn:
                    details = conn.execute(sa.text(
                        "SELECT details FROM audit_log WHERE action = 'user.login' AND actor = 'user:amina' "
                        "ORDER BY id")).scalars().all()
            finally:
                engine.dispose()
            limited = [json.loads(d).get("limited") for d in details]
            assert limited == [None] * 5 + ["user name"] * 2, details


def test_a_policy_change_is_in_force_on_every_node_within_a_second(tmp_path: Path) -> None:
    # A cache that only expired after an hour: only the change notice can explain a fresh answer.
    env = {"TELEPOSTURE_POLICY_CACHE_SECONDS": "3600"}
    with two_nodes(tmp_path, env) as (data_dir, url, admin_token, (first, second)):
        device = enroll(first, data_dir, url)

        def served_version(node: ServerProcess) -> int:
            answer = httpx.get(node.url + "/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy"))
            assert answer.status_code == 200, answer.text
            return int(json.loads(answer.json()["payload"])["version"])

        before = served_version(second)  # now cached on the second node
        assert served_version(first) == before
        document = (REPO / "policies" / "ma-telework-baseline.yaml").read_text()
        newer = re.sub(r"^version: \d+$", f"version: {before + 1}", document, count=1, flags=re.MULTILINE)
        pushed = httpx.post(first.url + "/api/v1/admin/policies", json={"document": newer},
                            headers={"Authorization": f"Bearer {admin_token}"})
        assert pushed.status_code == 201, pushed.text
        committed = time.monotonic()
        while served_version(second) != before + 1:
            assert time.monotonic() - committed < 1.0, "the second node still serves the old policy after 1 s"
            time.sleep(0.02)
        assert served_version(first) == before + 1


PROBE_NODE = textwrap.dedent("""
    import sys, time
    from server.cluster import Cluster
    from server.store.db import Database

    url, name, out = sys.argv[1:4]
    cluster = Cluster(Database(url))

    def job():
        with open(out, "a") as handle:
            handle.write(name + "\\n")

    cluster.singleton("probe", 0.1, job, takeover=0.3)
    cluster.start()
    time.sleep(3600)
""")


def _runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_singleton_job_runs_on_one_node_and_moves_when_that_node_dies(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with cluster_database(tmp_path) as (_, url, _):
        nodes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in ("a", "b"):
                nodes[name] = subprocess.Popen([sys.executable, "-c", PROBE_NODE, url, name, str(runs)], env=env,
                                               start_new_session=True)
                if name == "a":
                    wait_until(lambda: "a" in _runs(runs), 20, "node a starts running the job")
            time.sleep(1.5)  # b tried to take the lock about five times meanwhile
            assert set(_runs(runs)) == {"a"}, "the job ran on both nodes at once"
            before = len(_runs(runs))
            os.killpg(nodes["a"].pid, signal.SIGKILL)
            nodes["a"].wait()
            took = wait_until(lambda: "b" in _runs(runs), 10, "node b takes the job over")
            time.sleep(0.5)
            after = _runs(runs)[before:]
            assert after and set(after) <= {"a", "b"} and after[-1] == "b"
            assert "a" not in after[after.index("b"):], "the dead node still runs the job"
            assert took < 5.0, f"takeover took {took:.1f} s"
        finally:
            for process in nodes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _leaders(node: ServerProcess, token: str) -> dict[str, float]:
    answer = httpx.get(node.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {sample.labels["job"]: sample.value for family in text_string_to_metric_families(answer.text)
            for sample in family.samples if sample.name == "teleposture_job_leader"}


def test_real_nodes_run_each_job_once_and_a_survivor_takes_over(tmp_path: Path) -> None:
    token = "cluster-test-metrics-token"
    env = {"TELEPOSTURE_METRICS_TOKEN": token, "TELEPOSTURE_MAINTENANCE_INTERVAL": "1"}
    with two_nodes(tmp_path, env) as (_, _, _, nodes):
        jobs = {"daily-snapshot", "retention", "prune-rate-buckets", "stale-devices"}

        def settled() -> bool:
            views = [_leaders(node, token) for node in nodes]
            return all(set(view) == jobs for view in views) and all(
                sum(view[job] for view in views) == 1 for job in jobs)

        wait_until(settled, 20, "each job held by exactly one node")
        time.sleep(2)  # several intervals later: still exactly one holder per job
        assert settled()
        victim = next(node for node in nodes if _leaders(node, token)["daily-snapshot"] == 1)
        survivor = nodes[1 - nodes.index(victim)]
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        took = wait_until(lambda: all(v == 1 for v in _leaders(survivor, token).values()), 20,
                         "the surviving node takes every job over")
        assert took < 10.0
