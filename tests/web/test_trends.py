"""Trend pages and the dated compliance report, over HTTP against the shared live collector.

Rollups for three days a hundred days ago are written into the collector's database (the maintenance job writes today's;
a test cannot wait a year), then read back through the pages a user opens."""

from __future__ import annotations

import re
import time

import httpx
import sqlalchemy as sa

from server.store.schema import daily_rule_stats, daily_stats, org_units
from tests.web.live import LiveCollector

# Three days 100 days ago: inside the rollup retention (400 days) that the collector's job enforces.
_FIRST = (time.time() // 86400 - 100) * 86400
DAYS = tuple(time.strftime("%Y-%m-%d", time.gmtime(_FIRST + n * 86400)) for n in range(3))


def _seed_rollups(live: LiveCollector) -> dict[str, int]:
    engine = sa.create_engine(live.database_url)
    try:
        with engine.begin() as conn:
            units = {str(name): int(unit_id) for unit_id, name in conn.execute(sa.select(org_units.c.id,
                                                                                          org_units.c.name))}
            conn.execute(daily_rule_stats.delete().where(daily_rule_stats.c.day.in_(DAYS)))
            conn.execute(daily_stats.delete().where(daily_stats.c.day.in_(DAYS)))
            for number, day in enumerate(DAYS):
                # Finance: 10 devices, disk-encryption failing on 4, 3, 1 of them; Health: 20, always 2.
                for unit, devices, failing, new, fixed, median in (
                        ("Finance", 10, (4, 3, 1)[number], (4, 0, 0)[number], (0, 1, 2)[number],
                         (None, 7200.0, 36000.0)[number]),
                        ("Health", 20, 2, 0, 0, None)):
                    conn.execute(daily_rule_stats.insert().values(
                        day=day, org_unit_id=units[unit], rule_id="disk-encryption", passing=devices - failing,
                        warning=0, failing=failing, errors=0, not_applicable=0, new_failures=new, fixed=fixed,
                        fix_seconds_median=median, computed_at=_FIRST + number * 86400 + 80000))
                    conn.execute(daily_stats.insert().values(
                        day=day, org_unit_id=units[unit], devices=devices, compliant=devices - failing,
                        not_compliant=failing, error=0, unknown=0, stale=0,
                        computed_at=_FIRST + number * 86400 + 80000))
    finally:
        engine.dispose()
    return units


def _cells(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'id="{table_id}"')[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [[re.sub(r"<[^>]+>", "", cell).replace("&#8239;", " ").strip()
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows]


def test_rule_trend_by_day_and_by_org_unit(live: LiveCollector, admin: httpx.Client) -> None:
    units = _seed_rollups(live)
    page = admin.get("/trends", params={"rule": "disk-encryption", "since": DAYS[0], "until": DAYS[-1]})
    assert page.status_code == 200
    html = page.text
    assert "Compliance trends: <span dir=\"ltr\">disk-encryption</span>" in html
    # Newest day first; shares over both units: 30 devices, 6, 5 and 3 failing.
    assert _cells(html, "trend-days")[1:] == [
        [DAYS[2], "90.0 %", "27", "3", "0", "2", "10.0 h"],
        [DAYS[1], "83.3 %", "25", "5", "0", "1", "2.0 h"],
        [DAYS[0], "80.0 %", "24", "6", "4", "0", "—"]]
    chart = html.split('id="trend-data">')[1].split("</script>")[0]
    assert f'"labels": ["{DAYS[0]}", "{DAYS[1]}", "{DAYS[2]}"]' in chart and '"percent": [80.0, 83.3, 90.0]' in chart
    # The last day per org unit, worst first.
    assert _cells(html, "trend-units")[1:] == [["Finance", "90.0 %", "1", "0", "2"], ["Health", "90.0 %", "2", "0", "0"]]
    # One org unit: its own numbers only.
    finance = admin.get("/trends", params={"rule": "disk-encryption", "org_unit": units["Finance"],
                                           "since": DAYS[0], "until": DAYS[-1]}).text
    assert [row[:4] for row in _cells(finance, "trend-days")[1:]] == [
        [DAYS[2], "90.0 %", "9", "1"], [DAYS[1], "70.0 %", "7", "3"], [DAYS[0], "60.0 %", "6", "4"]]
    # All rules: the period's summary per rule links to the rule's trend.
    summary = admin.get("/trends", params={"since": DAYS[0], "until": DAYS[-1]}).text
    # Time to fix over the period: Finance's daily medians 2 h (1 fix) and 10 h (2 fixes), weighted.
    assert ["disk-encryption", "90.0 %", "3", "4", "3", "7.3 h"] in _cells(summary, "trend-rules")
    assert f"/trends?rule=disk-encryption&amp;since={DAYS[0]}&amp;until={DAYS[2]}" in summary


def test_trend_scope_and_bad_ranges(live: LiveCollector, viewer: httpx.Client, admin: httpx.Client) -> None:
    _seed_rollups(live)
    # The Finance viewer sees Finance's rollups only, even when asking for everything.
    html = viewer.get("/trends", params={"rule": "disk-encryption", "since": DAYS[0], "until": DAYS[-1]}).text
    assert _cells(html, "trend-days")[1][:4] == [DAYS[2], "90.0 %", "9", "1"]
    assert _cells(html, "trend-units")[1:] == [["Finance", "90.0 %", "1", "0", "2"]]
    for params in ({"since": DAYS[2], "until": DAYS[0]}, {"since": "2024-01-01", "until": DAYS[0]},
                   {"since": "March"}, {"rule": "<script>"}):
        answer = admin.get("/trends", params=params)
        assert answer.status_code in (400, 422), params


def test_dated_compliance_report_is_printable(live: LiveCollector, admin: httpx.Client) -> None:
    units = _seed_rollups(live)
    page = admin.get("/report/on", params={"day": DAYS[1]})
    assert page.status_code == 200
    html = page.text
    assert re.search(f'<h1 id="dated-heading">Compliance on {DAYS[1]}: [^<]+</h1>', html)
    assert 'media="print"' in html and 'class="print-button"' in html
    totals = dict((row[0], row[1]) for row in _cells(html, "dated-totals"))
    assert totals["Devices"] == "30" and totals["Compliance"].startswith("83.3 %")
    assert ["disk-encryption", "83.3 %", "25", "0", "5", "0", "0", "1"] in _cells(html, "dated-rules")
    assert [row[:3] for row in _cells(html, "dated-units")[1:]] == [["Finance", "70.0 %", "3"],
                                                                   ["Health", "90.0 %", "2"]]
    one_unit = admin.get("/report/on", params={"day": DAYS[1], "org_unit": units["Health"]}).text
    assert dict((row[0], row[1]) for row in _cells(one_unit, "dated-totals"))["Devices"] == "20"
    missing = admin.get("/report/on", params={"day": "2024-02-29"}).text
    assert "No daily snapshot exists for 2024-02-29" in missing
    assert admin.get("/report/on", params={"day": "2999-01-01"}).status_code == 400
    assert admin.get("/report/on", params={"day": "1 March"}).status_code == 400
