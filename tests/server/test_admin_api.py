"""Admin API: summary, filtered/sorted/paginated device lists, detail, exports, tokens, policies, audit."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from agent.policy import baseline
from benchmarks.collector_sim import SimDevice
from server.store import maintenance
from server.store.schema import devices
from tests.server.conftest import Collector, Template, in_process, settle_jobs


def _fleet(collector: Collector) -> dict[str, SimDevice]:
    made = {}
    for name, org, posture_change in [("alpha", "Finance", {}), ("bravo", "Finance", {"disk_encrypted": False}),
                                      ("charlie", "HR", {"disk_encrypted": False, "vpn_up": False}),
                                      ("=delta", "HR", {})]:
        device = SimDevice(hostname=name, machine_id=f"m-{name}", serial=f"SER-{name}", user=f"{name}.user")
        collector.enroll(device, org_unit=org)
        collector.send(device.report(posture=replace(device.posture, **posture_change)))
        made[name] = device
    return made


def test_summary_lists_filters_sorting_and_pages(collector: Collector) -> None:
    made = _fleet(collector)
    silent = collector.enroll(SimDevice(hostname="echo", machine_id="m-echo", serial="SER-echo"))
    with collector.db.write() as conn:  # alpha was last seen three days ago: stale
        conn.execute(devices.update().where(devices.c.id == made["alpha"].device_id)
                     .values(last_seen=time.time() - 3 * 86400))
    summary = collector.admin("GET", "/summary").json()
    assert summary["devices"] == 5 and summary["reporting"] == 4
    assert summary["by_compliance"] == {"compliant": 2, "not_compliant": 2, "error": 0, "unknown": 1}
    assert summary["compliant_percent"] == 50.0
    assert summary["stale"] == 1 and summary["never_seen"] == 1
    assert summary["rules"]["disk-encryption"]["fail"] == 2 and summary["rules"]["disk-encryption"]["pass"] == 2
    assert summary["rules"]["vpn-corporate-traffic"]["warn"] == 1  # inside its grace period
    assert collector.admin("GET", "/summary", params={"stale_after": "4d"}).json()["stale"] == 0

    def hostnames(**params: object) -> list[str]:
        response = collector.admin("GET", "/devices", params=params)
        assert response.status_code == 200, response.text
        return [d["hostname"] for d in response.json()["items"]]

    assert hostnames() == ["=delta", "alpha", "bravo", "charlie", "echo"]
    assert hostnames(status="not_compliant") == ["bravo", "charlie"]
    assert hostnames(failing_rule="disk-encryption") == ["bravo", "charlie"]
    assert hostnames(failing_rule="vpn-corporate-traffic", rule_status="warn") == ["charlie"]
    assert hostnames(org_unit="HR") == ["=delta", "charlie"]
    assert hostnames(org_unit="Nope") == []
    assert hostnames(stale="true") == ["alpha"]
    assert hostnames(stale="false", status="compliant") == ["=delta"]
    assert hostnames(q="BRA") == ["bravo"] and hostnames(q="ser-char") == ["charlie"]
    assert hostnames(q="echo.") == [] and hostnames(q="alpha.us") == ["alpha"]
    assert hostnames(q="%") == [], "LIKE wildcards in the search text are literal"
    assert hostnames(platform="linux", os="Debian GNU/Linux", sort="-hostname")[0] == "echo"
    assert hostnames(sort="-fail_count")[:1] == ["bravo"] or hostnames(sort="-fail_count")[:1] == ["charlie"]
    page = collector.admin("GET", "/devices", params={"per_page": 2, "page": 2}).json()
    assert [d["hostname"] for d in page["items"]] == ["bravo", "charlie"] and page["total"] == 5 and page["pages"] == 3
    bad = collector.admin("GET", "/devices", params={"sort": "public_key"})
    assert bad.status_code == 400 and "sort must be one of" in bad.json()["detail"]
    assert collector.admin("GET", "/devices", params={"per_page": 10_000}).status_code == 422
    assert silent.device_id in [d["id"] for d in collector.admin("GET", "/devices", params={"status": "unknown"}
                                                                 ).json()["items"]]


def test_device_detail_history_and_exports(collector: Collector) -> None:
    made = _fleet(collector)
    bravo = made["bravo"]
    collector.send(bravo.report(posture=replace(bravo.posture, disk_encrypted=True)))
    detail = collector.admin("GET", f"/devices/{bravo.device_id}").json()
    disk = next(c for c in detail["checks"] if c["rule_id"] == "disk-encryption")
    assert disk["status"] == "pass" and disk["evidence"] and disk["remediation"]["fr"] and disk["title"]["ar"]
    history = [(h["rule_id"], h["old_status"], h["new_status"]) for h in detail["history"]["items"]]
    assert history[0] == ("disk-encryption", "fail", "pass")
    assert [r["seq"] for r in detail["reports"]] == [2, 1]
    only_disk = collector.admin("GET", f"/devices/{bravo.device_id}/history",
                                params={"rule": "disk-encryption"}).json()
    assert [(h["old_status"], h["new_status"]) for h in only_disk["items"]] == [("fail", "pass"), (None, "fail")]
    assert collector.admin("GET", "/devices/0000/history").status_code == 404

    exported = collector.admin("GET", "/devices/export", params={"format": "csv", "org_unit": "HR"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["hostname"] for r in rows) == ["'=delta", "charlie"], "formula-like cells are quoted"
    as_json = collector.admin("GET", "/devices/export", params={"format": "json", "status": "not_compliant"}).json()
    assert sorted(d["hostname"] for d in as_json) == ["charlie"]
    actions = [e["action"] for e in collector.admin("GET", "/audit").json()["items"]]
    assert actions.count("devices.export") == 2


def test_enrolment_tokens_policies_and_audit(collector: Collector) -> None:
    created = collector.admin("POST", "/enroll-tokens", json={"org_unit": "Remote Sales", "uses": 2, "expires": "2h"})
    assert created.status_code == 201, created.text
    token = created.json()
    assert token["token"].startswith("tpe_") and token["uses_allowed"] == 2 and token["org_unit"] == "Remote Sales"
    assert abs(token["expires_at"] - time.time() - 7200) < 60
    listed = collector.admin("GET", "/enroll-tokens").json()
    assert token["id"] in [t["id"] for t in listed] and all("token" not in t for t in listed)
    assert collector.admin("POST", "/enroll-tokens", json={"org_unit": "X", "expires": "forever"}).status_code == 400
    assert collector.admin("DELETE", f"/enroll-tokens/{token['id']}").json()["revoked_at"] is not None
    refused = collector.client.post("/api/v1/enroll", json=SimDevice.numbered(3).enroll_body(token["token"]))
    assert refused.status_code == 403 and "revoked" in refused.json()["detail"]

    document = baseline().to_json()
    document.update(id="strict-remote", version=3)
    pushed = collector.admin("POST", "/policies", json={"document": json.dumps(document)})
    assert pushed.status_code == 201 and pushed.json()["created"] is True
    again = collector.admin("POST", "/policies", json={"document": json.dumps(document)})
    assert again.json()["created"] is False
    older = collector.admin("POST", "/policies", json={"document": json.dumps({**document, "version": 2})})
    assert older.status_code == 400 and "lower than" in older.json()["detail"]
    invalid = collector.admin("POST", "/policies", json={"document": "id: [unclosed"})
    assert invalid.status_code == 400 and invalid.json()["detail"]["problems"]

    device = collector.enroll(org_unit="Remote Sales")
    assigned = collector.admin("PUT", "/org-units/Remote Sales/policy", json={"policy_id": "strict-remote"})
    assert assigned.status_code == 200 and assigned.json()["policy_id"] == "strict-remote"
    bundle = collector.client.get("/api/v1/policy", headers=device.signed_headers("GET", "/api/v1/policy")).json()
    assert json.loads(bundle["payload"])["id"] == "strict-remote"
    collector.send(device.report())
    assert collector.admin("GET", f"/devices/{device.device_id}").json()["device"]["policy_ref"] == "strict-remote@3"
    unknown = collector.admin("PUT", "/org-units/Remote Sales/policy", json={"policy_id": "nope"})
    assert unknown.status_code == 400
    policies = {(p["policy_id"], p["version"]): p for p in collector.admin("GET", "/policies").json()}
    assert policies[("strict-remote", 3)]["assigned_to"] == ["Remote Sales"]
    assert policies[("ma-telework-baseline", baseline().version)]["default"] is True

    audit = collector.admin("GET", "/audit", params={"per_page": 100}).json()
    actions = {e["action"] for e in audit["items"] if e["actor"].startswith("token:")}
    assert {"enroll_token.create", "enroll_token.revoke", "policy.push", "policy.assign"} <= actions
    assert collector.admin("GET", "/audit", params={"action": "policy.assign"}).json()["total"] == 1

    with collector.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(devices)).scalar() == 1


def test_summary_of_a_large_fleet_reads_the_maintained_counts(initialised: Template) -> None:
    """Above overview_live_limit the summary is the snapshot job's count, with its time and age; at or
    below it (in the caller's scope) it is counted live."""
    with in_process(initialised, overview_live_limit=1) as collector:
        settle_jobs(collector)
        _fleet(collector)  # alpha, bravo in Finance; charlie, =delta in HR
        live = collector.admin("GET", "/summary").json()
        assert live["counted_at"] is None and live["counts_age_seconds"] is None, "no stored counts yet"
        documented = collector.client.get("/openapi.json").json()["components"]["schemas"]["FleetSummaryModel"]
        assert "maintenance job" in documented["properties"]["counted_at"]["description"]
        assert "counted live" in documented["properties"]["counts_age_seconds"]["description"]
        counted_at = time.time() - 120
        with collector.db.write() as conn:
            maintenance.snapshot_daily_stats(conn, now=counted_at, stale_after=collector.settings.stale_after)
        late = SimDevice(hostname="foxtrot", machine_id="m-foxtrot", serial="SER-foxtrot")
        collector.enroll(late, org_unit="HR")
        collector.send(late.report(posture=replace(late.posture, disk_encrypted=False)))

        stored = collector.admin("GET", "/summary").json()
        assert stored["counted_at"] == pytest.approx(counted_at)
        assert 120 <= stored["counts_age_seconds"] < 180
        # The figures of the snapshot: foxtrot, added after it, is in none of them yet.
        assert {k: v for k, v in stored.items() if k not in ("counted_at", "counts_age_seconds")} == \
            {k: v for k, v in live.items() if k not in ("counted_at", "counts_age_seconds")}
        assert stored["devices"] == 4 and stored["rules"]["disk-encryption"]["fail"] == 2
        # Another stale window than the one counted for: counted live.
        other = collector.admin("GET", "/summary", params={"stale_after": "4d"}).json()
        assert other["counted_at"] is None and other["devices"] == 5

        # A viewer of HR sees HR's stored counts only (two devices then, above the limit of one).
        hr = collector.admin("GET", "/summary", token=collector.api_token(org_units=("HR",))).json()
        assert hr["counted_at"] == pytest.approx(counted_at)
        assert hr["devices"] == 2 and hr["by_compliance"]["not_compliant"] == 1
        assert hr["rules"]["disk-encryption"] == {"pass": 1, "warn": 0, "fail": 1, "not_applicable": 0, "error": 0}

    with in_process(initialised) as collector:  # the default limit (50,000): this fleet is counted live
        settle_jobs(collector)
        exact = collector.admin("GET", "/summary").json()
        assert exact["counted_at"] is None and exact["counts_age_seconds"] is None
        assert exact["devices"] == 5 and exact["rules"]["disk-encryption"]["fail"] == 3
        hr = collector.admin("GET", "/summary", token=collector.api_token(org_units=("HR",), name="t2")).json()
        assert hr["counted_at"] is None and hr["devices"] == 3
