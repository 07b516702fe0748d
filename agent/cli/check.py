"""`teleposture-agent check` and `teleposture-agent policy validate`.

check: run the policy's checks on this machine (or on a recording), print a table a person can act
on in English, French or Arabic, or the documented JSON (docs/check-json.md). Exit codes:
0 compliant, 1 not compliant (any fail, or any rule that could not be checked: an unchecked rule
is not met), 2 usage or internal error.

Grace periods: a live check reads, without writing it, when the agent's service recorded each rule
starting to fail (its state database), so a failure still within its rule's grace period is the
same ``warn`` here as in the service's reports and at the collector (and, like there, does not make
the machine not compliant). Where that record cannot be read, or for a recording (another machine,
another day), failures are shown as they are and the output says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Set, TextIO, Tuple

from agent import __version__, protocol
from agent.checks.base import CheckOutcome
from agent.checks.collectors import REGISTRY
from agent.checks.cycle import Cycle, run_cycle
from agent.i18n import LANGUAGES, detect_language
from agent.i18n.command_line import CommandLineTexts
from agent.policy import (
    Policy,
    PolicyError,
    baseline,
    load_policy_file,
    load_policy_text,
    policy_from_json,
    validate_text,
)
from agent.policy.loader import YAML_MISSING, read_policy_text
from agent.policy.messages import render
from agent.probes import Host, LiveHost, Recording, RecordingError, RecordingHost, ReplayHost
from agent.service.config import ConfigError, load_settings
from agent.service.state import StateDir, failing_since_of, read_status_file

CHECK_JSON_SCHEMA = "teleposture/check/v1"
EXIT_COMPLIANT = 0
EXIT_NOT_COMPLIANT = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for; the message says what to do instead."""


# -- wiring --------------------------------------------------------------------------------------

def register(sub: Any) -> None:
    check = sub.add_parser(
        "check", help="check this machine against the policy",
        description="Check this machine against the telework security policy and say what to fix. "
                    "A failure still within its rule's grace period is a WARN, as the agent's service and the "
                    "collector judge it: when it started failing is read (never written) from the service's "
                    "state directory; where that cannot be read (not enrolled, no permission: run with sudo) "
                    "or with --replay, failures are shown as FAIL and the output says why. "
                    "Exit status: 0 compliant (a WARN included), 1 not compliant (a rule failed or could not "
                    "be checked), 2 usage or internal error.")
    check.add_argument("--json", action="store_true", help="print the facts and results as JSON "
                                                          "(schema teleposture/check/v1, see docs/check-json.md)")
    check.add_argument("--only", metavar="CHECKS", help="comma-separated check ids to run, e.g. vpn,firewall")
    check.add_argument("--policy", metavar="FILE", help="policy document (YAML or JSON) instead of the enrolled "
                                                        "policy or the bundled baseline")
    check.add_argument("--lang", choices=LANGUAGES, help="language of the table (default: from LC_ALL, "
                                                         "LC_MESSAGES or LANG)")
    source = check.add_mutually_exclusive_group()
    source.add_argument("--record", metavar="FILE", help="also write every probe's output to FILE (JSON)")
    source.add_argument("--replay", metavar="FILE", help="evaluate a recording instead of this machine (without "
                                                         "this machine's grace-period history)")
    check.add_argument("--state-dir", metavar="DIR", help="the agent's state directory: the enrolled policy "
                                                          "and when failures started (only read), the probe "
                                                          "cache; default $TELEPOSTURE_STATE_DIR, the config file's "
                                                          "state_dir, else the service's (/var/lib/teleposture on "
                                                          "Linux); without write access to it the probe cache goes "
                                                          "to ~/.cache/teleposture")
    check.set_defaults(handler=run_check)

    policy = sub.add_parser("policy", help="policy documents")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    policy_sub.required = True
    validate = policy_sub.add_parser(
        "validate", help="check a policy document; every problem names its line",
        description="Exit status: 0 valid, 1 invalid (problems printed as FILE:LINE: message), 2 unreadable.")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(handler=run_validate)


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return os.access(str(probe), os.W_OK)


def user_cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "teleposture"


