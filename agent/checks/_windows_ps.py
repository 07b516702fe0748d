"""Running Windows PowerShell through the Host and reading its JSON: structured, locale-independent output.

Every Windows probe is one ``powershell.exe -NoProfile -NonInteractive -Command <pipeline> | ConvertTo-Json``.
Enum values are converted to their (never localised) names inside the pipeline where it matters, so
parsers see ``"FullyEncrypted"`` whatever the display language. Windows PowerShell 5.1 writes dates as
``"/Date(1700000000000)/"``; `ps_date` reads that and the ISO form PowerShell 7 writes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

from agent.checks._values import loose_bool, loose_int
from agent.checks.base import ParseError
from agent.checks.messages import Message, english, message
from agent.probes import Host, ProbeResult

POWERSHELL = "powershell.exe"
# UTF-8 out so that localised names (French, Arabic) survive; no progress bars on stderr.
_PRELUDE = "[Console]::OutputEncoding = [System.Text.Encoding]::UTF8; $ProgressPreference = 'SilentlyContinue'; "
PS_TIMEOUT = 60.0

# Markers of "not allowed" in PowerShell/CIM errors. CategoryInfo names and HRESULTs are not localised;
# the sentences are, so a few languages are listed as a second line of defence.
_DENIED_MARKERS = ("permissiondenied", "0x80041003", "0x80070005", "unauthorizedaccess", "access denied",
                   "access is denied", "accès refusé", "acces refuse", "zugriff verweigert", "acceso denegado",
                   "رفض الوصول")
_MISSING_MARKERS = ("commandnotfoundexception", "is not recognized as the name", "n'est pas reconnu",
                    "invalid namespace", "0x8004100e", "invalid class", "0x80041010")


def ps_argv(pipeline: str) -> List[str]:
    """The argv that runs ``pipeline`` and prints its objects as JSON (depth 4)."""
    return [POWERSHELL, "-NoProfile", "-NonInteractive", "-Command",
            f"{_PRELUDE}{pipeline} | ConvertTo-Json -Depth 4"]


def run_ps(host: Host, pipeline: str, timeout: float = PS_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
    return host.run(ps_argv(pipeline), timeout=timeout, cache_on=cache_on)


def describe(pipeline: str) -> str:
    """A short name for a PowerShell probe in reasons: its first command."""
    first = pipeline.strip().split("|")[0].strip()
    return first if len(first) <= 80 else first[:77] + "..."


def is_denied(result: ProbeResult) -> bool:
    text = f"{result.stderr}\n{result.stdout if not result.stdout.lstrip().startswith(('{', '[')) else ''}".lower()
    return any(marker in text for marker in _DENIED_MARKERS)


def is_missing(result: ProbeResult) -> bool:
    text = result.stderr.lower()
    return any(marker in text for marker in _MISSING_MARKERS)


def ps_failure_message(result: ProbeResult, what: str, rights: Optional[Message] = None) -> Optional[Message]:
    """Why the PowerShell probe ``what`` gave no usable answer (a translatable reason), or None when it did.

    ``rights``: who may run the probe, a message of agent/checks/messages.py (an administrator by default).
    """
    if result.error is not None:
        return message("ps_probe_failed", what=what, failure=result.failure_message())
    if is_denied(result):
        return message("ps_access_denied", what=what, rights=rights or message("rights_administrator"))
    if is_missing(result):
        first = result.stderr.strip().splitlines()[0][:160] if result.stderr.strip() else ""
        return message("ps_not_available", what=what, output=first)
    if result.rc != 0:
        return message("ps_probe_failed", what=what, failure=result.failure_message())
    return None


def ps_failure(result: ProbeResult, what: str, rights: Optional[Message] = None) -> Optional[str]:
    """`ps_failure_message` in English (evidence lines, and checks whose reasons are not translated yet)."""
    failure = ps_failure_message(result, what, rights)
    return None if failure is None else english(failure)


def parse_ps_json(text: str, what: str) -> Any:
    """The value ConvertTo-Json printed; None when the pipeline produced no object at all."""
    body = text.lstrip("\ufeff").strip()
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ParseError(f"{what}: expected JSON from ConvertTo-Json, found {body[:80]!r} ({exc})") from exc


def parse_ps_object(text: str, what: str, fields: Sequence[str], required: Sequence[str] = ()) -> Dict[str, Any]:
    """The one [pscustomobject] with ``fields`` a check's pipeline printed, the ``required`` ones present;
    a ParseError naming the fields otherwise (no object, a list, a cmdlet's own output instead)."""
    data = parse_ps_json(text, what)
    if not isinstance(data, dict) or any(name not in data for name in required):
        raise ParseError(f"{what}: expected {{{', '.join(fields)}}}")
    return data


def as_list(value: Any) -> List[Any]:
    """ConvertTo-Json prints one object bare and several as a list: always a list here."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def as_dict_list(value: Any, what: str) -> List[dict]:
    items = as_list(value)
    for item in items:
        if not isinstance(item, dict):
            raise ParseError(f"{what}: expected JSON objects, found {type(item).__name__}")
    return items


_DATE_RE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def ps_date(value: Any) -> Optional[float]:
    """Epoch seconds from a PowerShell date: "/Date(ms)/", {"value": "/Date(ms)/", ...} or ISO 8601."""
    if isinstance(value, dict):
        value = value.get("value", value.get("DateTime"))
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    match = _DATE_RE.match(text)
    if match:
        millis = int(match.group(1))
        if millis <= 0:
            return None  # DateTime.MinValue and friends: "never"
        return millis / 1000.0
    iso = text.replace("Z", "+00:00")
    # .NET writes 7 fractional digits; Python 3.9 accepts exactly 3 or 6
    iso = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], iso)
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if parsed.year < 1971:
        return None
    return parsed.timestamp()


def ps_bool(value: Any) -> Optional[bool]:
    return loose_bool(value, ("true", "1", "yes", "on"), ("false", "0", "no", "off"))


def ps_int(value: Any) -> Optional[int]:
    """A number PowerShell printed; a bool is not one (a flag where a count belongs means a changed cmdlet)."""
    return loose_int(value, bool_as_int=False, truncate_float=False)


def ps_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return str(value)

