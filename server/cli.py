"""teleposture-server: init | serve | token create | api-token create | gate-token create/revoke | user create/list/disable/enable/set-password | policy push/list/assign.

Exit codes: 0 done, 2 usage or operational error (the message on stderr says what to do).
`token create`, `api-token create`, `gate-token create` and `user set-password` print the secret alone on their last line, for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from agent import protocol
from agent.policy import PolicyError, baseline, load_policy_file
from server.settings import Settings, SettingsError, insecure_reasons, load_settings, parse_duration
from server.store import access as access_store
from server.store import accounts, audit, enrolment, migrate, sessions
from server.store import policies as policy_store
from server.store.db import Database, DatabaseURLError
from server.store.schema import users
from server.store.scope import Scope

EXIT_OK = 0
EXIT_ERROR = 2
CLI_ACTOR = "cli"


class CliError(Exception):
    """An operational error: printed as one line, exit code 2."""


def _out(text: str = "") -> None:
    print(text)  # noqa: T201 (command-line output)


def _err(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201


def _when(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teleposture-server", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TOML config file (env TELEPOSTURE_CONFIG; "
                                                    "default <data dir>/collector.toml when present)")
    parser.add_argument("--data-dir", type=Path, help="data directory (env TELEPOSTURE_DATA_DIR; default ./var)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (env TELEPOSTURE_DATABASE_URL; default SQLite in "
                                               "the data directory), e.g. postgresql+psycopg://user@host/db")
    parser.add_argument("--development", action="store_true", default=None,
                        help="development mode: insecure settings only warn (env TELEPOSTURE_DEVELOPMENT=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create or upgrade the database; first run: server key, baseline "
                                            "policy, first admin user and API token")
    init.add_argument("--admin", default="admin", help="user name of the first admin (default admin)")

    serve = commands.add_parser("serve", help="run the collector (HTTP API and dashboard)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--tls-certfile", type=Path)
    serve.add_argument("--tls-keyfile", type=Path)
    serve.add_argument("--behind-tls-proxy", action="store_true", default=None,
                       help="a reverse proxy terminates TLS: allow a non-loopback bind without certificates")
    serve.add_argument("--benchmark-routes", action="store_true",
                       help="also serve POST /api/v1/ping, the load benchmark's do-nothing reference (not for "
                            "production)")

    token = commands.add_parser("token", help="enrolment tokens")
    token_cmds = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_cmds.add_parser("create", help="create an enrolment token (printed alone on the last line)")
    create.add_argument("--org-unit", required=True, help="org unit the enrolled devices join (created if new)")
    create.add_argument("--uses", type=int, help="how many enrolments it allows (default unlimited)")
    create.add_argument("--expires", default="7d", help="lifetime: 3600, 90m, 12h, 7d (default 7d)")
    token_cmds.add_parser("list", help="active enrolment tokens")

    api_token = commands.add_parser("api-token", help="admin API tokens")
    api_cmds = api_token.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    api_create = api_cmds.add_parser("create", help="create an API token (printed alone on the last line)")
    api_create.add_argument("--name", required=True, help="who or what uses it (shown in the audit log)")
    api_create.add_argument("--role", choices=("admin", "viewer"), default="viewer")
    api_create.add_argument("--org-unit", action="append", default=[],
                            help="limit the token to this org unit (repeatable; default: whole fleet)")
    api_create.add_argument("--expires", help="lifetime (default: never)")

    gate_token = commands.add_parser("gate-token", help="tokens of access gates (VPN server, reverse proxy): "
                                                        "fetch decisions and report back, nothing else")
    gate_cmds = gate_token.add_subparsers(dest="gate_command", required=True, metavar="ACTION")
    gate_cmds.add_parser("create", help="create a gate token (printed alone on the last line, after the "
                                        "collector's public key the gate needs)").add_argument("name")
    gate_cmds.add_parser("revoke", help="revoke a gate token").add_argument("name")

    user = commands.add_parser("user", help="dashboard users")
    user_cmds = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    user_create = user_cmds.add_parser("create", help="create a user; prints a generated password "
                                                      "unless --password-stdin")
    user_create.add_argument("--username", required=True)
    user_create.add_argument("--role", choices=("admin", "viewer"), default="viewer")
    user_create.add_argument("--org-unit", action="append", default=[], help="limit to org unit (repeatable)")
    user_create.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    name_help = "the user's name (`user list` shows them)"
    user_actions = {
        "list": "every user: role, org units, created, enabled or disabled, last sign-in (never a secret)",
        "disable": "disable a user (a leaver): ends their dashboard sessions and revokes the API tokens tied "
                   "to them; refused for the last enabled admin; safe to run again",
        "enable": "re-enable a disabled user: they sign in again; sessions and API tokens revoked by `disable` "
                  "stay revoked",
        "set-password": "set a new password (same rules as create) and end the user's dashboard sessions; "
                        "prints a generated password alone on the last line unless --password-stdin",
    }
    user_list = user_cmds.add_parser("list", help=user_actions["list"], description=user_actions["list"])
    user_list.add_argument("--json", action="store_true", help="a JSON array (times RFC 3339 UTC or null)")
    for action in ("disable", "enable"):
        user_cmds.add_parser(action, help=user_actions[action], description=user_actions[action]).add_argument(
            "username", help=name_help)
    user_password = user_cmds.add_parser("set-password", help=user_actions["set-password"],
                                         description=user_actions["set-password"])
    user_password.add_argument("username", help=name_help)
    user_password.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    policy = commands.add_parser("policy", help="policy versions")
    policy_cmds = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    push = policy_cmds.add_parser("push", help="validate and store a new policy version (YAML or JSON)")
    push.add_argument("file", type=Path)
    push.add_argument("--default", action="store_true", help="make this policy id the default")
    policy_cmds.add_parser("list", help="stored versions, default and assignments")
    assign = policy_cmds.add_parser("assign", help="assign a policy id to an org unit (or --default-policy)")
    assign.add_argument("--org-unit", required=True)
    assign.add_argument("policy_id", nargs="?", help="policy id; omit to return the org unit to the default")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    flags = {"data_dir": args.data_dir, "database_url": args.database_url, "development": args.development}
    flags.update(extra)
    return load_settings(flags, config_file=args.config)


def _database(settings: Settings, *, require_current: bool = True) -> Database:
    db = Database(settings.resolved_database_url)
    if require_current:
        status = migrate.status(db)
        if not status.up_to_date:
            db.dispose()
            raise CliError(status.explain())
    return db


@contextlib.contextmanager
def _open_database(settings: Settings) -> Iterator[Database]:
    """The settings' database, schema up to date, disposed of when the command is done."""
    db = _database(settings)
    try:
        yield db
    finally:
        db.dispose()


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    db = _database(settings, require_current=False)
    try:
        before = migrate.status(db)
        if not before.known:
            raise CliError(before.explain())
        migrate.upgrade(db)
        _out(f"database {db.display_url()}: schema at revision {migrate.head_revision()}"
             + ("" if before.current in (None, migrate.head_revision()) else f" (was {before.current})"))
        key_path = settings.server_key_path
        if key_path.exists():
            _out(f"server signing key: {key_path} (kept)")
            key = protocol.load_private_key(key_path)
        else:
            key = protocol.generate_private_key()
            protocol.save_private_key(key, key_path)
            _out(f"server signing key: {key_path} (created, mode 0600)")
        _out(f"server key id: {protocol.key_id(protocol.public_key_b64(key))}")
        with db.write() as conn:
            if policy_store.default_policy_id(conn) is None:
                policy = baseline()
                policy_store.push_policy(conn, policy, created_by=CLI_ACTOR)
                policy_store.set_default_policy(conn, policy.id)
                audit.record(conn, actor=CLI_ACTOR, action="policy.push", target=f"{policy.id}@{policy.version}",
                             details={"digest": policy.digest(), "make_default": True})
                _out(f"default policy: {policy.id} version {policy.version} (bundled baseline)")
            else:
                _out(f"default policy: {policy_store.default_policy_id(conn)} (kept)")
            has_users = conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
            if has_users:
                _out("users exist already: no new admin created (use `user create` / `api-token create`)")
                return EXIT_OK
            password = secrets.token_urlsafe(18)
            user_id = accounts.create_user(conn, args.admin, password, "admin")
            _token_id, token = accounts.create_api_token(conn, f"{args.admin}-init", "admin", user_id=user_id)
            audit.record(conn, actor=CLI_ACTOR, action="user.create", target=args.admin, details={"role": "admin"})
            audit.record(conn, actor=CLI_ACTOR, action="api_token.create", target=f"{args.admin}-init",
                         details={"role": "admin"})
        _out(f"admin user: {args.admin}")
        _out(f"admin password: {password}")
        _out("admin API token (shown once; stored hashed):")
        _out(token)
        return EXIT_OK
    finally:
        db.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers,
                         tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile,
                         behind_tls_proxy=args.behind_tls_proxy)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reasons = insecure_reasons(settings)
    if reasons and not settings.development:
        raise CliError("refusing to serve with insecure settings:\n  - " + "\n  - ".join(reasons)
                       + "\n(for a local trial only: --development)")
    for reason in reasons:
        logging.getLogger("teleposture.server").warning("development mode, insecure: %s", reason)
    if settings.metrics_address and settings.workers > 1:
        raise CliError(f"metrics_address {settings.metrics_address} is one listener, and --workers "
                       f"{settings.workers} would start one per worker: use metrics_token (GET /metrics) "
                       "with several workers, or --workers 1")
    db = _database(settings)
    db.dispose()
    from server import workers
    from server.app import BENCHMARK_ROUTES_ENV, create_app
    from server.context import load_server_key

    load_server_key(settings)
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": settings.log_level,
        "access_log": settings.access_log, "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or None,
        "ssl_certfile": str(settings.tls_certfile) if settings.tls_certfile else None,
        "ssl_keyfile": str(settings.tls_keyfile) if settings.tls_keyfile else None,
        # uvicorn's httptools protocol writing an answer's head and body at once (server/http_protocol.py)
        "http": "server.http_protocol:JoinedHttpToolsProtocol",
    }
    if settings.workers > 1:
        os.environ["TELEPOSTURE_SETTINGS_JSON"] = settings.model_dump_json()
        os.environ[workers.MASTER_PID_ENV] = str(os.getpid())  # workers exit with it (server/workers.py)
        os.environ[BENCHMARK_ROUTES_ENV] = "1" if args.benchmark_routes else "0"
        uvicorn.run("server.app:app_from_environment", factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(create_app(settings, benchmark_routes=args.benchmark_routes), **options)
    return EXIT_OK


def _org_unit(conn: Any, name: str) -> int:
    try:
        return accounts.ensure_org_unit(conn, name)
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from exc


def cmd_token(args: argparse.Namespace) -> int:
    with _open_database(_settings(args)) as db:
        action = args.token_command
        if action == "list":
            with db.read() as conn:
                rows = enrolment.list_enroll_tokens(conn, Scope.everything())
                names = accounts.org_unit_names(conn, [r["org_unit_id"] for r in rows])
            for row in rows:
                uses = f"{row['uses']}/{row['uses_allowed'] if row['uses_allowed'] is not None else 'unlimited'}"
                _out(f"{row['id']:>5}  {row['prefix']}...  {names.get(row['org_unit_id'], '?'):<20} uses {uses:<14} "
                     f"expires {_when(row['expires_at'])}")
            return EXIT_OK
        try:
            lifetime = parse_duration(args.expires, "--expires")
        except SettingsError as exc:
            raise CliError(str(exc)) from exc
        if args.uses is not None and args.uses < 1:
            raise CliError(f"--uses must be at least 1 (omit it for unlimited), found {args.uses}")
        with db.write() as conn:
            unit_id = _org_unit(conn, args.org_unit)
            token_id, token, expires_at = enrolment.create_enroll_token(
                conn, unit_id, uses_allowed=args.uses, lifetime=lifetime, created_by=CLI_ACTOR)
            audit.record(conn, actor=CLI_ACTOR, action="enroll_token.create", target=str(token_id),
                         org_unit_id=unit_id, details={"org_unit": args.org_unit, "uses": args.uses,
                                                       "expires": args.expires})
        uses = "unlimited uses" if args.uses is None else f"{args.uses} use(s)"
        _out(f"enrolment token {token_id} for org unit {args.org_unit}: {uses}, expires {_when(expires_at)}")
        _out(token)
        return EXIT_OK


def cmd_api_token(args: argparse.Namespace) -> int:
    with _open_database(_settings(args)) as db:
        expires_at = None
        if args.expires:
            try:
                expires_at = datetime.now(timezone.utc).timestamp() + parse_duration(args.expires, "--expires")
            except SettingsError as exc:
                raise CliError(str(exc)) from exc
        with db.write() as conn:
            units = [_org_unit(conn, name) for name in args.org_unit]
            try:
                _token_id, token = accounts.create_api_token(conn, args.name, args.role, units, expires_at)
            except accounts.AccountError as exc:
                raise CliError(str(exc)) from exc
            audit.record(conn, actor=CLI_ACTOR, action="api_token.create", target=args.name,
                         details={"role": args.role, "org_units": args.org_unit})
        scope = ", ".join(args.org_unit) if args.org_unit else "whole fleet"
        _out(f"API token {args.name!r}: role {args.role}, scope {scope}, expires {_when(expires_at)}")
        _out(token)
        return EXIT_OK


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): read from stdin with --password-stdin, otherwise a strong random one."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(18), True


