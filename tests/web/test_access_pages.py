"""The dashboard shows access decisions: per device (decision, since, why, certificates, last gate decision)
and, on the overview, the devices denied now."""

from __future__ import annotations

import httpx

from tests.web.live import LiveCollector


def test_device_page_shows_why_access_is_denied(live: LiveCollector, admin: httpx.Client) -> None:
    html = admin.get(f"/devices/{live.device_id('lap-000002')}").text
    card = html.split('id="access"')[1].split("</section>")[0]
    assert 'id="access-decision">denied<' in card
    causes = card.split('id="access-causes"')[1].split("</ul>")[0]
    assert "System disk encrypted — fails" in causes
    assert 'id="access-last-gate">none<' in card


def test_overview_counts_devices_denied_now(live: LiveCollector, admin: httpx.Client) -> None:
    admin.get(f"/devices/{live.device_id('lap-000002')}")  # decided (and kept) at least once
    html = admin.get("/").text
    count = int(html.split('id="denied-count">')[1].split("<")[0])
    assert count >= 1
    assert f'/devices/{live.device_id("lap-000002")}#access' in html


def test_device_page_in_french_and_arabic(live: LiveCollector, admin: httpx.Client) -> None:
    url = f"/devices/{live.device_id('lap-000002')}"
    french = admin.get(url, headers={"Accept-Language": "fr"}).text
    assert "Accès (passerelles VPN et web)" in french and "Disque système chiffré — non respecté" in french
    arabic = admin.get(url, headers={"Accept-Language": "ar"}).text
    assert "الوصول (بوابات VPN والويب)" in arabic and "مرفوض" in arabic
