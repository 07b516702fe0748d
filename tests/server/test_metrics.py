"""GET /metrics: Prometheus text a scraper can parse, counting what the agents saw, and closed to anyone
without the metrics token; the separate metrics listener of a real `serve` process."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.collector_sim import Posture
from benchmarks.loopback import free_port, serve
from server.settings import SettingsError, load_settings
from tests.server.conftest import Template, in_process, run_cli

TOKEN = "metrics-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the exposition format (a parse error fails the test)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_reports_by_outcome_devices_by_status_and_the_pool(initialised: Template) -> None:
    with in_process(initialised, metrics_token=TOKEN) as collector:
        good, bad = collector.enroll(), collector.enroll()
        assert collector.send(good.report())["accepted"] == 1
        bad.posture = Posture(disk_encrypted=False)
        assert collector.send(bad.report())["accepted"] == 1
        again = good.report()
        collector.send(again)
        assert collector.send(again)["duplicate"] == 1
        tampered = {**good.report(), "signature": again["signature"]}
        assert collector.send(tampered)["rejected"] == 1

        answer = collector.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        values = samples(answer.text)
        assert values[("teleposture_reports_total", (("outcome", "accepted"),))] == 3
        assert values[("teleposture_reports_total", (("outcome", "duplicate"),))] == 1
        assert values[("teleposture_reports_total", (("outcome", "rejected"),))] == 1
        assert values[("teleposture_ingest_duration_seconds_count", ())] == 5
        assert values[("teleposture_ingest_duration_seconds_sum", ())] > 0
        assert values[("teleposture_report_batches_total", (("status", "2xx"),))] == 5
        assert values[("teleposture_devices", (("status", "compliant"),))] == 1
        assert values[("teleposture_devices", (("status", "not_compliant"),))] == 1
        assert values[("teleposture_devices", (("status", "unknown"),))] == 0
        assert values[("teleposture_db_pool_connections", (("state", "size"),))] >= 1
        assert values[("teleposture_cluster_listening", ())] == 1
        assert {labels for name, labels in values if name == "teleposture_job_leader"} >= {
            (("job", "daily-snapshot"),), (("job", "retention"),)}


def test_metrics_need_the_token(initialised: Template) -> None:
    with in_process(initialised, metrics_token=TOKEN) as collector:
        assert collector.client.get("/metrics").status_code == 401
        wrong = collector.client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        admin = collector.client.get("/metrics", headers={"Authorization": f"Bearer {collector.admin_token}"})
        assert admin.status_code == 401, "an admin API token is not the metrics token"
        assert "teleposture_reports_total" not in wrong.text + admin.text
    with in_process(initialised) as collector:
        off = collector.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert off.status_code == 404 and "metrics_token" in off.text


@pytest.mark.parametrize("settings, message", [
    ({"metrics_token": "short"}, "metrics_token"),
    ({"metrics_address": "9464"}, "expected HOST:PORT"),
    ({"metrics_address": "127.0.0.1:99999"}, "expected HOST:PORT"),
])
def test_bad_metrics_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(settings, environ={})


def test_a_separate_metrics_listener_of_a_real_node(initialised: Template) -> None:
    address = f"127.0.0.1:{free_port()}"
    with serve(initialised.data_dir, initialised.database_url,
               env={"TELEPOSTURE_METRICS_ADDRESS": address}) as node:
        answer = httpx.get(f"http://{address}/metrics", timeout=10)
        assert answer.status_code == 200
        values = samples(answer.text)
        assert ("teleposture_reports_total", (("outcome", "accepted"),)) in values
        assert ("teleposture_devices", (("status", "compliant"),)) in values
        # The main port answers agents and the dashboard; there the metrics stay closed without a token.
        assert httpx.get(node.url + "/metrics", timeout=10).status_code == 404


def test_serve_refuses_one_metrics_listener_for_several_workers(initialised: Template,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEPOSTURE_METRICS_ADDRESS", f"127.0.0.1:{free_port()}")
    code, _, err = run_cli("--data-dir", str(initialised.data_dir), "--database-url", initialised.database_url,
                           "serve", "--port", str(free_port()), "--workers", "2")
    assert code == 2, err
    assert "use metrics_token" in err
