"""One seeded collector process shared by the dashboard tests of a session (it takes ~3 s to set up)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.live import LiveCollector, live_collector


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    with live_collector(tmp_path_factory.mktemp("web")) as collector:
        yield collector


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def sign_in(url: str, username: str, password: str) -> httpx.Client:
    """An HTTP client holding a dashboard session (cookies), signed in through the login form."""
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    page = client.get("/login")
    assert page.status_code == 200
    answer = client.post("/login", data={"username": username, "password": password,
                                         "csrf_token": csrf_of(page.text), "next": "/"})
    assert answer.status_code == 303, answer.text
    assert "tp_session" in client.cookies
    return client


@pytest.fixture
def admin(live: LiveCollector) -> Iterator[httpx.Client]:
    client = sign_in(live.url, "admin", live.admin_password)
    yield client
    client.close()


@pytest.fixture
def viewer(live: LiveCollector) -> Iterator[httpx.Client]:
    client = sign_in(live.url, "finance-viewer", "finance-viewer-password-1")
    yield client
    client.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
