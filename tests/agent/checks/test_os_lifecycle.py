"""The OS lifecycle table: phases on given days, Windows editions, policy overrides and their validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict

import pytest

from agent.checks.os_identity import lifecycle
from agent.policy import load_policy_text
from agent.policy.model import PolicyError


def day(text: str) -> float:
    return datetime.fromisoformat(text + "T12:00:00+00:00").timestamp()


TABLE = lifecycle.effective_table(None)


@pytest.mark.parametrize(("facts", "on", "phase", "ends"), [
    ({"os_id": "debian", "os_version": "12"}, "2026-06-10", "supported", "2028-06-30"),
    ({"os_id": "debian", "os_version": "12"}, "2026-06-11", "extended", "2028-06-30"),
    ({"os_id": "debian", "os_version": "12"}, "2026-12-05", "extended", "2028-06-30"),
    ({"os_id": "debian", "os_version": "12"}, "2028-07-01", "end_of_life", "2028-06-30"),
    ({"os_id": "debian", "os_version": "11"}, "2026-12-05", "end_of_life", "2026-08-31"),
    ({"os_id": "ubuntu", "os_version": "20.04"}, "2026-12-05", "extended", "2030-04-30"),
    ({"os_id": "ubuntu", "os_version": "24.04"}, "2026-12-05", "supported", "2034-04-30"),
    ({"os_id": "ubuntu", "os_version": "24.10"}, "2026-12-05", "end_of_life", "2025-07-10"),
    ({"os_id": "fedora", "os_version": "41"}, "2026-12-05", "end_of_life", "2025-12-15"),
    ({"os_id": "rocky", "os_version": "9.4"}, "2026-12-05", "supported", "2032-05-31"),
    ({"os_id": "almalinux", "os_version": "8.10"}, "2026-12-05", "supported", "2029-05-31"),
    ({"os_id": "centos", "os_version": "7"}, "2026-12-05", "end_of_life", "2024-06-30"),
    ({"os_id": "sles", "os_version": "15.6"}, "2026-12-05", "extended", "2028-12-31"),
    ({"os_id": "opensuse-leap", "os_version": "15.6"}, "2026-12-05", "end_of_life", "2026-04-30"),
    ({"os_id": "macos", "os_version": "13.6.7"}, "2026-12-05", "end_of_life", "2025-09-15"),
    ({"os_id": "macos", "os_version": "15.1.1"}, "2026-12-05", "supported", "2027-09-13"),
    # TRAP: Windows 11 keeps "Windows 10" in some names; the build and the edition decide.
    ({"os_id": "windows", "os_build_number": 19045, "os_name": "Windows 10 Pro", "os_edition": "Pro"},
     "2026-12-05", "end_of_life", "2026-10-13"),
    ({"os_id": "windows", "os_build_number": 19045, "os_name": "Windows 10 Enterprise", "os_edition": "Enterprise"},
     "2026-12-05", "extended", "2028-10-10"),
    ({"os_id": "windows", "os_build_number": 19044, "os_name": "Windows 10 Enterprise LTSC 2021",
      "os_edition": "Enterprise LTSC 2021"}, "2026-12-05", "supported", "2027-01-12"),
    ({"os_id": "windows", "os_build_number": 22631, "os_name": "Windows 11 Education", "os_edition": "Education"},
     "2026-11-10", "supported", "2026-11-10"),
    ({"os_id": "windows", "os_build_number": 22631, "os_name": "Windows 11 Pro Education",
      "os_edition": "Pro Education"}, "2026-11-10", "end_of_life", "2025-11-11"),
    ({"os_id": "windows", "os_build_number": 26100, "os_name": "Windows 11 Pro", "os_edition": "Pro"},
     "2026-07-15", "supported", "2026-10-13"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_phase_on_a_day(facts: Dict[str, Any], on: str, phase: str, ends: str) -> None:
    support = lifecycle.support_facts(facts, TABLE, day(on))
    assert (support["os_support_phase"], support["os_support_ends"]) == (phase, ends)


@pytest.mark.parametrize("facts", [
    {"os_id": "arch", "os_version": None}, {"os_id": "debian", "os_version": "14"},
    {"os_id": "windows", "os_build_number": None}, {"os_id": None},
    {"os_id": "windows", "os_build_number": 27000, "os_name": "Windows 11 Pro"},
])
def test_a_release_the_table_does_not_know_is_unknown_not_a_guess(facts: Dict[str, Any]) -> None:
    support = lifecycle.support_facts(facts, TABLE, day("2026-12-05"))
    assert support["os_support_phase"] == "unknown" and support["os_support_ends"] is None


def test_days_left_counts_to_the_last_day_and_goes_negative() -> None:
    facts = {"os_id": "debian", "os_version": "12"}
    assert lifecycle.support_facts(facts, TABLE, day("2028-04-01"))["os_support_days_left"] == 90
    assert lifecycle.support_facts(facts, TABLE, day("2028-07-10"))["os_support_days_left"] == -10


def test_policy_entries_replace_and_extend_the_shipped_table() -> None:
    table = lifecycle.effective_table([
        {"os": "debian", "release": "12", "name": "Debian 12 (ELTS contract)", "supported_until": "2026-06-10",
         "extended_until": "2033-06-30"},
        {"os": "linuxmint", "release": "22", "name": "Linux Mint 22", "supported_until": "2031-04-30"},
    ])
    on = day("2030-01-01")
    assert lifecycle.support_facts({"os_id": "debian", "os_version": "12"}, table, on)["os_support_phase"] == "extended"
    assert lifecycle.support_facts({"os_id": "linuxmint", "os_version": "22"}, table, on)["os_support_phase"] \
        == "supported"
    assert lifecycle.support_facts({"os_id": "ubuntu", "os_version": "24.04"}, table, on)["os_support_phase"] \
        == "extended", "entries the policy does not name stay"


POLICY = """schema: teleposture/policy/v1
id: eol
version: 1
title: {{en: t, fr: t, ar: t}}
rules:
  - id: os-eol
    check: os_identity
    severity: high
    expect:
      os_support_phase: {{in: [supported, extended]}}
    params:
      lifecycle:
{entries}
    title: {{en: t, fr: t, ar: t}}
    remediation: {{en: r, fr: r, ar: r}}
