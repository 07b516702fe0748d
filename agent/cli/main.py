"""`teleposture-agent`: the command line. Each subcommand lives in the module that owns it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from agent import __version__
from agent.cli import access as cli_access
from agent.cli import check as cli_check
from agent.cli import privacy as cli_privacy
from agent.cli import service as cli_service

EXIT_COMPLIANT = 0
EXIT_NOT_COMPLIANT = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teleposture-agent",
        description="Check this laptop against the telework security policy and report to the collector.",
    )
    parser.add_argument("--version", action="version", version=f"teleposture-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cli_check.register(sub)
    cli_service.register(sub)
    cli_privacy.register(sub)
    cli_access.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `teleposture-agent status --json | head`: the reader left; stop quietly like other tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
