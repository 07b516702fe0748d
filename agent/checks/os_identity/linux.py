"""OS identity on linux: collector (probes) and pure parsers."""

from __future__ import annotations

from typing import Any, Mapping

from agent.checks.base import CheckOutcome
from agent.probes import Host

CHECK = "os_identity"


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    return CheckOutcome.error(CHECK, "os_identity is not implemented yet on linux")
