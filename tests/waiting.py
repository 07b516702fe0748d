"""Waiting in tests for something another process or thread makes true: one polling loop for all."""

from __future__ import annotations

import time
from typing import Callable, Optional


def _elapsed_until(predicate: Callable[[], object], timeout: float, interval: float) -> Optional[float]:
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(interval)


def eventually(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (asked every ``interval``)."""
    return _elapsed_until(predicate, timeout, interval) is not None


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> float:
    """Seconds until ``predicate`` became true; AssertionError naming ``what`` after ``timeout`` seconds."""
    took = _elapsed_until(predicate, timeout, interval)
    if took is None:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return took
