"""Under CI=true, a test that needs PostgreSQL, root, a network namespace or the browser must run: if it
skips, the run fails. On a developer's machine such a test may still skip (and says why)."""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

# Markers of tests CI must run (pyproject.toml declares them).
REQUIRED_MARKERS = frozenset({"postgres", "root", "browser"})
# Skip reasons that name such a need even on a test without the marker.
REQUIRED_REASON = re.compile(r"postgres|\broot\b|namespace|netns|chromium|chromedriver|browser|selenium",
                             re.IGNORECASE)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def must_not_skip(markers: set[str], reason: str) -> bool:
    return bool(markers & REQUIRED_MARKERS) or bool(REQUIRED_REASON.search(reason))


def _fail(report: Any, markers: set[str], reason: str) -> None:
    needs = ", ".join(sorted(markers & REQUIRED_MARKERS)) or "see reason"
    report.outcome = "failed"
    report.longrepr = (f"CI=true: this test must run in CI (needs: {needs}) but it skipped: {reason}. "
                       "scripts/setup-dev.sh installs what it needs; the harness starts PostgreSQL itself.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not in_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return
    markers = {mark.name for mark in item.iter_markers()}
    reason = _reason(report.longrepr)
    if must_not_skip(markers, reason):
        _fail(report, markers, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    # A whole module skipped at import (pytest.importorskip, a module-level skip).
    outcome = yield
    report = outcome.get_result()
    if not in_ci() or not report.skipped:
        return
    markers = {mark.name for mark in collector.iter_markers()}
    reason = _reason(report.longrepr)
    if must_not_skip(markers, reason):
        _fail(report, markers, reason)
