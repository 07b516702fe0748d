"""The dashboard in real headless Chromium (Debian's chromium + chromedriver through Selenium) against a
real collector process: sign in, overview, filters, device detail, CSV export, policy upload with its
dry-run, Arabic right-to-left, a viewer without admin actions, and a hostile host name that stays text.
Screenshots of each page go to test-output/screenshots/."""

from __future__ import annotations

import base64
import csv
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.policy import baseline
from tests.web.conftest import sign_in as http_sign_in
from tests.web.live import VIEWER_PASSWORD, XSS_HOSTNAME, LiveCollector

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                              "apt-get install chromium chromium-driver"),
]

webdriver: Any = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

POLICY = """\
schema: teleposture/policy/v1
id: browser-test-policy
version: 1
title: {en: Disk and firewall, fr: Disque et pare-feu, ar: القرص والجدار الناري}
rules:
  - id: disk-encryption
    check: disk_encryption
    severity: critical
    grace: 0h
    expect: {system_volume_encrypted: true}
    title: {en: Disk encrypted, fr: Disque chiffré, ar: القرص مشفر}
    remediation: {en: Encrypt the disk., fr: Chiffrez le disque., ar: شفّر القرص.}
  - id: firewall-enabled
    check: firewall
    severity: high
    grace: 0h
    expect: {enabled: true}
    title: {en: Firewall on, fr: Pare-feu actif, ar: الجدار الناري مفعل}
    remediation: {en: Turn the firewall on., fr: Activez le pare-feu., ar: فعّل الجدار الناري.}
"""


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tp-downloads-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="tp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1366,900", "--lang=en-US"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "intl.accept_languages": "en-US,en"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: Any, output_dir: Path, name: str) -> None:
    """A screenshot of the whole page (the window grows to the page height, within reason)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1366, max(900, min(height + 40, 4000)))
    driver.save_screenshot(str(output_dir / f"{name}.png"))
    driver.set_window_size(1366, 900)


def wait(driver: Any, timeout: float = 10) -> Any:
    # htmx replaces the table while we read it: a vanished element just means "look again".
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def sign_in(driver: Any, live: LiveCollector, username: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(live.url + "/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    wait(driver, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, "form[action='/logout']")))


def severe_console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]


def no_alert(driver: Any) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def table_hosts(driver: Any) -> list[str]:
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#device-table a.host")]


def test_sign_in_and_read_the_overview(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/")
    assert "/login" in driver.current_url
    shot(driver, output_dir, "01-login")
    sign_in(driver, live, "admin", live.admin_password)
    assert driver.find_element(By.ID, "compliance-percent").text.startswith("80")
    # The trend chart is drawn by the vendored Chart.js once the maintenance job has a snapshot.
    deadline = time.monotonic() + 15
    while not driver.find_elements(By.ID, "trend-chart") and time.monotonic() < deadline:
        time.sleep(0.5)
        driver.refresh()
    wait(driver).until(lambda d: d.find_element(By.ID, "trend-chart").get_attribute("data-points") == "1")
    assert driver.execute_script("return typeof window.Chart") == "function"
    assert driver.execute_script("return typeof window.htmx") == "object"
    rules = driver.find_elements(By.CSS_SELECTOR, "table.rules tbody tr")
    assert len(rules) == len(baseline().rules)
    assert severe_console_errors(driver) == []  # no CSP violation, no script error
    shot(driver, output_dir, "02-overview")


def test_filter_the_device_list(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/devices")
    assert len(table_hosts(driver)) >= 6
    Select(driver.find_element(By.ID, "status")).select_by_value("not_compliant")
    wait(driver).until(lambda d: table_hosts(d) == ["lap-000002"])  # swapped in by htmx, no page load
    assert "status=not_compliant" in driver.current_url  # the filter is in the address (shareable)
    Select(driver.find_element(By.ID, "status")).select_by_value("")
    search = driver.find_element(By.ID, "q")
    search.send_keys("hp-")
    wait(driver).until(lambda d: table_hosts(d) == ["hp-000001", "hp-000002"])
    driver.get(live.url + "/devices?sort=-hostname")
    hosts = table_hosts(driver)
    assert hosts == sorted(hosts, key=str.lower, reverse=True)
    driver.find_element(By.LINK_TEXT, "Host name ▼").click()  # toggles to ascending, through htmx
    wait(driver).until(lambda d: "sort=hostname" in d.current_url and table_hosts(d) == sorted(table_hosts(d), key=str.lower))
    shot(driver, output_dir, "03-devices")


def test_open_a_device(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/devices?q=lap-000002")
    wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, "lap-000002"))).click()
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "device-name"), "lap-000002"))
    first = driver.find_element(By.CSS_SELECTOR, "table.checks tbody tr")
    assert "disk-encryption" in first.text and "fail" in first.text and "24 h ago" in first.text
    assert "Turn on full-disk encryption" in first.text
    assert driver.find_element(By.ID, "revoke-link").is_displayed()  # admin
    assert len(driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")) >= 11
    shot(driver, output_dir, "04-device")


def test_hostile_hostname_is_shown_as_text_and_never_runs(browser: Any, live: LiveCollector,
                                                           output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/devices/" + live.device_id(XSS_HOSTNAME))
    assert no_alert(driver)
    assert driver.find_element(By.ID, "device-name").text == XSS_HOSTNAME
    driver.get(live.url + "/devices?q=%3Cscript")
    assert no_alert(driver)
    assert table_hosts(driver) == [XSS_HOSTNAME]
    driver.get(live.url + "/")
    assert no_alert(driver)
    shot(driver, output_dir, "05-hostile-hostname")


def test_export_csv(browser: Any, live: LiveCollector, downloads: Path) -> None:
    driver = browser
    driver.get(live.url + "/devices?status=not_compliant")
    driver.find_element(By.ID, "export-devices").click()
    deadline = time.monotonic() + 15
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = [p for p in downloads.glob("devices-*.csv") if p.stat().st_size > 0]
        if files:
            break
        time.sleep(0.2)
    assert files, f"no CSV downloaded into {downloads}: {list(downloads.iterdir())}"
    with open(files[0], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["hostname"] for r in rows] == ["lap-000002"] and rows[0]["compliance"] == "not_compliant"


def test_upload_a_policy_and_see_the_dry_run(browser: Any, live: LiveCollector, output_dir: Path,
                                             tmp_path: Path) -> None:
    driver = browser
    path = tmp_path / "browser-test-policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    driver.get(live.url + "/policies")
    shot(driver, output_dir, "06-policies")
    driver.find_element(By.ID, "policy-file").send_keys(str(path))
    driver.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    summary = wait(driver).until(ec.presence_of_element_located((By.ID, "dry-summary"))).text
    assert "browser-test-policy" in driver.find_element(By.ID, "policy-valid").text
    # Stored facts: lap-000002's disk is unencrypted and hp-000002's firewall is off (no grace here).
    assert "would be compliant" in summary and "2 not compliant" in summary, summary
    shot(driver, output_dir, "07-policy-dry-run")
    driver.get(live.url + "/policies/1")
    shot(driver, output_dir, "08-policy-version")


def test_admin_pages(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/tokens")
    driver.find_element(By.ID, "token-unit").send_keys("Finance")
    driver.find_element(By.CSS_SELECTOR, "form[action='/tokens'] button[type=submit]").click()
    token = wait(driver).until(ec.presence_of_element_located((By.ID, "new-token"))).text
    assert token.startswith("tpe_")
    shot(driver, output_dir, "09-tokens")
    driver.get(live.url + "/audit")
    assert "enroll_token.create" in driver.find_element(By.ID, "audit-table").text
    shot(driver, output_dir, "10-audit")
    driver.get(live.url + "/report")
    shot(driver, output_dir, "11-report")
    # The print stylesheet hides the navigation and the form; the printed PDF is kept for a look.
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert driver.execute_script("return getComputedStyle(document.querySelector('header.top')).display") == "none"
    assert driver.execute_script("return getComputedStyle(document.querySelector('form.filters')).display") == "none"
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    pdf = base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})["data"])
    assert pdf.startswith(b"%PDF")
    (output_dir / "11-report.pdf").write_bytes(pdf)


def test_switch_to_arabic_right_to_left(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.get(live.url + "/")
    Select(driver.find_element(By.ID, "lang-select")).select_by_value("ar")
    driver.find_element(By.CSS_SELECTOR, "form.lang button").click()
    wait(driver).until(lambda d: d.execute_script("return document.documentElement.dir") == "rtl")
    assert driver.execute_script("return document.documentElement.lang") == "ar"
    assert driver.find_element(By.TAG_NAME, "h1").text == "امتثال الأجهزة"
    # Logical properties mirror the layout: the navigation starts on the right.
    brand = driver.find_element(By.CSS_SELECTOR, ".brand").rect
    assert brand["x"] > 1366 / 2
    shot(driver, output_dir, "12-overview-ar")
    driver.get(live.url + "/devices")  # the choice is remembered
    assert driver.execute_script("return document.documentElement.dir") == "rtl"
    shot(driver, output_dir, "13-devices-ar")
    driver.get(live.url + "/devices/" + live.device_id("lap-000002"))
    shot(driver, output_dir, "14-device-ar")
    Select(driver.find_element(By.ID, "lang-select")).select_by_value("fr")
    driver.find_element(By.CSS_SELECTOR, "form.lang button").click()
    wait(driver).until(lambda d: d.execute_script("return document.documentElement.lang") == "fr")
    assert driver.execute_script("return document.documentElement.dir") == "ltr"
    Select(driver.find_element(By.ID, "lang-select")).select_by_value("en")
    driver.find_element(By.CSS_SELECTOR, "form.lang button").click()
    wait(driver).until(lambda d: d.execute_script("return document.documentElement.lang") == "en")


def test_viewer_has_no_admin_actions(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    sign_in(driver, live, "finance-viewer", VIEWER_PASSWORD)
    nav = driver.find_element(By.CSS_SELECTOR, "header nav").text
    assert "Audit" not in nav and "Enrolment" not in nav
    driver.get(live.url + "/devices/" + live.device_id("lap-000002"))
    assert driver.find_elements(By.ID, "revoke-link") == []
    driver.get(live.url + "/devices")
    assert not any(h.startswith("hp-") for h in table_hosts(driver))
    shot(driver, output_dir, "15-viewer-devices")
    driver.get(live.url + "/audit")
    assert "Not allowed" in driver.find_element(By.TAG_NAME, "h1").text
    driver.get(live.url + "/devices/" + live.device_id("lap-000002") + "/revoke")
    assert "Not allowed" in driver.find_element(By.TAG_NAME, "h1").text
    shot(driver, output_dir, "16-viewer-refused")


def test_your_sessions_and_signing_out_one(browser: Any, live: LiveCollector, output_dir: Path) -> None:
    driver = browser
    other = http_sign_in(live.url, "finance-viewer", VIEWER_PASSWORD)  # the same user elsewhere
    sign_in(driver, live, "finance-viewer", VIEWER_PASSWORD)
    severe_console_errors(driver)  # drop what earlier tests logged
    driver.find_element(By.CSS_SELECTOR, "header a.who").click()
    rows = wait(driver).until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "main tbody tr")))
    assert len(rows) >= 2 and "This session" in driver.find_element(By.CSS_SELECTOR, "tr[aria-current]").text
    assert severe_console_errors(driver) == []
    shot(driver, output_dir, "17-sessions")
    driver.find_element(By.CSS_SELECTOR, "tr[aria-current] form button").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    driver.get(live.url + "/devices")
    assert "/login" in driver.current_url, "the ended session is refused"
    assert other.get("/devices").status_code == 200, "the other session goes on"
    other.close()
