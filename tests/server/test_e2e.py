"""The collector as an operator runs it: `teleposture-server serve` as a real process."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import httpx
import pytest

from benchmarks.collector_sim import SimDevice
from benchmarks.loopback import serve
from tests.server.conftest import Template, init_collector, run_cli


@pytest.mark.slow
def test_token_enrol_report_and_admin_view_over_http(initialised: Template) -> None:
    code, out, _ = run_cli("--data-dir", str(initialised.data_dir), "--database-url", initialised.database_url,
                           "token", "create", "--org-unit", "Field Office", "--uses", "1")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("tpe_") and " " not in token
    with serve(initialised.data_dir, initialised.database_url) as server:
        client = httpx.Client(base_url=server.url, timeout=20)
        device = SimDevice.numbered(1)
        enrolled = client.post("/api/v1/enroll", json=device.enroll_body(token))
        assert enrolled.status_code == 200, enrolled.text
        device.device_id = enrolled.json()["device_id"]
        assert set(enrolled.json()["intervals"]) >= {"check", "upload", "policy_refresh"}

        body = gzip.compress(json.dumps({"envelopes": [device.report()]}).encode())
        sent = client.post("/api/v1/reports", content=body,
                           headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert sent.status_code == 200 and sent.json()["results"][0]["status"] == "accepted"

        admin = {"Authorization": f"Bearer {initialised.admin_token}"}
        listed = client.get("/api/v1/admin/devices", headers=admin, params={"q": "lap-0000"}).json()
        assert [d["hostname"] for d in listed["items"]] == ["lap-000001"]
        assert listed["items"][0]["org_unit"] == "Field Office" and listed["items"][0]["compliance"] == "compliant"
        detail = client.get(f"/api/v1/admin/devices/{device.device_id}", headers=admin).json()
        statuses = {c["rule_id"]: c["status"] for c in detail["checks"]}
        assert statuses["disk-encryption"] == "pass" and statuses["supported-os-version"] == "not_applicable"
        assert len(statuses) == len(device.policy.rules)
        assert detail["checks"][0]["remediation"]["en"]
        assert client.get("/openapi.json").json()["info"]["title"] == "Teleposture collector"


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "mounted"), [((), False), (("--workers", "2", "--benchmark-routes"), True)],
                         ids=["production", "benchmark-workers"])
def test_the_benchmark_ping_is_served_only_when_asked(initialised: Template, flags: tuple[str, ...],
                                                      mounted: bool) -> None:
    # (the worker processes' side, and a stray variable in the environment: test_benchmark_routes.py)
    with serve(initialised.data_dir, initialised.database_url, *flags, start_timeout=90) as server:
        client = httpx.Client(base_url=server.url, timeout=20)
        answer = client.post("/api/v1/ping", content=b'{"x": 1}', headers={"Content-Type": "application/json"})
        assert answer.status_code == (200 if mounted else 404), answer.text
        assert ("/api/v1/ping" in client.get("/openapi.json").json()["paths"]) is mounted
        assert client.get("/api/v1/health").status_code == 200


def test_serve_refuses_insecure_or_unready_setups(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    base = ["--data-dir", str(data_dir), "--database-url", url]

    code, _, err = run_cli(*base, "serve")
    assert code == 2 and "teleposture-server init" in err  # no schema yet

    init_collector(data_dir, url)
    code, _, err = run_cli(*base, "serve", "--host", "0.0.0.0")  # noqa: S104 (the refusal under test)
    assert code == 2 and "without TLS" in err and "--development" in err

    os.chmod(data_dir / "server_signing_key.pem", 0o644)
    code, _, err = run_cli(*base, "serve")
    assert code == 2 and "chmod 600" in err
    os.chmod(data_dir / "server_signing_key.pem", 0o600)

    code, _, err = run_cli(*base, "--database-url", "postgresql+psycopg://tp:postgres@127.0.0.1/x", "serve",
                           "--host", "0.0.0.0", "--behind-tls-proxy")  # noqa: S104
    assert code == 2 and "well-known default" in err

    code, _, err = run_cli(*base, "--database-url", "mysql://x@y/z", "token", "create", "--org-unit", "A")
    assert code == 2 and "unsupported database URL" in err


def test_init_is_idempotent_and_keeps_secrets(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    init_collector(data_dir, url)
    key = (data_dir / "server_signing_key.pem").read_bytes()
    code, out, _ = run_cli("--data-dir", str(data_dir), "--database-url", url, "init")
    assert code == 0 and "(kept)" in out and "tpa_" not in out and "password" not in out
    assert (data_dir / "server_signing_key.pem").read_bytes() == key
    assert oct((data_dir / "server_signing_key.pem").stat().st_mode & 0o777) == "0o600"
