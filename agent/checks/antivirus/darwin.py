"""Anti-malware on darwin: collector (probes) and pure parsers."""

from __future__ import annotations

from typing import Any, Mapping

from agent.checks.base import CheckOutcome
from agent.probes import Host

CHECK = "antivirus"


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    return CheckOutcome.error(CHECK, "antivirus is not implemented yet on darwin")