def _user(conn: Any, username: str) -> dict[str, Any]:
    found = accounts.find_user(conn, username)
    if found is None:
        raise CliError(f"no user {username!r}: user names are case-sensitive; "
                       "`teleposture-server user list` shows them")
    return found


def _iso(ts: Optional[float]) -> Optional[str]:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def cmd_user(args: argparse.Namespace) -> int:
    actions = {"list": _user_list, "disable": _user_disable, "enable": _user_enable,
               "set-password": _user_set_password}
    if args.user_command in actions:
        with _open_database(_settings(args)) as db:
            return actions[args.user_command](args, db)
    settings = _settings(args)
    password, generated = _new_password(args)
    with _open_database(settings) as db:
        with db.write() as conn:
            units = [_org_unit(conn, name) for name in args.org_unit]
            try:
                accounts.create_user(conn, args.username, password, args.role, units)
            except accounts.AccountError as exc:
                raise CliError(str(exc)) from exc
            audit.record(conn, actor=CLI_ACTOR, action="user.create", target=args.username,
                         details={"role": args.role, "org_units": args.org_unit})
        _out(f"user {args.username} created: role {args.role}")
        if generated:
            _out(f"password: {password}")
        return EXIT_OK


def _user_list(args: argparse.Namespace, db: Database) -> int:
    with db.read() as conn:
        rows = accounts.list_users(conn)
        names = accounts.org_unit_names(conn, [u for row in rows for u in row["org_unit_ids"]])
    listed = [{"username": row["username"], "role": row["role"],
               "org_units": sorted(names.get(u, f"#{u}") for u in row["org_unit_ids"]),
               "created_at": row["created_at"], "disabled_at": row["disabled_at"],
               "last_login_at": row["last_login_at"]} for row in rows]
    if args.json:
        _out(json.dumps([{**item, "disabled": item["disabled_at"] is not None,
                          **{key: _iso(item[key]) for key in ("created_at", "disabled_at", "last_login_at")}}
                         for item in listed], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not listed:
        _out("no users: `teleposture-server init` creates the first admin")
    for item in listed:
        state = "enabled" if item["disabled_at"] is None else f"disabled {_when(item['disabled_at'])}"
        scope = ", ".join(item["org_units"]) or "whole fleet"
        _out(f"{item['username']:<24} {item['role']:<6}  {state:<27} created {_when(item['created_at'])}  "
             f"last sign-in {_when(item['last_login_at'])}  scope {scope}")
    return EXIT_OK


def _user_disable(args: argparse.Namespace, db: Database) -> int:
    refused: Optional[str] = None
    with db.write() as conn:
        user = _user(conn, args.username)
        if user["role"] == "admin" and user["disabled_at"] is None \
                and accounts.other_enabled_admins(conn, user["id"]) == 0:
            refused = (f"user {args.username!r} is the last enabled admin: disabling it would leave nobody to "
                       "administer the collector; create or enable another admin first (`user create --role "
                       "admin`, `user enable`), then disable this one")
        else:
            changed = accounts.set_user_disabled(conn, user["id"], True)
            # Also when already disabled: tokens or sessions left by a disable done in the database end too.
            ended = sessions.revoke_user_sessions(conn, user["id"])
            tokens = accounts.revoke_user_api_tokens(conn, user["id"])
            audit.record(conn, actor=CLI_ACTOR, action="user.disable", target=args.username,
                         details={"already_disabled": not changed, "sessions_revoked": ended,
                                  "api_tokens_revoked": tokens})
    if refused is not None:
        # Recorded in its own transaction, as the admin API records its refusals.
        with db.write() as conn:
            audit.record(conn, actor=CLI_ACTOR, action="user.disable", target=args.username, outcome="denied",
                         details={"reason": "last enabled admin"})
        raise CliError(refused)
    if changed:
        _out(f"user {args.username} disabled: {ended} dashboard session(s) ended, {tokens} API token(s) revoked")
    else:
        _out(f"user {args.username} was already disabled (since {_when(user['disabled_at'])}); "
             f"{ended} dashboard session(s) ended, {tokens} API token(s) revoked")
    return EXIT_OK


def _user_enable(args: argparse.Namespace, db: Database) -> int:
    with db.write() as conn:
        user = _user(conn, args.username)
        changed = accounts.set_user_disabled(conn, user["id"], False)
        audit.record(conn, actor=CLI_ACTOR, action="user.enable", target=args.username,
                     details={"already_enabled": not changed})
    if changed:
        _out(f"user {args.username} enabled: they sign in again (earlier sessions and API tokens stay revoked)")
    else:
        _out(f"user {args.username} was already enabled; nothing changed")
    return EXIT_OK


def _user_set_password(args: argparse.Namespace, db: Database) -> int:
    password, generated = _new_password(args)
    with db.write() as conn:
        user = _user(conn, args.username)
        try:
            accounts.set_password(conn, user["id"], password)
        except accounts.AccountError as exc:
            raise CliError(str(exc)) from exc
        ended = sessions.revoke_user_sessions(conn, user["id"])
        audit.record(conn, actor=CLI_ACTOR, action="user.set_password", target=args.username,
                     details={"generated": generated, "sessions_revoked": ended})
    note = " (the user is disabled: `user enable` lets them sign in)" if user["disabled_at"] is not None else ""
    _out(f"password of user {args.username} changed: {ended} dashboard session(s) ended{note}")
    if generated:
        _out("new password (shown once; stored hashed):")
        _out(password)
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    with _open_database(_settings(args)) as db:
        if args.policy_command == "push":
            try:
                policy = load_policy_file(args.file)
            except PolicyError as exc:
                raise CliError("policy not valid:\n  " + "\n  ".join(exc.problems)) from exc
            with db.write() as conn:
                try:
                    _pk, created = policy_store.push_policy(conn, policy, created_by=CLI_ACTOR)
                    if args.default:
                        policy_store.set_default_policy(conn, policy.id)
                except policy_store.PolicyStoreError as exc:
                    raise CliError(str(exc)) from exc
                audit.record(conn, actor=CLI_ACTOR, action="policy.push", target=f"{policy.id}@{policy.version}",
                             details={"digest": policy.digest(), "created": created, "make_default": args.default})
            state = "stored" if created else "already stored (identical)"
            _out(f"policy {policy.id} version {policy.version} {state}; digest {policy.digest()}"
                 + ("; now the default" if args.default else ""))
            return EXIT_OK
        if args.policy_command == "assign":
            with db.write() as conn:
                unit_id = accounts.org_unit_id(conn, args.org_unit)
                if unit_id is None:
                    raise CliError(f"no org unit {args.org_unit!r}: it is created by `token create --org-unit`")
                try:
                    policy_store.assign_policy(conn, unit_id, args.policy_id)
                except policy_store.PolicyStoreError as exc:
                    raise CliError(str(exc)) from exc
                audit.record(conn, actor=CLI_ACTOR, action="policy.assign", target=args.org_unit,
                             org_unit_id=unit_id, details={"policy_id": args.policy_id})
            _out(f"org unit {args.org_unit}: policy {args.policy_id or '(default)'}")
            return EXIT_OK
        with db.read() as conn:
            rows = policy_store.list_policies(conn)
        if not rows:
            _out("no policies stored: run `teleposture-server init`")
        for row in rows:
            marks = [m for m, on in (("default", row["default"]), ("latest", row["latest"])) if on]
            if row["assigned_to"]:
                marks.append("assigned: " + ", ".join(row["assigned_to"]))
            _out(f"{row['policy_id']}@{row['version']}  {row['digest'][:19]}  {_when(row['created_at'])}  "
                 f"{row['title']}" + (f"  [{'; '.join(marks)}]" if marks else ""))
        return EXIT_OK


def cmd_gate_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _open_database(settings) as db:
        with db.write() as conn:
            if args.gate_command == "revoke":
                if not access_store.revoke_gate_token(conn, args.name, time.time()):
                    raise CliError(f"no active gate token named {args.name!r}")
                audit.record(conn, actor=CLI_ACTOR, action="gate_token.revoke", target=args.name)
                _out(f"gate token {args.name!r} revoked")
                return EXIT_OK
            try:
                _token_id, token = access_store.create_gate_token(conn, args.name)
            except access_store.AccessStoreError as exc:
                raise CliError(str(exc)) from exc
            audit.record(conn, actor=CLI_ACTOR, action="gate_token.create", target=args.name)
        from server.context import load_server_key

        public_key = protocol.public_key_b64(load_server_key(settings))
        _out(f"collector public key (gate setting public_key): {public_key}")
        _out(f"gate token {args.name!r} (shown once; stored hashed):")
        _out(token)
        return EXIT_OK


COMMANDS = {"init": cmd_init, "serve": cmd_serve, "token": cmd_token, "api-token": cmd_api_token,
            "gate-token": cmd_gate_token, "user": cmd_user, "policy": cmd_policy}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, SettingsError, DatabaseURLError) as exc:
        _err(f"teleposture-server: {exc}")
        return EXIT_ERROR
    except OperationalError as exc:
        _err(f"teleposture-server: cannot use the database: {exc.orig}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except OSError as exc:
        _err(f"teleposture-server: {exc}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