def resolve_state_dir(flag: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Tuple[Path, Path]:
    """(state directory, probe cache directory) for a check.

    The state directory is the service's (--state-dir > $TELEPOSTURE_STATE_DIR > config file >
    the platform default, as agent.service.config resolves it): that is where the enrolled policy is. A
    person without write access to it (not root) still gets a probe cache, in their own cache
    directory (~/.cache/teleposture).
    """
    try:
        settings = load_settings({"state_dir": flag}, environ=environ)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    state_dir = settings.state_dir
    if _writable(state_dir):
        return state_dir, state_dir / "cache"
    return state_dir, user_cache_dir(environ) / "cache"


def enrolled_policy(state_dir: Path) -> Tuple[Optional[Policy], str]:
    """The policy the collector sent (``<state_dir>/policy.json``), verified with the pinned key.

    Returns (policy, note): (None, "") when there is no enrolled policy, (None, why) when there is
    one that cannot be used, so the caller can say why it falls back to the baseline.
    """
    bundle_path = state_dir / "policy.json"
    try:
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except PermissionError:
        return None, (f"the enrolled policy {bundle_path} is readable by the agent's service only "
                      "(run the check with sudo, or as administrator, to use it)")
    except (OSError, ValueError) as exc:
        return None, f"cannot read the enrolled policy {bundle_path}: {exc}"
    try:
        identity = json.loads((state_dir / "identity.json").read_text(encoding="utf-8"))
        server_key = protocol.load_public_key(str(identity["server_key"]))
    except (OSError, ValueError, KeyError, TypeError, protocol.ProtocolError) as exc:
        return None, f"the enrolled policy {bundle_path} cannot be verified (no usable identity.json: {exc})"
    try:
        document, _ = protocol.open_policy_bundle(bundle, server_key)
        return policy_from_json(document, str(bundle_path)), f"enrolled policy from {bundle_path}"
    except protocol.ProtocolError as exc:
        return None, f"the enrolled policy {bundle_path} is refused: {exc}"
    except PolicyError as exc:
        return None, f"the enrolled policy {bundle_path} is invalid: {exc.problems[0]}"


def choose_policy(policy_file: Optional[str], state_dir: Path) -> Tuple[Policy, List[str]]:
    """The policy to check against and notes for the user (why the baseline is used, say)."""
    if policy_file:
        try:
            return load_policy_file(policy_file), []
        except PolicyError as exc:
            raise UsageError("the policy given with --policy cannot be used:\n" + "\n".join(exc.problems)) from exc
    policy, note = enrolled_policy(state_dir)
    if policy is not None:
        return policy, []
    notes = [note + "; using the bundled baseline"] if note else []
    return baseline(), notes


# why `check` could not count grace periods (--json: grace.reason)
GraceReason = Literal["not_enrolled", "permission_denied", "state_unreadable", "replay"]


@dataclass(frozen=True)
class ServiceRecord:
    """What `check` reads of the agent service's status, never writing it: when each rule started failing
    (grace periods count from there, as in the service and at the collector) and the collector's deadlines."""

    state_dir: Path
    status: Mapping[str, Any]
    failing_since: Optional[Dict[str, float]]  # None: not known, failures are shown as they are
    reason: Optional[GraceReason] = None  # why not known
    error: str = ""

    @property
    def source(self) -> Path:
        return StateDir(self.state_dir).db_path

    def note(self, texts: CommandLineTexts) -> Optional[str]:
        """The sentence saying that grace periods were not taken into account, and why; None when they were."""
        if self.reason is None:
            return None
        path = self.state_dir if self.reason == "not_enrolled" else self.source
        return texts.ui("grace_unknown", why=texts.ui(f"grace_why_{self.reason}", path=path, error=self.error))

    def to_json(self) -> Dict[str, Any]:
        return {"applied": self.failing_since is not None,
                "source": None if self.reason == "replay" else str(self.source), "reason": self.reason,
                "note": self.note(CommandLineTexts("en"))}


def read_service_record(state_dir: Path, replay: bool) -> ServiceRecord:
    """The service's record in ``state_dir``, or why it cannot be used. Never raises, never writes."""
    if replay:
        # A recording may come from another computer and another day: this one's history is not its.
        return ServiceRecord(state_dir, {}, None, "replay")
    try:
        status = read_status_file(StateDir(state_dir).db_path)
    except FileNotFoundError:
        return ServiceRecord(state_dir, {}, None, "not_enrolled")
    except PermissionError:
        return ServiceRecord(state_dir, {}, None, "permission_denied")
    except (OSError, sqlite3.Error) as exc:
        return ServiceRecord(state_dir, {}, None, "state_unreadable", str(exc))
    # No failing_since yet (no cycle since enrolment) is the service's own start: every failure begins now.
    return ServiceRecord(state_dir, status, failing_since_of(status))


def parse_only(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    wanted = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [check_id for check_id in wanted if check_id not in REGISTRY]
    if not wanted or unknown:
        what = f"unknown check {', '.join(unknown)}" if unknown else "--only needs at least one check id"
        raise UsageError(f"{what}; known checks: {', '.join(sorted(REGISTRY))}")
    return wanted


def make_host(args: argparse.Namespace, cache_dir: Path) -> Host:
    if args.replay:
        try:
            return ReplayHost(Recording.load(Path(args.replay)))
        except RecordingError as exc:
            raise UsageError(str(exc)) from exc
    live = LiveHost(cache_dir=cache_dir)
    return RecordingHost(live) if args.record else live


def save_recording(host: Host, cycle: Cycle, path: str) -> None:
    if not isinstance(host, RecordingHost):
        return
    identity = cycle.outcomes.get("os_identity")
    if identity is not None and isinstance(identity.facts.get("os_version"), str):
        host.recording.os_version = identity.facts["os_version"]
    host.recording.note = "teleposture-agent check --record"
    try:
        host.recording.save(Path(path))
    except OSError as exc:
        raise UsageError(f"cannot write the recording {path}: {exc.strerror or exc}") from exc


# -- the check command -----------------------------------------------------------------------------

def run_check(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        only = parse_only(args.only)
        state_dir, cache_dir = resolve_state_dir(args.state_dir)
        policy, notes = choose_policy(args.policy, state_dir)
        host = make_host(args, cache_dir)
        record = read_service_record(state_dir, bool(args.replay))
        cycle = run_cycle(host, policy, only, failing_since=record.failing_since)
        if args.record:
            save_recording(host, cycle, args.record)
    except UsageError as exc:
        print(f"teleposture-agent check: {exc}", file=err)
        return EXIT_USAGE
    except PolicyError as exc:  # the bundled baseline itself is broken: an installation problem
        print("teleposture-agent check: internal error, the bundled policy is invalid:\n"
              + "\n".join(exc.problems), file=err)
        return EXIT_USAGE
    for note in notes:
        print(f"note: {note}", file=err)
    from agent.service import ladder_view

    known = ladder_view.known_from_status(record.status)
    if args.json:
        document = check_json(policy, cycle)
        document["grace"] = record.to_json()
        if known:
            document["deadlines"] = known
        out.write(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    else:
        lang = args.lang or detect_language()
        texts = CommandLineTexts(lang)
        use_color = out.isatty() and not os.environ.get("NO_COLOR")
        grace_note = record.note(texts) if grace_would_matter(policy, cycle) else None
        out.write(render_table(policy, cycle, texts, width=_terminal_width(), color=use_color,
                               notes=[grace_note] if grace_note else []))
        out.write(ladder_view.render_known(known, lang))
    return EXIT_COMPLIANT if cycle.status == "compliant" else EXIT_NOT_COMPLIANT


def grace_would_matter(policy: Policy, cycle: Cycle) -> bool:
    """A failure whose rule has a grace period: the service's record could have made it a warn."""
    return any(result.status == "fail" and policy.rule(result.rule_id).grace_seconds > 0 for result in cycle.results)


def check_json(policy: Policy, cycle: Cycle) -> Dict[str, Any]:
    """The --json document (docs/check-json.md); keys never change meaning within a schema version."""
    return {
        "schema": CHECK_JSON_SCHEMA,
        "status": cycle.status,
        "agent": {"version": __version__},
        "checked_at": protocol.rfc3339(cycle.checked_at),
        "policy": {**policy.ref(), "title": dict(policy.title)},
        "platform": cycle.platform,
        "checks": list(cycle.checks),
        "facts": cycle.facts_json(),
        "results": cycle.results_json(),
    }


# -- the table ----------------------------------------------------------------------------------------

_COLORS = {"pass": "32", "warn": "33", "fail": "31;1", "error": "35", "not_applicable": "2"}


def display_width(text: str) -> int:
    """Terminal cells: combining marks (Arabic harakat) take none, wide East Asian characters two."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) == "Cf":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def _wrap(text: str, width: int) -> List[str]:
    lines: List[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, max(width, 10), break_on_hyphens=False) or [""])
    return lines


def _terminal_width() -> int:
    return max(60, min(shutil.get_terminal_size((110, 24)).columns, 160))


def _evidence_lines(outcome: Optional[CheckOutcome], limit: int = 1) -> List[str]:
    if outcome is None:
        return []
    return [line if len(line) <= 120 else line[:117] + "..." for line in outcome.evidence[:limit]]


def _rows(policy: Policy, cycle: Cycle, texts: CommandLineTexts) -> List[Tuple[str, str, str, str]]:
    rows = []
    shown: Set[str] = set()
    for result in cycle.results:
        rule = policy.rule(result.rule_id)
        title = f"{texts.pick(rule.title)} ({texts.severity(rule.severity)})"
        reason = render(result.message, texts.catalogue)
        outcome = cycle.outcomes.get(result.check)
        if result.status in ("fail", "warn", "error") and result.check not in shown:
            # The first line of what the check saw names the device, interface or ruleset at fault;
            # once per check (several rules may read the same check).
            shown.add(result.check)
            reason = "\n".join([reason] + [f"· {line}" for line in _evidence_lines(outcome)])
        if result.status in ("fail", "warn") or (result.status == "error" and outcome is not None
                                                  and outcome.state == "ok"):
            action = texts.pick(rule.remediation)
        elif result.status == "error":
            # The check itself could not run: the rule's remedy would be a guess.
            action = texts.ui("error_action")
        else:
            action = ""
        rows.append((title, result.status, reason, action))
    return rows


def _summary(policy: Policy, cycle: Cycle, texts: CommandLineTexts) -> List[str]:
    counts = {status: 0 for status in ("pass", "warn", "fail", "error", "not_applicable")}
    for result in cycle.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    tally = " · ".join(f"{texts.status(status)} {count}" for status, count in counts.items())
    return [texts.ui(f"summary_{cycle.status}"), tally]


def _header(policy: Policy, cycle: Cycle, texts: CommandLineTexts) -> List[str]:
    identity = cycle.outcomes.get("os_identity")
    facts = identity.facts if identity is not None else {}
    os_text = " ".join(str(facts[k]) for k in ("os_name", "os_version") if facts.get(k)) or cycle.platform
    return [texts.ui("policy", title=texts.pick(policy.title), id=policy.id, version=policy.version),
            texts.ui("machine", hostname=facts.get("hostname") or "?", os=os_text)]


def render_table(policy: Policy, cycle: Cycle, texts: CommandLineTexts, width: int = 110, color: bool = False,
                 notes: Sequence[str] = ()) -> str:
    """The report for a person: a table, or labelled blocks for right-to-left languages and narrow terminals;
    ``notes`` (already in the table's language) go between the rules and the result."""
    def status_word(status: str) -> str:
        word = texts.status(status)
        return f"\x1b[{_COLORS[status]}m{word}\x1b[0m" if color and status in _COLORS else word

    lines = _header(policy, cycle, texts) + [""]
    rows = _rows(policy, cycle, texts)
    if texts.rtl or width < 90:
        # Columns cannot be aligned for right-to-left text whatever the terminal's bidi support,
        # so each rule is a block of labelled lines, each line starting with the language's own words.
        for title, status, reason, action in rows:
            lines.append(f"{status_word(status)} | {title}")
            for label, text in ((texts.ui("header_reason"), reason), (texts.ui("header_action"), action)):
                if text:
                    wrapped = _wrap(text, width - 4 - display_width(label))
                    lines.append(f"    {label}: {wrapped[0]}")
                    lines.extend(" " * (6 + display_width(label)) + more for more in wrapped[1:])
            lines.append("")
    else:
        status_w = max(display_width(texts.status(s)) for s in _COLORS) + 1
        status_w = max(status_w, display_width(texts.ui("header_status")) + 1)
        title_w = min(34, max(display_width(texts.ui("header_rule")), *(display_width(r[0]) for r in rows)) + 2
                      if rows else 20)
        rest = width - title_w - status_w - 4
        reason_w = rest * 45 // 100
        action_w = rest - reason_w
        headers = (texts.ui("header_rule"), texts.ui("header_status"), texts.ui("header_reason"),
                   texts.ui("header_action"))
        widths = (title_w, status_w, reason_w, action_w)
        lines.append("  ".join(_pad(h, w) for h, w in zip(headers, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for title, status, reason, action in rows:
            cells = [_wrap(title, title_w), [texts.status(status)], _wrap(reason, reason_w), _wrap(action, action_w)]
            for index in range(max(len(c) for c in cells)):
                parts = []
                for col, (cell, w) in enumerate(zip(cells, widths)):
                    text = cell[index] if index < len(cell) else ""
                    padded = _pad(text, w)
                    if col == 1 and index == 0:
                        padded = padded.replace(text, status_word(status), 1)
                    parts.append(padded)
                lines.append("  ".join(parts).rstrip())
            lines.append("")
    for note in notes:
        lines.extend(_wrap(note, width) + [""])
    lines.extend(_summary(policy, cycle, texts))
    return "\n".join(lines) + "\n"


# -- policy validate ------------------------------------------------------------------------------------

def run_validate(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Exit 0 valid, 1 invalid (problems on stdout, one per line), 2 unreadable."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        text = read_policy_text(args.file)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{args.file}: cannot read: {reason}", file=err)
        return EXIT_USAGE
    problems = validate_text(text, args.file)
    if any(YAML_MISSING in problem for problem in problems):
        print("\n".join(problems), file=err)
        return EXIT_USAGE
    if problems:
        out.write("\n".join(problems) + "\n")
        out.write(f"{args.file}: invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''})\n")
        return EXIT_NOT_COMPLIANT
    policy = load_policy_text_quiet(text, args.file)
    out.write(f"{args.file}: valid: {policy.id} version {policy.version}, {len(policy.rules)} rules, "
              f"digest {policy.digest()}\n")
    return EXIT_COMPLIANT


def load_policy_text_quiet(text: str, source: str) -> Policy:
    return load_policy_text(text, source)
