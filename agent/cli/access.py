"""`access`: this laptop's access decision, its VPN certificate and its device TLS certificate (docs/access.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli.service import _common, _fail, _settings
from agent.service.config import ConfigError

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


def register(sub: Any) -> None:
    common = _common()
    access = sub.add_parser("access", parents=[common], help="access decision, VPN certificate, device certificate",
                            description="Ask the collector for this laptop's signed access decision (`show`), "
                                        "register the client certificate of its OpenVPN profile (`register-vpn`), "
                                        "or get/renew its device TLS certificate (`certificate`).")
    access.add_argument("action", choices=("show", "register-vpn", "certificate"))
    access.add_argument("--json", action="store_true", help="machine-readable output")
    access.add_argument("--profile", default=None, help="OpenVPN profile for register-vpn (default: the "
                                                        "vpn_profile setting, env TELEPOSTURE_VPN_PROFILE)")
    access.add_argument("--force", action="store_true", help="certificate: renew even if the current one is fresh")
    access.set_defaults(handler=cmd_access)


def cmd_access(args: argparse.Namespace) -> int:
    from agent.service import access
    from agent.service.state import StateDir, StateError
    from agent.service.transport import Transport, TransportError

    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(str(exc))
    state = StateDir(settings.state_dir)
    try:
        identity = state.load_identity()
        transport = Transport(identity.server_url, ca_file=identity.ca_file, allow_http=identity.allow_http,
                              timeout=settings.http_timeout)
        if args.action == "show":
            answer = access.fetch_decision(transport, state)
            if args.json:
                print(access.summary_json(answer))
            else:
                print(f"access: {answer.get('decision')} (since {answer.get('since')}, valid until "
                      f"{answer.get('expires_at')})")
                for cause in answer.get("causes") or []:
                    print(f"  denied because: {cause.get('code')} {cause.get('rule_id', '')}".rstrip())
                for warning in answer.get("warnings") or []:
                    print(f"  warning: {warning.get('code')} {warning.get('rule_id', '')}".rstrip())
            return EXIT_OK if answer.get("decision") == "allow" else EXIT_DENIED
        if args.action == "register-vpn":
            profile = args.profile or settings.vpn_profile
            if not profile:
                return _fail("register-vpn needs the OpenVPN profile: --profile FILE (or vpn_profile / "
                             "TELEPOSTURE_VPN_PROFILE)")
            result = access.register_vpn(transport, state, Path(profile))
            print(json.dumps({k: result[k] for k in ("fingerprint", "subject")}) if args.json else
                  f"VPN certificate registered: {result['subject']} sha256 {result['fingerprint']}")
            return EXIT_OK
        renewed = access.renew_certificate(transport, state, force=args.force)
        if renewed is None:
            print("device certificate still fresh: not renewed (use --force)", file=sys.stderr)
            return EXIT_OK
        print(json.dumps(renewed) if args.json else
              f"device certificate: {renewed['certificate']} (key {renewed['key']}), valid until {renewed['not_after']}")
        return EXIT_OK
    except (StateError, TransportError, access.AccessError) as exc:
        return _fail(str(exc))
