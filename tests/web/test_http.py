"""Dashboard over HTTP against a real collector process: sign-in, sessions, CSRF, roles, org-unit scope,
escaping, filters, exports, policies (validation, dry-run, diff), tokens, revocation, languages."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from agent.policy import baseline
from tests.web.conftest import csrf_of, sign_in
from tests.web.live import OTHER_ADMIN_PASSWORD, XSS_HOSTNAME, LiveCollector


def _rows(html: str) -> list[str]:
    """Host names in the device table, in order."""
    return [re.sub(r"<[^>]+>", "", m) for m in re.findall(r'class="host" dir="auto">(.*?)</a>', html)]


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")


def _device_state(live: LiveCollector, device_id: str) -> str:
    engine = sa.create_engine(live.database_url)
    with engine.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM devices WHERE id = :id"), {"id": device_id}).scalar_one()
    engine.dispose()
    return str(state)


def _count(live: LiveCollector, sql: str, **params: object) -> int:
    engine = sa.create_engine(live.database_url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql), params).scalar_one()
    engine.dispose()
    return int(value)


def _unit_id(live: LiveCollector, name: str) -> int:
    return _count(live, "SELECT id FROM org_units WHERE name = :n", n=name)


# -- sign-in and sessions ----------------------------------------------------------------------

def test_pages_redirect_to_sign_in_without_a_session(live: LiveCollector) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for path in ("/", "/devices", "/devices/export.csv", "/policies", "/audit", "/report"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/login?next=" + quote(path, safe="")


def test_session_cookie_is_httponly_lax_and_not_secure_on_plain_http(live: LiveCollector) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        page = client.get("/login")
        answer = client.post("/login", data={"username": "admin", "password": live.admin_password,
                                             "csrf_token": csrf_of(page.text), "next": "/devices"})
    assert answer.status_code == 303 and answer.headers["location"] == "/devices"
    cookie = next(v for v in answer.headers.get_list("set-cookie") if v.startswith("tp_session="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
    assert "path=/" in flags


def test_sign_in_refuses_a_missing_or_foreign_csrf_token(live: LiveCollector) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        client.get("/login")
        assert client.post("/login", data={"username": "admin", "password": live.admin_password}).status_code == 403
        other = httpx.get(live.url + "/login")  # another browser's token does not fit this browser's nonce
        answer = client.post("/login", data={"username": "admin", "password": live.admin_password,
                                             "csrf_token": csrf_of(other.text)})
        assert answer.status_code == 403
        assert "tp_session" not in client.cookies


def test_wrong_password_is_refused_and_audited(live: LiveCollector) -> None:
    before = _count(live, "SELECT count(*) FROM audit_log WHERE action = 'user.login' AND outcome = 'failed'")
    with httpx.Client(base_url=live.url, timeout=30) as client:
        page = client.get("/login")
        answer = client.post("/login", data={"username": "admin", "password": "not-the-password",
                                             "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 401
        assert "not recognised" in answer.text
        assert "tp_session" not in client.cookies
    after = _count(live, "SELECT count(*) FROM audit_log WHERE action = 'user.login' AND outcome = 'failed'")
    assert after == before + 1


def test_repeated_failures_lock_the_user_name_even_for_the_right_password(live: LiveCollector) -> None:
    limited_sql = ("SELECT count(*) FROM audit_log WHERE action = 'user.login' AND outcome = 'failed' "
                   "AND details LIKE '%\"limited\": \"user name\"%'")
    before = _count(live, limited_sql)
    with httpx.Client(base_url=live.url, timeout=30) as client:
        page = client.get("/login")
        token = csrf_of(page.text)
        for _ in range(5):
            answer = client.post("/login", data={"username": "locked-admin", "password": "guess-guess-guess",
                                                 "csrf_token": token})
            assert answer.status_code == 401
        answer = client.post("/login", data={"username": "locked-admin", "password": OTHER_ADMIN_PASSWORD,
                                             "csrf_token": token})
        # refused unchecked, with the answer of a wrong password: the limit tells nothing about the name
        assert answer.status_code == 401 and "not recognised" in answer.text
        assert "retry-after" not in answer.headers
        assert "tp_session" not in client.cookies
    assert _count(live, limited_sql) == before + 1, "the refusal is in the audit log"


def test_forged_or_tampered_session_cookie_is_not_a_session(live: LiveCollector, admin: httpx.Client) -> None:
    value = admin.cookies["tp_session"]
    body, mac = value.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    for cookie in (f"{forged_body}.{mac}", f"{body}.{mac[:-2]}xx", "garbage", ""):
        with httpx.Client(base_url=live.url, cookies={"tp_session": cookie}) as client:
            assert client.get("/").status_code == 303


def test_sign_out_needs_csrf_and_ends_the_session_for_every_copy(live: LiveCollector, admin: httpx.Client) -> None:
    assert admin.post("/logout").status_code == 403
    copied = admin.cookies["tp_session"]
    other = sign_in(live.url, "admin", live.admin_password)  # the same user in another browser
    page = admin.get("/")
    answer = admin.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert "tp_session" not in admin.cookies
    assert admin.get("/").status_code == 303
    with httpx.Client(base_url=live.url, cookies={"tp_session": copied}) as copy:
        answer = copy.get("/devices")
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fdevices"
        answer = copy.get("/devices", headers={"HX-Request": "true"})
        assert answer.status_code == 204 and answer.headers["hx-redirect"] == "/login?next=%2Fdevices"
    assert other.get("/").status_code == 200, "the user's other session goes on"
    other.close()


# -- pages -------------------------------------------------------------------------------------

def test_every_page_renders_with_security_headers(live: LiveCollector, admin: httpx.Client) -> None:
    device = live.device_id("lap-000002")
    for path in ("/", "/devices", f"/devices/{device}", f"/devices/{device}/revoke", "/policies", "/policies/1",
                 "/policies/1/dry-run", "/tokens", "/audit", "/report"):
        answer = admin.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert "<script>" not in answer.text.replace('<script src=', '').replace('<script type="application/json"', ''), path


def test_overview_counts_stale_apart_from_compliance(live: LiveCollector, admin: httpx.Client) -> None:
    html = admin.get("/").text
    # Reporting in the last 2 days: lap-000001, lap-000002, the <script> host, hp-000001, hp-000002;
    # lap-000004 is stale (5 days) and lap-000005 never reported. Compliant: 4 of 5.
    assert re.search(r'id="compliance-percent">80.0', html), html
    assert "4 compliant of 5 devices" in html
    assert re.search(r'id="stale-count">1<', html)
    finance = _unit_id(live, "Finance")
    unit = admin.get(f"/?org_unit={finance}").text
    assert "2 compliant of 3 devices" in unit and "hp-000001" not in unit


def test_overview_shows_newest_failures_and_rule_bars(live: LiveCollector, admin: httpx.Client) -> None:
    html = admin.get("/").text
    changes = html.split("Newest failures")[1].split("</section>")[0]
    assert "lap-000002" in changes and "disk-encryption" in changes
    assert 'class="seg-fail"' in html  # disk-encryption has one failing device
    assert "<svg class=\"bar\"" in html


def test_xss_hostname_is_text_everywhere(live: LiveCollector, admin: httpx.Client) -> None:
    device = live.device_id(XSS_HOSTNAME)
    for path in ("/devices", f"/devices/{device}", "/devices?q=%3Cscript"):
        html = admin.get(path).text
        assert "<script>alert(1)</script>" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    rows = _rows(admin.get("/devices?q=%3Cscript").text)
    assert [_unescape(r) for r in rows] == [XSS_HOSTNAME]


def test_device_filters_search_and_sort(live: LiveCollector, admin: httpx.Client) -> None:
    assert _rows(admin.get("/devices?rule=disk-encryption").text) == ["lap-000002"]
    assert _rows(admin.get("/devices?rule=firewall-enabled&rule_status=warn").text) == ["hp-000002"]
    assert _rows(admin.get("/devices?status=not_compliant").text) == ["lap-000002"]
    assert _rows(admin.get("/devices?stale=yes").text) == ["lap-000004"]
    assert _rows(admin.get("/devices?status=unknown").text) == ["lap-000005"]
    assert _rows(admin.get("/devices?q=LAP-00000").text) == ["lap-000001", "lap-000002", "lap-000004", "lap-000005"]
    assert _rows(admin.get("/devices?q=youss").text) == ["lap-000002"]  # user name prefix
    assert _rows(admin.get("/devices?q=SNWEB00006").text) == ["hp-000001"]  # serial prefix
    assert _rows(admin.get(f"/devices?org_unit={_unit_id(live, 'Health')}").text) == ["hp-000001", "hp-000002"]
    assert _rows(admin.get("/devices?os=Debian+GNU%2FLinux&q=hp").text) == ["hp-000001", "hp-000002"]
    names = _rows(admin.get("/devices?sort=-hostname").text)
    assert names == sorted(names, key=str.lower, reverse=True) and len(names) == 7
    page = admin.get("/devices?per_page=25&sort=hostname&page=1").text
    assert "Page 1 of 1" in page and "7 devices" in page


def test_htmx_request_gets_only_the_table(live: LiveCollector, admin: httpx.Client) -> None:
    answer = admin.get("/devices?status=not_compliant", headers={"HX-Request": "true"})
    assert answer.status_code == 200
    assert answer.text.lstrip().startswith('<section id="device-results"')
    assert "<html" not in answer.text and _rows(answer.text) == ["lap-000002"]


def test_bad_filter_values_get_a_clear_400(live: LiveCollector, admin: httpx.Client) -> None:
    answer = admin.get("/devices?sort=password_hash")
    assert answer.status_code == 400 and "sort must be one of" in answer.text
    assert "hostname" in answer.text
    assert admin.get("/devices?status=hacked").status_code == 400
    assert admin.get("/devices?stale=maybe").status_code == 400
    assert admin.get("/devices?page=0").status_code == 400
    assert admin.get("/devices?per_page=100000").status_code == 400
    assert admin.get("/report?since=yesterday").status_code == 400


def test_device_detail_shows_checks_failing_since_timeline_and_versions(live: LiveCollector,
                                                                         admin: httpx.Client) -> None:
    html = admin.get(f"/devices/{live.device_id('lap-000002')}").text
    checks = html.split('class="checks"')[1].split("</table>")[0]
    first_row = checks.split("<tbody>")[1].split("</tr>")[0]
    assert "disk-encryption" in first_row and "st-fail" in first_row  # failures sort first
    assert ">24 h ago<" in first_row  # failing since the report one day ago
    assert "Turn on full-disk encryption" in first_row  # remediation from the policy version
    assert "System disk encrypted" in first_row
    timeline = html.split('class="timeline"')[1].split("</ol>")[0]
    assert "disk-encryption" in timeline and "st-pass" in timeline and "st-fail" in timeline
    assert "0.1.0" in html and f"ma-telework-baseline@{baseline().version}" in html
    assert "youssef" in html and "SNWEB00002" in html


def test_unknown_device_is_404(live: LiveCollector, admin: httpx.Client) -> None:
    assert admin.get("/devices/00000000-0000-0000-0000-000000000000").status_code == 404
    assert admin.get("/devices/not-a-uuid!").status_code in (400, 404)


# -- exports -----------------------------------------------------------------------------------

def test_device_csv_export_follows_the_filter(live: LiveCollector, admin: httpx.Client) -> None:
    answer = admin.get("/devices/export.csv?org_unit=" + str(_unit_id(live, "Finance")))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(r["hostname"] for r in rows) == sorted(["lap-000001", "lap-000002", XSS_HOSTNAME,
                                                          "lap-000004", "lap-000005"])
    assert {r["org_unit"] for r in rows} == {"Finance"}
    assert _count(live, "SELECT count(*) FROM audit_log WHERE action = 'devices.export'") >= 1


def test_check_state_csv_export(live: LiveCollector, admin: httpx.Client) -> None:
    rows = list(csv.DictReader(io.StringIO(admin.get("/devices/checks.csv?status=not_compliant").text)))
    assert {r["hostname"] for r in rows} == {"lap-000002"}
    disk = next(r for r in rows if r["rule_id"] == "disk-encryption")
    assert disk["status"] == "fail" and float(disk["failing_since"]) < time.time() - 80000
    assert len(rows) == len(baseline().rules)  # every rule of the baseline


# -- roles and scope ---------------------------------------------------------------------------

def test_viewer_sees_no_admin_buttons_and_admin_endpoints_refuse(live: LiveCollector, viewer: httpx.Client) -> None:
    device = live.device_id("lap-000002")
    page = viewer.get(f"/devices/{device}")
    assert page.status_code == 200
    assert "revoke-link" not in page.text and 'href="/audit"' not in page.text and 'href="/tokens"' not in page.text
    policies = viewer.get("/policies").text
    assert "upload-form" not in policies and "/policies/assign" not in policies
    token = csrf_of(page.text)  # a valid token of the viewer's own session
    denied_before = _count(live, "SELECT count(*) FROM audit_log WHERE outcome = 'denied'")
    assert viewer.get("/audit").status_code == 403
    assert viewer.get("/tokens").status_code == 403
    assert viewer.get(f"/devices/{device}/revoke").status_code == 403
    assert viewer.post(f"/devices/{device}/revoke", data={"csrf_token": token, "confirm": "lap-000002"}).status_code == 403
    assert viewer.post("/tokens", data={"csrf_token": token, "org_unit": "Finance"}).status_code == 403
    assert viewer.post("/policies/check", data={"csrf_token": token, "document": "x"}).status_code == 403
    assert viewer.post("/policies/assign", data={"csrf_token": token, "org_unit": "1",
                                                 "policy_id": "x"}).status_code == 403
    assert _device_state(live, device) == "active"
    assert _count(live, "SELECT count(*) FROM audit_log WHERE outcome = 'denied'") == denied_before + 7


def test_viewer_of_one_org_unit_never_sees_another(live: LiveCollector, viewer: httpx.Client) -> None:
    names = _rows(viewer.get("/devices").text)
    assert names and not any(n.startswith("hp-") for n in names)
    health = _unit_id(live, "Health")
    assert _rows(viewer.get(f"/devices?org_unit={health}").text) == []
    assert viewer.get(f"/devices/{live.device_id('hp-000001')}").status_code == 404
    exported = viewer.get("/devices/export.csv").text + viewer.get("/devices/checks.csv").text
    assert "hp-00000" not in exported and "lap-000002" in exported
    overview = viewer.get("/").text
    assert "Health" not in overview and "3 devices that reported" in overview
    assert "Health" not in viewer.get(f"/?org_unit={health}").text
    assert "hp-000002" not in viewer.get(f"/report?org_unit={health}").text


# -- CSRF on every form ------------------------------------------------------------------------

def test_forms_without_a_valid_csrf_token_are_refused(live: LiveCollector, admin: httpx.Client) -> None:
    device = live.device_id("lap-000001")
    tokens_before = _count(live, "SELECT count(*) FROM enroll_tokens")
    other = sign_in(live.url, "finance-viewer", "finance-viewer-password-1")
    foreign = csrf_of(other.get("/").text)  # valid, but for another session
    other.close()
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}, {"csrf_token": foreign}):
        assert admin.post("/tokens", data={**data, "org_unit": "Finance"}).status_code == 403
        assert admin.post(f"/devices/{device}/revoke", data={**data, "confirm": "lap-000001"}).status_code == 403
        assert admin.post("/policies/assign", data={**data, "org_unit": "1", "policy_id": ""}).status_code == 403
        assert admin.post("/policies/check", data={**data, "document": "schema: x"}).status_code == 403
        assert admin.post("/lang", data={**data, "lang": "fr"}).status_code == 403
    assert admin.post("/tokens", json={"org_unit": "Finance"}).status_code == 403
    assert _count(live, "SELECT count(*) FROM enroll_tokens") == tokens_before
    assert _device_state(live, device) == "active"


def test_htmx_header_token_is_accepted(live: LiveCollector, admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/").text)
    answer = admin.post("/tokens", data={"org_unit": "Finance", "expires": "1h"},
                        headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert answer.status_code == 201


# -- tokens, revocation, policies --------------------------------------------------------------

def test_enrolment_token_is_shown_once_works_and_can_be_revoked(live: LiveCollector, admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/tokens").text)
    created = admin.post("/tokens", data={"csrf_token": token, "org_unit": "Health", "uses": "2", "expires": "2h"})
    assert created.status_code == 201
    secret = re.search(r'id="new-token"[^>]*>(tpe_[A-Za-z0-9_-]+)<', created.text).group(1)  # type: ignore[union-attr]
    assert secret not in admin.get("/tokens").text  # shown once only
    from benchmarks.collector_sim import SimDevice
    device = SimDevice(hostname="token-probe", machine_id="token-probe-machine", serial="SNPROBE")
    assert httpx.post(live.url + "/api/v1/enroll", json=device.enroll_body(secret)).status_code == 200
    token_id = _count(live, "SELECT max(id) FROM enroll_tokens")
    assert admin.post(f"/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code == 303
    again = SimDevice(hostname="token-probe-2", machine_id="token-probe-machine-2", serial="SNPROBE2")
    refused = httpx.post(live.url + "/api/v1/enroll", json=again.enroll_body(secret))
    assert refused.status_code == 403 and "revoked" in refused.text


def test_revoke_needs_the_host_name_typed(live: LiveCollector, admin: httpx.Client) -> None:
    device = live.device_id("lap-000005")
    page = admin.get(f"/devices/{device}/revoke")
    token = csrf_of(page.text)
    wrong = admin.post(f"/devices/{device}/revoke", data={"csrf_token": token, "confirm": "lap-000001"})
    assert wrong.status_code == 400 and _device_state(live, device) == "active"
    done = admin.post(f"/devices/{device}/revoke", data={"csrf_token": token, "confirm": "lap-000005"})
    assert done.status_code == 303 and _device_state(live, device) == "revoked"
    assert admin.post(f"/devices/{device}/revoke", data={"csrf_token": token,
                                                         "confirm": "lap-000005"}).status_code == 409
    assert _count(live, "SELECT count(*) FROM audit_log WHERE action = 'device.revoke' AND target = :t", t=device) == 1


POLICY_V1 = textwrap.dedent("""\
    schema: teleposture/policy/v1
    id: http-test-policy
    version: 1
    title: {en: Disk only, fr: Disque seulement, ar: القرص فقط}
    rules:
      - id: disk-encryption
        check: disk_encryption
        severity: critical
        grace: 0h
        expect: {system_volume_encrypted: true}
        remediation: {en: Encrypt the disk., fr: Chiffrez le disque., ar: شفّر القرص.}
        title: {en: Disk encrypted, fr: Disque chiffré, ar: القرص مشفر}
    """)


def _check(admin: httpx.Client, document: str) -> httpx.Response:
    token = csrf_of(admin.get("/policies").text)
    return admin.post("/policies/check", data={"csrf_token": token, "document": document})


def test_invalid_policy_shows_line_numbered_problems_and_stores_nothing(live: LiveCollector,
                                                                        admin: httpx.Client) -> None:
    before = _count(live, "SELECT count(*) FROM policies")
    broken = POLICY_V1.replace("check: disk_encryption", "check: disk_encryptoin").replace(
        "system_volume_encrypted: true", "system_volume_encrypted: yes please")
    answer = _check(admin, broken)
    assert answer.status_code == 400
    problems = re.findall(r"<li><code>(upload:\d+:[^<]*)</code></li>", answer.text)
    assert problems and any(p.startswith("upload:7:") and "disk_encryptoin" in _unescape(p) for p in problems)
    assert _count(live, "SELECT count(*) FROM policies") == before


def test_dry_run_counts_from_stored_facts_then_store_and_diff(live: LiveCollector, admin: httpx.Client) -> None:
    answer = _check(admin, POLICY_V1)
    assert answer.status_code == 200, answer.text
    summary = re.sub(r"\s+", " ", answer.text.split('id="dry-summary">')[1].split("</p>")[0])
    # Six devices have stored reports; only lap-000002's disk is unencrypted.
    assert "of 6 devices: 5 would be compliant, 1 not compliant, 0 in error" in summary, summary
    assert "1 device has no stored report" in answer.text or "lap-000005" not in answer.text
    token = csrf_of(answer.text)
    stored = admin.post("/policies/store", data={"csrf_token": token, "document": POLICY_V1})
    assert stored.status_code == 303
    v1 = int(stored.headers["location"].split("/")[2].split("?")[0])
    v2_text = POLICY_V1.replace("version: 1", "version: 2").replace("grace: 0h", "grace: 72h")
    checked = _check(admin, v2_text)
    assert "1 would be compliant" not in checked.text
    assert "-  grace: 0<" in checked.text and "+  grace: 259200<" in checked.text  # diff with the stored v1
    stored2 = admin.post("/policies/store", data={"csrf_token": token, "document": v2_text})
    v2 = int(stored2.headers["location"].split("/")[2].split("?")[0])
    diff = admin.get(f"/policies/{v2}?against={v1}").text
    assert 'class="d-del">-  grace: 0</span>' in diff and 'class="d-add">+  grace: 259200</span>' in diff
    finance = _unit_id(live, "Finance")
    scoped = admin.get(f"/policies/{v2}/dry-run?org_unit={finance}").text
    assert "of 4 devices" in re.sub(r"\s+", " ", scoped.split('id="dry-summary">')[1].split("</p>")[0])
    entries = _count(live, "SELECT count(*) FROM audit_log WHERE action = 'policy.push' AND target LIKE 'http-test-policy@%'")
    assert entries == 2


def test_assign_policy_to_org_unit(live: LiveCollector, admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/policies").text)
    health = _unit_id(live, "Health")
    missing = admin.post("/policies/assign", data={"csrf_token": token, "org_unit": str(health),
                                                   "policy_id": "no-such-policy"})
    assert missing.status_code == 400 and "push it first" in missing.text
    answer = admin.post("/policies/assign", data={"csrf_token": token, "org_unit": str(health), "policy_id": ""})
    assert answer.status_code == 303
    assert _count(live, "SELECT count(*) FROM org_units WHERE id = :i AND policy_id IS NULL", i=health) == 1


# -- languages, report, static files -----------------------------------------------------------

def test_language_choice_is_remembered_and_arabic_is_rtl(live: LiveCollector, admin: httpx.Client) -> None:
    token = csrf_of(admin.get("/").text)
    answer = admin.post("/lang", data={"csrf_token": token, "lang": "ar", "next": "//evil.example/x"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    html = admin.get("/devices").text
    assert '<html lang="ar" dir="rtl">' in html and "الأجهزة" in html
    admin.post("/lang", data={"csrf_token": token, "lang": "fr", "next": "/devices"})
    assert '<html lang="fr" dir="ltr">' in admin.get("/devices").text
    assert admin.post("/lang", data={"csrf_token": token, "lang": "de"}).status_code == 400
    admin.cookies.delete("tp_lang")
    with httpx.Client(base_url=live.url, headers={"Accept-Language": "fr-FR,fr;q=0.9"}) as client:
        assert '<html lang="fr"' in client.get("/login").text


def test_printable_report_for_an_org_unit_and_period(live: LiveCollector, admin: httpx.Client) -> None:
    finance = _unit_id(live, "Finance")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    html = admin.get(f"/report?org_unit={finance}&since=2026-01-01&until={today}").text
    assert "Compliance report: Finance" in html and f"Period 2026-01-01 to {today}" in html
    failing = html.split("Devices not compliant")[1]
    assert "lap-000002" in failing and "disk-encryption" in failing and "hp-000002" not in failing
    assert 'media="print"' in html
    assert admin.get(f"/report?since={today}&until=2026-01-01").status_code == 400


def test_static_files_are_served_and_nothing_else(live: LiveCollector) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        htmx = client.get("/static/vendor/htmx-2.0.11.min.js")
        assert htmx.status_code == 200 and "htmx" in htmx.text[:2000]
        assert client.get("/static/vendor/chart.js-LICENSE.md").status_code == 200
        for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/templates/base.html", "/static/"):
            assert client.get(path).status_code == 404, path


def test_trend_snapshot_feeds_the_chart_data(live: LiveCollector, admin: httpx.Client) -> None:
    deadline = time.monotonic() + 15
    while True:
        html = admin.get("/").text
        if 'id="trend-data"' in html or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    data = json.loads(html.split('id="trend-data">')[1].split("</script>")[0])
    assert data["labels"] and data["labels"][-1] == time.strftime("%Y-%m-%d", time.gmtime())
    assert data["devices"][-1] >= 6


def test_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    """In process (an https base URL needs no certificate here): the cookie gets the Secure flag."""
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.settings import load_settings
    from tests.web.live import run_cli

    data_dir = tmp_path / "data"
    output = run_cli("--data-dir", str(data_dir), "init")
    password = re.search(r"^admin password: (\S+)$", output, re.MULTILINE).group(1)  # type: ignore[union-attr]
    app = create_app(load_settings({"data_dir": data_dir, "maintenance_interval": 3600}, environ={}))
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/login")
        assert "secure" in page.headers["set-cookie"].lower()
        answer = client.post("/login", data={"username": "admin", "password": password,
                                             "csrf_token": csrf_of(page.text)}, follow_redirects=False)
        assert answer.status_code == 303
        cookie = next(v for v in answer.headers.get_list("set-cookie") if v.startswith("tp_session="))
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_language_can_be_chosen_before_signing_in(live: LiveCollector) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        page = client.get("/login?next=/devices")
        answer = client.post("/lang", data={"csrf_token": csrf_of(page.text), "lang": "ar",
                                            "next": "/login?next=/devices"})
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/devices"
        html = client.get("/login").text
        assert '<html lang="ar" dir="rtl">' in html and "تسجيل الدخول" in html