"""


@pytest.mark.parametrize(("entries", "words"), [
    ('        - {os: debian, release: 12, name: D, supported_until: "2026-06-10"}', "quoted dotted version"),
    ('        - {os: debian, release: "12", name: D, supported_until: "2026-02-30"}', "not a calendar date"),
    ('        - {os: debian, release: "12", name: D, supported_until: "2026-06-10", extended_until: "2025-01-01"}',
     "before supported_until"),
    ('        - {os: windows, release: "19045", name: W, supported_until: "2025-10-14"}', "edition"),
    ('        - {os: debian, release: "12", name: D, supported_until: "2026-06-10", until: "x"}', "unknown key"),
    ('        - {os: debian, release: "12", name: D, supported_until: "2026-06-10"}\n'
     '        - {os: debian, release: "12", name: E, supported_until: "2026-06-10"}', "duplicates entry 0"),
])
def test_validator_refuses_a_bad_lifecycle_entry_naming_the_line(entries: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(POLICY.format(entries=entries), "eol.yaml")
    text = str(info.value)
    assert words in text and "eol.yaml:1" in text and "lifecycle" in text, text


def test_validator_accepts_a_good_lifecycle_entry() -> None:
    policy = load_policy_text(POLICY.format(
        entries='        - {os: debian, release: "12", name: D, supported_until: "2026-06-10", '
                'extended_until: "2033-06-30", source: "ELTS contract"}'), "eol.yaml")
    assert policy.rules[0].params["lifecycle"][0]["extended_until"] == "2033-06-30"
