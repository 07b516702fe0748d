"""The load benchmark's POST /api/v1/ping exists only when asked for (`serve --benchmark-routes`).

test_e2e.py starts real `serve` processes (one worker: 404; two workers with the flag: 200); these tests
cover the worker-process path in process: the factory uvicorn's workers call, and the variable the CLI
hands them, which a stray copy in the operator's environment must not turn on.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from server import workers
from server.app import BENCHMARK_ROUTES_ENV, app_from_environment
from tests.server.conftest import Template, collector_settings, run_cli


@pytest.mark.parametrize(("variable", "mounted"), [(None, False), ("0", False), ("1", True)])
def test_worker_factory_mounts_ping_only_when_the_cli_says_so(initialised: Template, monkeypatch: pytest.MonkeyPatch,
                                                              variable: str | None, mounted: bool) -> None:
    settings = collector_settings(initialised.data_dir, initialised.database_url)
    monkeypatch.setenv("TELEPOSTURE_SETTINGS_JSON", settings.model_dump_json())
    monkeypatch.delenv(workers.MASTER_PID_ENV, raising=False)
    if variable is None:
        monkeypatch.delenv(BENCHMARK_ROUTES_ENV, raising=False)
    else:
        monkeypatch.setenv(BENCHMARK_ROUTES_ENV, variable)
    with TestClient(app_from_environment()) as client:
        assert client.post("/api/v1/ping", content=b"{}").status_code == (200 if mounted else 404)
        assert ("/api/v1/ping" in client.get("/openapi.json").json()["paths"]) is mounted


@pytest.mark.parametrize(("flag", "expected"), [((), "0"), (("--benchmark-routes",), "1")])
def test_serve_tells_its_workers_and_overrides_a_stray_variable(initialised: Template,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                flag: tuple[str, ...], expected: str) -> None:
    started: list[dict[str, Any]] = []

    def fake_run(app: Any, **options: Any) -> None:
        started.append({"app": app, "routes": os.environ.get(BENCHMARK_ROUTES_ENV), **options})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv(BENCHMARK_ROUTES_ENV, "1")  # left over in the operator's shell
    monkeypatch.delenv("TELEPOSTURE_SETTINGS_JSON", raising=False)  # restored after the test: serve sets them
    monkeypatch.delenv(workers.MASTER_PID_ENV, raising=False)
    code, _out, err = run_cli("--data-dir", str(initialised.data_dir), "--database-url", initialised.database_url,
                              "serve", "--workers", "2", *flag)
    assert code == 0, err
    assert [(s["app"], s["workers"], s["routes"]) for s in started] == [
        ("server.app:app_from_environment", 2, expected)]
