"""Screen lock on linux: collector (probes) and pure parsers."""

from __future__ import annotations

from typing import Any, Mapping

from agent.checks.base import CheckOutcome
from agent.probes import Host

CHECK = "screen_lock"


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    return CheckOutcome.error(CHECK, "screen_lock is not implemented yet on linux")
