"""Firewall on darwin: collector (probes) and pure parsers."""

from __future__ import annotations

from typing import Any, Mapping

from agent.checks.base import CheckOutcome
from agent.probes import Host

CHECK = "firewall"


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    return CheckOutcome.error(CHECK, "firewall is not implemented yet on darwin")
