"""Property lists as macOS tools print them (`-plist`, `plutil -convert xml1 -o -`): pure parsing."""

from __future__ import annotations

import plistlib
from datetime import datetime, timezone
from typing import Any, Dict, Optional
from xml.parsers.expat import ExpatError

from agent.checks._values import loose_bool, loose_int
from agent.checks.base import ParseError


def parse_plist(text: str, what: str) -> Any:
    """The object in an XML (or binary-as-text) property list; ParseError naming ``what`` otherwise."""
    data = text.strip().encode("utf-8")
    if not data:
        raise ParseError(f"{what}: expected a property list, found empty output")
    try:
        return plistlib.loads(data)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError) as exc:
        # malformed XML (expat), wrong element nesting and odd values surface as any of these
        raise ParseError(f"{what}: expected a property list, found unparsable text ({exc})") from exc


def parse_plist_dict(text: str, what: str) -> Dict[str, Any]:
    value = parse_plist(text, what)
    if not isinstance(value, dict):
        raise ParseError(f"{what}: expected a dictionary at the top of the property list, found {type(value).__name__}")
    return value


def plist_bool(value: Any) -> Optional[bool]:
    """Booleans as preference files store them: true/false, 1/0, "YES"/"NO"; None when absent or odd."""
    return loose_bool(value, ("1", "yes", "true"), ("0", "no", "false"))


def plist_int(value: Any) -> Optional[int]:
    """Preference files store flags as <true/> or 1 and counts now and then as reals: all of them count."""
    return loose_int(value, bool_as_int=True, truncate_float=True)


def plist_epoch(value: Any) -> Optional[float]:
    """A plist <date> (naive datetimes from plistlib are UTC) as epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return None
