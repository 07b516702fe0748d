"""Recorded macOS and Windows machines replay to their documented facts and verdicts.

Every tests/fixtures/{darwin,windows}/<release>/<scenario>.json is a `--record` file; the expected.json
beside it says, per scenario, the check outcomes, facts, rule results, overall status and the exit code of
`teleposture-agent check --replay`. Three layers are exercised: the collectors (agent.checks.collect on a
ReplayHost), the policy evaluation (agent.checks.cycle.run_cycle) and the command line.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from agent.checks.collectors import REGISTRY, collect
from agent.checks.cycle import run_cycle
from agent.checks.declarations import conform
from agent.cli.check import run_check
from agent.cli.main import build_parser
from agent.policy import POLICIES_DIR, check_params, checks_used, load_policy_file
from agent.probes import Recording, ReplayHost

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BASELINE = POLICIES_DIR / "ma-telework-baseline.json"


def scenarios() -> List[Tuple[str, Path, Dict[str, Any]]]:
    found = []
    for platform in ("darwin", "windows"):
        for expected_file in sorted((FIXTURES / platform).glob("*/expected.json")):
            for name, expected in json.loads(expected_file.read_text(encoding="utf-8")).items():
                found.append((f"{platform}/{expected_file.parent.name}/{name[:-5]}", expected_file.parent / name, expected))
    return found


SCENARIOS = scenarios()
IDS = [s[0] for s in SCENARIOS]


def test_the_required_releases_and_traps_are_covered() -> None:
    releases = {i.rsplit("/", 1)[0] for i in IDS}
    for needed in ("darwin/13-intel", "darwin/13-apple-silicon", "darwin/14-intel", "darwin/14-apple-silicon",
                   "darwin/15-intel", "darwin/15-apple-silicon", "windows/10-22h2", "windows/11-23h2",
                   "windows/11-24h2", "windows/11-24h2-fr"):
        assert needed in releases
    names = " ".join(IDS)
    for trap in ("filevault-off-hardware-encrypted", "bitlocker-suspended", "bitlocker-encrypting",
                 "utun-link-local-only", "tunnel-not-routed", "wireguard-not-routed", "access-denied", "timeout",
                 "missing"):
        assert trap in names


@pytest.fixture(scope="module")
def policy() -> Any:
    return load_policy_file(BASELINE)


@pytest.mark.parametrize(("scenario", "path", "expected"), SCENARIOS, ids=IDS)
def test_collectors_give_the_documented_facts(scenario: str, path: Path, expected: Dict[str, Any], policy: Any) -> None:
    recording = Recording.load(path)
    assert recording.platform == scenario.split("/")[0]
    assert "sources:" in recording.note, "every fixture names where its output comes from"
    outcomes = collect(ReplayHost(recording), checks_used(policy), check_params(policy))
    for check, outcome in outcomes.items():
        want_state = expected.get("outcomes", {}).get(check, "ok")
        assert outcome.state == want_state, f"{check}: {outcome.state} ({outcome.reason})"
        if outcome.state == "ok":
            assert conform(REGISTRY[check].spec, outcome.facts) == []
            assert outcome.evidence, f"{check} says what it observed"
        else:
            assert outcome.reason
    for check, facts in expected.get("facts", {}).items():
        for name, value in facts.items():
            assert outcomes[check].facts.get(name) == value, f"{check}.{name}"
    for check, text in expected.get("reason_contains", {}).items():
        assert text in (outcomes[check].reason or ""), outcomes[check].reason


@pytest.mark.parametrize(("scenario", "path", "expected"), SCENARIOS, ids=IDS)
def test_policy_verdicts_are_the_documented_ones(scenario: str, path: Path, expected: Dict[str, Any], policy: Any) -> None:
    cycle = run_cycle(ReplayHost(Recording.load(path)), policy)
    statuses = {r.rule_id: r.status for r in cycle.results}
    for rule_id, status in expected["results"].items():
        assert statuses[rule_id] == status, f"{rule_id}: {statuses[rule_id]} ({[r.reason for r in cycle.results if r.rule_id == rule_id]})"
    assert cycle.status == expected["status"]


def check_cli(args: List[str]) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(build_parser().parse_args(["check", *args]), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("scenario", "path", "expected"), SCENARIOS, ids=IDS)
def test_check_replay_exit_code_and_json(scenario: str, path: Path, expected: Dict[str, Any], tmp_path: Path) -> None:
    code, out, err = check_cli(["--replay", str(path), "--json", "--policy", str(BASELINE),
                                "--state-dir", str(tmp_path / "state")])
    assert code == expected["exit_code"], err
    document = json.loads(out)
    assert document["status"] == expected["status"]
    assert document["platform"] == scenario.split("/")[0]
    by_rule = {r["rule_id"]: r for r in document["results"]}
    for rule_id, status in expected["results"].items():
        assert by_rule[rule_id]["status"] == status
        if status == "error":
            assert by_rule[rule_id]["reason"], "an error says why"
    for check, facts in expected.get("facts", {}).items():
        for name, value in facts.items():
            assert document["facts"][check]["facts"].get(name) == value


@pytest.mark.parametrize(("path", "words"), [
    (FIXTURES / "darwin/14-apple-silicon/filevault-off-hardware-encrypted.json",
     {"en": "FAIL"}),
    (FIXTURES / "windows/11-24h2-fr/baseline.json", {"fr": "CONFORME"}),
], ids=["darwin-fail", "windows-fr-compliant"])
def test_installed_command_replays_a_fixture(path: Path, words: Dict[str, str],
                                                              tmp_path: Path) -> None:
    agent = Path(sys.executable).parent / "teleposture-agent"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TELEPOSTURE_"))}
    env.update({"NO_COLOR": "1", "COLUMNS": "120"})
    expected = json.loads((path.parent / "expected.json").read_text(encoding="utf-8"))[path.name]
    for lang, word in words.items():
        proc = subprocess.run([str(agent), "check", "--replay", str(path), "--policy", str(BASELINE), "--lang", lang,
                               "--state-dir", str(tmp_path / "state")],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        assert "Traceback" not in proc.stderr
        assert proc.returncode == expected["exit_code"], proc.stderr
        assert word in proc.stdout
