"""A real collector for the dashboard tests: `teleposture-server init` and `serve` as processes on a
free loopback port with a temporary data directory, seeded through the real API (enrolment tokens,
simulated devices from benchmarks/collector_sim.py enrolling and posting signed reports)."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.collector_sim import Posture, SimDevice
from benchmarks.loopback import serve
from server import cli

XSS_HOSTNAME = "<script>alert(1)</script>"
VIEWER_PASSWORD = "finance-viewer-password-1"
OTHER_ADMIN_PASSWORD = "locked-admin-password-1"
DAY = 86400.0


@dataclass
class LiveCollector:
    url: str
    data_dir: Path
    database_url: str
    admin_password: str
    devices: dict[str, SimDevice] = field(default_factory=dict)  # hostname -> device
    log_path: Path | None = None

    admin_token: str = ""

    def cli(self, *args: str, stdin: str | None = None) -> str:
        return run_cli("--data-dir", str(self.data_dir), "--database-url", self.database_url, *args, stdin=stdin)

    def device_id(self, hostname: str) -> str:
        device_id = self.devices[hostname].device_id
        assert device_id
        return device_id


def run_cli(*args: str, stdin: str | None = None) -> str:
    """`teleposture-server ARGS` in this process (the same code as the command; no interpreter start-up)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        sys.stdin = saved
    assert code == 0, f"teleposture-server {' '.join(args)}: {err.getvalue()}"
    return out.getvalue()


def _run_init(data_dir: Path, database_url: str) -> tuple[str, str]:
    output = run_cli("--data-dir", str(data_dir), "--database-url", database_url, "init")
    match = re.search(r"^admin password: (\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1), output.strip().splitlines()[-1]


def _enroll(client: httpx.Client, token: str, device: SimDevice) -> None:
    response = client.post("/api/v1/enroll", json=device.enroll_body(token))
    assert response.status_code == 200, response.text
    device.device_id = response.json()["device_id"]


def _send(client: httpx.Client, envelopes: list[dict[str, Any]]) -> None:
    response = client.post("/api/v1/reports", json={"envelopes": envelopes})
    assert response.status_code == 200, response.text
    statuses = [item["status"] for item in response.json()["results"]]
    assert all(s == "accepted" for s in statuses), response.text


def seed(live: LiveCollector) -> None:
    """Two org units, six devices, some history: see the table in docs/dashboard.md (tests)."""
    tokens = {}
    with httpx.Client(base_url=live.url, timeout=30,
                      headers={"Authorization": f"Bearer {live.admin_token}"}) as api:
        for unit in ("Finance", "Health"):
            created = api.post("/api/v1/admin/enroll-tokens", json={"org_unit": unit, "expires": "1d"})
            assert created.status_code == 201, created.text
            tokens[unit] = created.json()["token"]
    live.cli("user", "create", "--username", "finance-viewer", "--role", "viewer", "--org-unit", "Finance",
             "--password-stdin", stdin=VIEWER_PASSWORD + "\n")
    live.cli("user", "create", "--username", "locked-admin", "--role", "admin", "--password-stdin",
             stdin=OTHER_ADMIN_PASSWORD + "\n")
    now = time.time()
    good = Posture()
    plan: list[tuple[str, str, str, list[tuple[float, Posture]]]] = [
        ("lap-000001", "Finance", "amina", [(now - 3 * DAY, good), (now - 60, good)]),
        ("lap-000002", "Finance", "youssef", [(now - 3 * DAY, good), (now - DAY, replace(good, disk_encrypted=False)),
                                              (now - 120, replace(good, disk_encrypted=False))]),
        (XSS_HOSTNAME, "Finance", "mallory", [(now - 90, replace(good, vpn_up=False))]),
        ("lap-000004", "Finance", "karim", [(now - 5 * DAY, good)]),
        ("lap-000005", "Finance", "salma", []),
        ("hp-000001", "Health", "nadia", [(now - 30, good)]),
        ("hp-000002", "Health", "omar", [(now - 2 * DAY, good), (now - 45, replace(good, firewall_enabled=False))]),
    ]
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for number, (hostname, unit, user, reports) in enumerate(plan, 1):
            device = SimDevice(hostname=hostname, machine_id=f"web-test-machine-{number:03d}",
                               serial=f"SNWEB{number:05d}", user=user)
            _enroll(client, tokens[unit], device)
            live.devices[hostname] = device
            if reports:
                _send(client, [device.report(created_at=when, posture=posture) for when, posture in reports])
    # lap-000004 went silent five days ago: the collector's last_seen is when it last accepted a report,
    # which the API can only set to "now", so the test ages it in the database (the one direct write).
    engine = sa.create_engine(live.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE devices SET last_seen = :ts WHERE id = :id"),
                     {"ts": now - 5 * DAY, "id": live.device_id("lap-000004")})
        conn.execute(sa.text("UPDATE devices SET enrolled_at = :ts WHERE id = :id"),
                     {"ts": now - 6 * DAY, "id": live.device_id("lap-000004")})
    engine.dispose()


@contextlib.contextmanager
def live_collector(base: Path) -> Iterator[LiveCollector]:
    data_dir = base / "data"
    database_url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    password, admin_token = _run_init(data_dir, database_url)
    # A short maintenance interval so the daily trend snapshot exists within a second or two.
    with serve(data_dir, database_url, env={"TELEPOSTURE_MAINTENANCE_INTERVAL": "1"}) as server:
        live = LiveCollector(url=server.url, data_dir=data_dir, database_url=database_url, admin_password=password,
                             log_path=server.log_path, admin_token=admin_token)
        seed(live)
        yield live
