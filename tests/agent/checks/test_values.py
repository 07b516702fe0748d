"""agent.checks._values: JSON that names the tool when it is not JSON, and the loose value readers behind
plist_* and ps_* (each source keeps its own vocabulary)."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from agent.checks._plist import plist_bool, plist_int
from agent.checks._values import load_json
from agent.checks._windows_ps import ps_bool, ps_int
from agent.checks.base import ParseError


@pytest.mark.parametrize(("value", "plist", "powershell"), [
    (True, True, True), (False, False, False), (1, True, True), (0, False, False),
    (" YES ", True, True), ("no", False, False), ("true", True, True),
    ("on", None, True), ("off", None, False),  # PowerShell's vocabulary only
    ("maybe", None, None), (None, None, None), (1.0, None, None), ([], None, None),
])
def test_booleans(value: Any, plist: Optional[bool], powershell: Optional[bool]) -> None:
    assert (plist_bool(value), ps_bool(value)) == (plist, powershell)


@pytest.mark.parametrize(("value", "plist", "powershell"), [
    (5, 5, 5), (" 7 ", 7, 7), (3.0, 3, 3),
    (2.5, 2, None),  # a plist real is truncated; PowerShell's number must be whole
    (True, 1, None),  # a plist flag counts; a PowerShell bool is not a number
    ("x", None, None), ("", None, None), (None, None, None), ({}, None, None),
])
def test_integers(value: Any, plist: Optional[int], powershell: Optional[int]) -> None:
    assert (plist_int(value), ps_int(value)) == (plist, powershell)


@pytest.mark.parametrize(("text", "expected", "value", "error"), [
    ('[1, {"a": 2}]', list, [1, {"a": 2}], None),
    (' {"nftables": []}\n', dict, {"nftables": []}, None),
    ("", list, None, "lsblk --json: expected a JSON list, found empty output"),
    ("Error: no such table", dict, None, "lsblk --json: expected JSON, found 'Error: no such table'"),
    ("[]", dict, None, "lsblk --json: expected a JSON object, found list"),
    ('"text"', list, None, "lsblk --json: expected a JSON list, found str"),
], ids=["list", "object", "empty", "not json", "list for object", "string for list"])
def test_load_json_names_the_tool_and_what_it_found(text: str, expected: type, value: Any,
                                                    error: Optional[str]) -> None:
    if error is None:
        assert load_json(text, "lsblk --json", expected) == value
    else:
        with pytest.raises(ParseError) as raised:
            load_json(text, "lsblk --json", expected)
        assert str(raised.value).startswith(error)
