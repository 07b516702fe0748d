"""`check` and `policy validate` subcommands (placeholder until the policy engine lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    check = sub.add_parser("check", help="check this machine against the policy")
    check.set_defaults(handler=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    print("check: not implemented yet")
    return 2
