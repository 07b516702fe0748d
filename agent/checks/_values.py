"""Reading tools' structured output, pure: JSON text, and loose values (property lists, PowerShell JSON).

A tool that printed something other than the JSON it should is a ParseError naming the tool. Tools write a
boolean as true, 1 or "YES" and a number as 5, 5.0 or " 5 ", depending on the tool and its version; each
parser names the forms its source uses, and anything else is None (unknown), never a guess.
"""

from __future__ import annotations

import json
from typing import Any, Collection, Optional, Type, TypeVar

from agent.checks.base import ParseError

T = TypeVar("T", list, dict)  # the JSON containers, whatever they hold

_KINDS = {list: "list", dict: "object"}


def load_json(text: str, what: str, expected: Type[T]) -> T:
    """The JSON list or object ``what`` (the command, for the message) printed; ParseError otherwise."""
    stripped = text.strip()
    if not stripped:
        raise ParseError(f"{what}: expected a JSON {_KINDS[expected]}, found empty output")
    try:
        data = json.loads(stripped)
    except ValueError as exc:
        raise ParseError(f"{what}: expected JSON, found {stripped[:60]!r} ({exc})") from exc
    if not isinstance(data, expected):
        raise ParseError(f"{what}: expected a JSON {_KINDS[expected]}, found {type(data).__name__}")
    return data


def loose_bool(value: Any, true_words: Collection[str], false_words: Collection[str]) -> Optional[bool]:
    """A bool, a number (0 is False) or one of the (lower-case) words; None when absent or odd."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in true_words:
            return True
        if lowered in false_words:
            return False
    return None


def loose_int(value: Any, *, bool_as_int: bool, truncate_float: bool) -> Optional[int]:
    """An int, a float (whole ones only unless ``truncate_float``), a bool (when ``bool_as_int``) or the
    text of an integer; None otherwise."""
    if isinstance(value, bool):
        return int(value) if bool_as_int else None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if truncate_float or value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None
