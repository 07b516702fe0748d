"""teleposture-gate: verify the collector's signed access decisions at a VPN server or reverse proxy.

  teleposture-gate openvpn --config gate.toml   serve OpenVPN's management interface (--management-client-auth)
  teleposture-gate http --listen 127.0.0.1:9191 forward-auth endpoint for nginx / Traefik / Caddy (device mTLS)
  teleposture-gate decide FINGERPRINT           what the gate would decide now for a client certificate
  teleposture-gate verify [TOKEN]               check a decision token offline (signature, expiry, binding)

Exit codes: 0 allowed (or serving), 1 refused, 2 usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from agent import protocol
from gate import decision as tokens
from gate.core import Gate
from gate.openvpn import OpenVPNGate
from gate.settings import GateSettingsError, load

EXIT_ALLOWED, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teleposture-gate", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Settings: flags, then TELEPOSTURE_GATE_<NAME> environment variables, then "
                                            "the --config TOML file (top level or [gate] table). See docs/access.md.")
    parser.add_argument("--config", type=Path, help="TOML settings file (env TELEPOSTURE_GATE_CONFIG)")
    parser.add_argument("--public-key", help="the collector's Ed25519 public key, base64")
    parser.add_argument("--collector-url", help="collector base URL, e.g. https://collector.example.org")
    parser.add_argument("--token-file", help="file holding the gate token (tpg_...)")
    parser.add_argument("--cache-dir", help="where verified decisions are kept for offline use")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    openvpn = commands.add_parser("openvpn", help="decide OpenVPN connections through its management interface")
    openvpn.add_argument("--management", help="management socket: unix socket path or host:port")

    http = commands.add_parser("http", help="forward-auth endpoint for nginx auth_request, Traefik ForwardAuth, "
                                            "Caddy forward_auth (mTLS with the collector's device CA)")
    http.add_argument("--listen", default="127.0.0.1:9191", help="address:port (default 127.0.0.1:9191; keep it "
                                                                 "private: whoever reaches it can claim a certificate)")

    decide = commands.add_parser("decide", help="ask as the gate would for a certificate fingerprint; prints the "
                                                "verdict as JSON")
    decide.add_argument("fingerprint", help="SHA-256 of the client certificate (hex, colons allowed)")

    verify = commands.add_parser("verify", help="verify a decision token offline (from the argument or stdin)")
    verify.add_argument("token", nargs="?", help="the compact JWS; '-' or absent: read stdin")
    verify.add_argument("--fingerprint", help="refuse unless the token is bound to this certificate")
    return parser


def _settings(args: argparse.Namespace) -> Any:
    overrides = {"public_key": args.public_key, "collector_url": args.collector_url,
                 "token_file": args.token_file, "cache_dir": args.cache_dir,
                 "management": getattr(args, "management", None)}
    return load(args.config, overrides)


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    token = args.token if args.token not in (None, "-") else sys.stdin.read()
    key = tokens.public_jwk(protocol.load_public_key(settings.public_key))
    try:
        got = tokens.verify(token.strip(), key, now=time.time(), fingerprint=args.fingerprint,
                            leeway=settings.leeway)
    except tokens.DecisionError as exc:
        print(json.dumps({"valid": False, "code": exc.code, "error": str(exc)}))
        return EXIT_REFUSED
    except ValueError as exc:
        raise GateSettingsError(str(exc)) from exc
    print(json.dumps({"valid": True, "device_id": got.device_id, "decision": got.decision,
                      "expires_at": got.expires_at, "since": got.since, "causes": list(got.causes),
                      "fingerprints": list(got.fingerprints)}, ensure_ascii=False))
    return EXIT_ALLOWED if got.allowed else EXIT_REFUSED


def cmd_decide(args: argparse.Namespace) -> int:
    gate = Gate(_settings(args))
    try:
        verdict = gate.decide(args.fingerprint)
    except ValueError as exc:
        raise GateSettingsError(str(exc)) from exc
    print(json.dumps({"allowed": verdict.allowed, "code": verdict.code, "device_id": verdict.device_id,
                      "detail": verdict.detail, "message": verdict.message(gate.settings.language)},
                     ensure_ascii=False))
    return EXIT_ALLOWED if verdict.allowed else EXIT_REFUSED


def cmd_openvpn(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.management:
        raise GateSettingsError("management: the OpenVPN management socket is required (--management or the "
                                "`management` setting), e.g. /run/openvpn-server/teleposture.sock")
    password: Optional[str] = None
    if settings.management_password_file is not None:
        password = settings.management_password_file.read_text(encoding="utf-8").splitlines()[0].strip()
    server = OpenVPNGate(Gate(settings), settings.management, password)
    stop = threading.Event()
    def _stop(*_: Any) -> None:
        stop.set()
        server.interrupt()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    server.run(stop)
    server.gate.flush_reports()
    return EXIT_ALLOWED


def cmd_http(args: argparse.Namespace) -> int:
    from gate.http import serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise GateSettingsError(f"--listen: expected address:port, found {args.listen!r}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(Gate(_settings(args)), host.strip("[]"), int(port), stop)
    return EXIT_ALLOWED


COMMANDS = {"openvpn": cmd_openvpn, "http": cmd_http, "decide": cmd_decide, "verify": cmd_verify}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s teleposture-gate %(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except GateSettingsError as exc:
        print(f"teleposture-gate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"teleposture-gate: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
