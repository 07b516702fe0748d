"""`enroll`, `run`, `report`, `status` subcommands (placeholder until the service lands)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    return None
