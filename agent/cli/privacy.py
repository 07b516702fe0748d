"""`teleposture-agent privacy`: what the last report sent to the collector, and what is never collected.

Transparency for the employee (Morocco's law 09-08 on personal data; CNIL's rule against covert monitoring
of teleworkers): the command reads the copy of the last signed report payload the service keeps
(``last-report.json`` in the state directory) and prints every fact and piece of evidence it carried.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, TextIO

from agent.cli.service import _common, _settings
from agent.i18n import LANGUAGES, catalogue, detect_language, fill
from agent.service.config import ConfigError
from agent.service.state import LAST_REPORT_FILE

# English texts of `teleposture-agent privacy`; the agent catalogue translates them (context privacy.<key>).
TEXTS_EN: Mapping[str, str] = {
    "title": "What Teleposture sends about this computer",
    "none": "No report was sent from this computer yet (or the state directory {dir} is not readable).",
    "last": "The last report (number {seq}, created {created}) sent, signed with this computer's key:",
    "identity": "With every report: the device id {device}, the agent version and the policy version. At "
                "enrolment: host name, machine id, serial number, operating system and the signed-in user name.",
    "never": "Never collected: the content of your files, e-mails or messages; web browsing; keystrokes; "
             "screenshots, camera or microphone; location; the list of your applications beyond security "
             "updates and the anti-malware product. Only the facts listed above leave this computer.",
    "where": "They go to your organisation's collector only, which keeps raw reports for a limited time.",
}


def register(sub: Any) -> None:
    privacy = sub.add_parser("privacy", parents=[_common()], help="what the last report sent, what is never collected",
                             description="Show, in your language, exactly what the last report sent to the "
                                         "collector contained, and what Teleposture never collects.")
    privacy.add_argument("--lang", choices=LANGUAGES, help="language (default: the `language` setting, else the "
                                                           "locale)")
    privacy.add_argument("--json", action="store_true", help="print the last report's payload as sent")
    privacy.set_defaults(handler=cmd_privacy)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def render(payload: Optional[Mapping[str, Any]], lang: str, state_dir: Path) -> str:
    texts = catalogue(lang if lang in LANGUAGES else "en")

    def text(key: str, **params: Any) -> str:
        return fill(texts.text(f"privacy.{key}", TEXTS_EN[key]), params)

    lines: List[str] = [text("title"), ""]
    if payload is None:
        lines.append(text("none", dir=state_dir))
    else:
        lines.append(text("last", seq=payload.get("seq"), created=payload.get("created_at")))
        raw = payload.get("facts")
        facts: Dict[str, Any] = raw if isinstance(raw, dict) else {}
        for check, outcome in sorted(facts.items()):
            lines.append(f"  [{check}]")
            detail: Dict[str, Any] = outcome.get("facts") or {} if isinstance(outcome, dict) else {}
            for name, value in sorted(detail.items()):
                lines.append(f"    {name}: {_value(value)}")
            for item in (outcome.get("evidence") or []) if isinstance(outcome, dict) else []:
                lines.append(f"    · {item}")
        lines += ["", text("identity", device=payload.get("device_id"))]
    lines += ["", text("never"), text("where")]
    return "\n".join(lines) + "\n"


def cmd_privacy(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"teleposture-agent privacy: {exc}", file=sys.stderr)
        return 2
    path = settings.state_dir / LAST_REPORT_FILE
    try:
        payload: Optional[Dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        payload = None
    if args.json:
        out.write(json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        return 0
    lang = args.lang or settings.language or detect_language()
    out.write(render(payload, lang, settings.state_dir))
    return 0
