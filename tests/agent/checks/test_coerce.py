"""The loose value readers behind plist_* and ps_*: each source keeps its own vocabulary."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from agent.checks._plist import plist_bool, plist_int
from agent.checks._windows_ps import ps_bool, ps_int


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
