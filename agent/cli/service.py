"""`enroll`, `run`, `report`, `status`: the agent service's subcommands.

Every setting (agent.service.config.OPTIONS) is a flag here, an environment variable TELEPOSTURE_<NAME> and a
config-file key, in that order of precedence.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from agent.service.config import OPTIONS, ConfigError, Settings, load_settings
from common.settings import DURATION_EXAMPLES

# `report --now` exit codes (docs/agent-service.md); 0-2 are also every other subcommand's
EXIT_OK = 0  # this report was delivered (accepted, or already held by the collector)
EXIT_NOT_DELIVERED = 1  # queued but not delivered yet: the service keeps retrying
EXIT_USAGE = 2  # usage or configuration error: not enrolled, bad setting, unreadable state
EXIT_REJECTED = 3  # the collector refused this report for good (moved to the dead-letter table)
EXIT_NOT_PRODUCED = 4  # no report could be made: disk full or read-only, or this state belongs to another machine

REPORT_EPILOG = """exit status:
  0  delivered: the collector accepted this report (or already held it)
  1  queued, not delivered: the collector could not be reached in time; the service keeps retrying
  2  usage or configuration error (not enrolled, bad setting)
  3  rejected by the collector for good (see `status`; the report is kept in the dead-letter table)
  4  no report made: the state directory's disk is full or read-only, or it was enrolled on another
     machine (enrol this one with `enroll --force`)"""


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "settings (flag > environment TELEPOSTURE_* > config file)",
        f"A DURATION is seconds or a number with a unit: {DURATION_EXAMPLES}.")
    group.add_argument("--config", metavar="FILE", default=None,
                       help="config file (TOML, or JSON if it ends in .json); env TELEPOSTURE_CONFIG")
    for option in OPTIONS:
        if option.is_switch:
            group.add_argument(option.flag, dest=option.name, action="store_const", const=True, default=None,
                               help=f"{option.help} (env {option.env})")
        else:
            group.add_argument(option.flag, dest=option.name, default=None, metavar=option.metavar,
                               help=f"{option.help} (env {option.env})")
    return parent


def register(sub: Any) -> None:
    common = _common()
    enroll = sub.add_parser("enroll", parents=[common], help="enrol this machine with a collector (once)",
                            description="Create this device's key, enrol with the collector using an enrolment "
                                        "token (it allows a set number of enrolments until it expires), pin the "
                                        "collector's key and keep the first signed policy.")
    enroll.add_argument("--token", default=None,
                        help="enrolment token from `teleposture-server token create` (env TELEPOSTURE_TOKEN)")
    enroll.add_argument("--force", action="store_true", help="enrol again even if already enrolled")
    enroll.set_defaults(handler=cmd_enroll)

    run = sub.add_parser("run", parents=[common], help="the service: scheduled checks, uploads, policy refresh")
    run.add_argument("--max-cycles", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--replay", metavar="FILE", default=None,
                     help="answer probes from a `check --record` file instead of this machine (tests, benchmarks)")
    run.set_defaults(handler=cmd_run)

    report = sub.add_parser("report", parents=[common], help="check, sign, queue and upload one report now",
                            epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("--now", action="store_true", help="required: run one cycle and upload immediately")
    report.add_argument("--deadline", type=float, default=20.0,
                        help="seconds to keep retrying the upload before giving up (default 20)")
    report.add_argument("--replay", metavar="FILE", default=None,
                        help="answer probes from a `check --record` file instead of this machine")
    report.set_defaults(handler=cmd_report)

    status = sub.add_parser("status", parents=[common], help="identity, policy, last results, outbox, last upload")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)


def _settings(args: argparse.Namespace, quiet_default: bool = True) -> Settings:
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    flags["config"] = args.config
    settings = load_settings(flags)
    from agent.service import logs

    level = settings.log_level
    if quiet_default and settings.sources.get("log_level") == "default":
        level = "warning"  # one-shot commands talk through their output, not info logs
    logs.configure(settings.log_format, level)
    return settings


def _fail(message: str) -> int:
    print(f"teleposture-agent: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- enroll ------------------------------------------------------------------------------------------

def cmd_enroll(args: argparse.Namespace) -> int:
    from agent.service.core import ServiceError, enroll
    from agent.service.state import StateDir, StateError
    from agent.service.transport import TransportError

    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(str(exc))
    token = args.token or os.environ.get("TELEPOSTURE_TOKEN")
    if not settings.server:
        return _fail("enroll needs the collector URL: --server https://collector.example.org (or TELEPOSTURE_SERVER)")
    if not token:
        return _fail("enroll needs an enrolment token: --token TOKEN (or TELEPOSTURE_TOKEN)")
    try:
        identity = enroll(settings, settings.server, token, settings.ca_file, settings.allow_http, force=args.force)
    except (ServiceError, StateError, TransportError) as exc:
        return _fail(f"enrolment failed: {exc}")
    print(f"enrolled as device {identity.device_id} with {identity.server_url}")
    print(f"state directory: {settings.state_dir}")
    last_error = StateDir(settings.state_dir).status().get("last_error") or {}
    if str(last_error.get("message", "")).startswith("enrolment pending"):
        print(last_error["message"])
    return EXIT_OK


# -- run ----------------------------------------------------------------------------------------------

def _service(settings: Settings, replay: Optional[str] = None) -> Any:
    from agent.probes import Recording, ReplayHost
    from agent.service.core import AgentService

    host = ReplayHost(Recording.load(Path(replay))) if replay else None
    return AgentService(settings, host=host)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.probes import RecordingError
    from agent.service.scheduler import Daemon
    from agent.service.state import StateError
    from agent.service.transport import TransportError

    try:
        settings = _settings(args, quiet_default=False)
        service = _service(settings, args.replay)
    except (ConfigError, StateError, TransportError, RecordingError) as exc:
        return _fail(str(exc))
    daemon = Daemon(service, splay=settings.splay, max_cycles=args.max_cycles)
    finished = False
    try:
        finished = daemon.run_forever()
    finally:
        if finished:
            service.close()
    if not finished:
        # A job thread is stuck (a probe or a request past its grace): the interpreter would wait for it at
        # exit. Everything durable is already on disk, so leave now, as a service manager's stop would.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


# -- report --now -----------------------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    from agent.probes import RecordingError
    from agent.service.core import IdentityMismatch, ServiceError
    from agent.service.state import StateError
    from agent.service.storage import StorageUnavailable
    from agent.service.transport import TransportError

    if not args.now:
        return _fail("report needs --now (run one cycle, queue and upload immediately)")
    try:
        settings = _settings(args)
        service = _service(settings, args.replay)
    except (ConfigError, StateError, TransportError, RecordingError) as exc:
        return _fail(str(exc))
    try:
        try:
            produced = service.produce_report("report --now")
        except (StorageUnavailable, IdentityMismatch) as exc:
            print(f"teleposture-agent: no report made: {exc}", file=sys.stderr)
            return EXIT_NOT_PRODUCED
        except ServiceError as exc:
            return _fail(str(exc))
        counts = " ".join(f"{k}={v}" for k, v in sorted(produced.counts.items()))
        print(f"report seq {produced.seq} queued: {produced.status} ({counts or 'no rules'}), report_id "
              f"{produced.report_id}", flush=True)
        if produced.evicted:
            print(f"outbox full: dropped the {produced.evicted} oldest report(s)")
        return _deliver(service, produced.seq, produced.report_id, args.deadline)
    finally:
        service.close()


def _deliver(service: Any, seq: int, report_id: str, deadline_seconds: float) -> int:
    """Upload until this report (followed by report_id: a renumbering changes its seq) left the outbox."""
    deadline = time.monotonic() + max(0.0, deadline_seconds)
    while True:
        outcome = service.upload_pending(lock_wait=max(0.0, deadline - time.monotonic()))
        current = service._spool_call("seq_of", report_id)
        if report_id in service.renumbered and service.renumbered[report_id] != seq:
            print(f"report numbered again: seq {seq} -> {service.renumbered[report_id]} (the collector was past "
                  "this agent's counter: its state was lost or restored)")
            seq = service.renumbered[report_id]
        if current is None:
            dead = [d for d in service._spool_call("dead_letters") if d["report_id"] == report_id]
            if dead:
                print(f"report seq {dead[0]['seq']} was rejected by the collector: {dead[0]['reason']}")
                return EXIT_REJECTED
            if outcome.error is None or outcome.delivered:
                print(f"report seq {seq} delivered to {service.server_url}"
                      + (f" ({outcome.remaining} report(s) still queued)" if outcome.remaining else ""))
                return EXIT_OK
            print(f"report seq {seq} is no longer queued (dropped from a full outbox?)")
            return EXIT_NOT_DELIVERED
        if outcome.error is None:
            # nothing failed but ours is still queued (another process held the upload lock): try again
            delay = 0.2
        elif not outcome.retryable:
            break
        else:
            delay = service.backoff.next_delay(outcome.retry_after)
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
    reason = outcome.error or "deadline reached"
    print(f"report seq {seq} queued but not delivered: {reason}. {outcome.remaining} report(s) in the outbox; "
          "the service (`teleposture-agent run`) will keep retrying")
    return EXIT_NOT_DELIVERED


# -- status --------------------------------------------------------------------------------------------

def collect_status(settings: Settings) -> Dict[str, Any]:
    from agent import protocol
    from agent.service.outbox import peek
    from agent.service.state import StateDir, StateError
    from agent.service.storage import free_bytes, is_read_only, read_condition

    state = StateDir(settings.state_dir)
    out: Dict[str, Any] = {"state_dir": str(settings.state_dir), "enrolled": False}
    try:
        identity = state.load_identity()
    except StateError as exc:
        out["problem"] = str(exc)
        return out
    out.update(enrolled=True, device_id=identity.device_id, collector=settings.server or identity.server_url,
               enrolled_at=identity.enrolled_at, server_key_id=identity.server_key_id)
    policy: Dict[str, Any] = {"source": "bundled baseline (no signed policy stored)"}
    try:
        bundle = state.load_policy_bundle()
        if bundle is not None:
            doc, _ = protocol.open_policy_bundle(bundle, protocol.load_public_key(identity.server_key))
            policy = {"id": doc.get("id"), "version": doc.get("version"), "source": "signed by the collector"}
    except (StateError, protocol.ProtocolError) as exc:
        policy = {"source": "stored policy unusable", "problem": str(exc)}
    out["policy"] = policy
    try:
        saved = state.peek_status()  # read-only: never creates, moves or writes a file
    except (sqlite3.Error, OSError) as exc:
        saved = {"last_error": {"message": f"state database {state.db_path} unreadable ({exc}); the service "
                                           "moves it aside and rebuilds it at its next start"}}
    out["last_cycle"] = saved.get("last_cycle")
    out["last_upload_at"] = saved.get("last_upload_at")
    out["last_error"] = saved.get("last_error")
    out["outbox_reset"] = saved.get("outbox_reset")
    out["outbox"] = peek(state.outbox_path)
    out["last_seq"] = (saved.get("last_cycle") or {}).get("seq")
    offset = saved.get("clock_offset")
    out["clock_skew_seconds"] = round(-float(offset), 3) if isinstance(offset, (int, float)) else None
    out["pending_seq_resets"] = saved.get("pending_seq_resets") or []
    # A full or read-only disk: what the service recorded in place, else what this machine shows now.
    condition = read_condition(state.root)
    if not condition.get("message") and is_read_only(state.root):
        condition = {"kind": "read_only", "message": f"read-only file system: {state.root}"}
    free = free_bytes(state.root)
    out["storage"] = {"free_bytes": free, "condition": condition.get("message")}
    if condition.get("message"):
        # the current error: the service can write nothing else while the disk is full
        out["last_error"] = {"at": condition.get("since", ""), "message": condition["message"]}
    from agent.service.ladder_view import known_deadlines

    out["noncompliance"] = known_deadlines(saved)
    return out


def cmd_status(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        info = collect_status(settings)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"cannot read the state directory {settings.state_dir}: {exc}")
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    if not info["enrolled"]:
        print(f"not enrolled ({info.get('problem')})")
        return EXIT_OK
    policy = info["policy"]
    cycle: Optional[Dict[str, Any]] = info["last_cycle"]
    outbox = info["outbox"]
    lines = [
        ("device", info["device_id"]),
        ("collector", info["collector"]),
        ("policy", f"{policy.get('id')} version {policy.get('version')} ({policy['source']})"
         if policy.get("id") else policy["source"] + (f": {policy['problem']}" if policy.get("problem") else "")),
        ("last cycle", "never" if not cycle else
         f"{cycle['at']} seq {cycle['seq']}: {cycle['status']} "
         f"({' '.join(f'{k}={v}' for k, v in sorted(cycle['counts'].items()))})"
         + (f"; failing: {', '.join(cycle['failing'])}" if cycle.get("failing") else "")),
        ("outbox", outbox.get("problem") or
         f"{outbox['depth']} report(s) queued, {outbox['bytes']} bytes; dropped {outbox['dropped_total']}, "
         f"rejected {outbox['rejected_total']}"),
        ("last upload", info["last_upload_at"] or "never"),
        ("clock skew", "not measured yet" if info["clock_skew_seconds"] is None else
         f"{info['clock_skew_seconds']:+.1f} s against the collector"),
        ("last error", "none" if not info["last_error"] else
         f"{info['last_error'].get('at', '')} {info['last_error'].get('message', '')}".strip()),
    ]
    from agent.service.ladder_view import describe

    for item in info.get("noncompliance") or []:
        lines.append((f"failing {item.get('rule_id')}", describe(item)))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name.ljust(width)} : {value}")
    return EXIT_OK
