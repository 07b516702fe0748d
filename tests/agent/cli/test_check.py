"""`teleposture-agent check` and `policy validate`, end to end as a user runs them (subprocesses).

One live run records this machine; the other runs replay that recording (or synthetic ones), so
the whole module costs one real check cycle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from agent import protocol
from agent.i18n import catalogue
from agent.policy import POLICIES_DIR, baseline
from agent.policy.messages import TEMPLATES_EN, render

AGENT = Path(sys.executable).parent / "teleposture-agent"
BASELINE_YAML = POLICIES_DIR / "ma-telework-baseline.yaml"


def run(args: List[str], env_extra: Dict[str, str] | None = None, timeout: float = 120) -> Tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TELEPOSTURE_"))}
    env.update({"LANG": "C.UTF-8", "NO_COLOR": "1", "COLUMNS": "120", **(env_extra or {})})
    proc = subprocess.run([str(AGENT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def run_here(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    """The same command in this process (cheaper), for the many small usage cases."""
    from agent.cli.main import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse refusing the command line
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A live check of this machine with --record: its exit code, JSON and recording path."""
    base = tmp_path_factory.mktemp("check")
    recording = base / "machine.json"
    code, out, err = run(["check", "--json", "--record", str(recording), "--state-dir", str(base / "state")])
    assert code in (0, 1), err
    return {"code": code, "json": json.loads(out), "recording": recording, "state": base / "state", "base": base}


def test_json_has_the_documented_shape(recorded: Dict[str, Any]) -> None:
    doc = recorded["json"]
    assert set(doc) == {"schema", "status", "agent", "checked_at", "policy", "platform", "checks", "facts", "results",
                        "grace"}
    assert doc["schema"] == "teleposture/check/v1"
    # a fresh state directory: no record of when failures started (tests/agent/cli/test_check_grace.py)
    assert doc["grace"]["applied"] is False and doc["grace"]["reason"] == "not_enrolled"
    assert doc["platform"] == "linux"
    assert {k: doc["policy"][k] for k in ("id", "version", "digest")} == baseline().ref()
    assert [r["rule_id"] for r in doc["results"]] == [r.id for r in baseline().rules]
    for result in doc["results"]:
        assert set(result) == {"rule_id", "check", "status", "severity", "reason", "message", "evidence", "remediation"}
        assert result["status"] in ("pass", "warn", "fail", "not_applicable", "error")
        assert result["reason"] and set(result["remediation"]) == {"en", "fr", "ar"}
    for check_id in ("os_identity", *doc["checks"]):
        assert doc["facts"][check_id]["state"] in ("ok", "error", "not_applicable")
    assert doc["facts"]["os_identity"]["facts"]["platform"] == "linux"


def test_exit_code_follows_the_status(recorded: Dict[str, Any]) -> None:
    doc = recorded["json"]
    statuses = {r["status"] for r in doc["results"]}
    expected = "not_compliant" if "fail" in statuses else "error" if "error" in statuses else "compliant"
    assert doc["status"] == expected
    assert recorded["code"] == (0 if expected == "compliant" else 1)


def test_results_tell_what_the_facts_say(recorded: Dict[str, Any]) -> None:
    doc = recorded["json"]
    results = {r["rule_id"]: r for r in doc["results"]}
    disk = doc["facts"]["disk_encryption"]
    if disk["state"] == "ok" and disk["facts"].get("system_volume_encrypted") is False:
        assert results["disk-encryption"]["status"] == "fail"
        device = next(v["device"] for v in disk["facts"]["volumes"] if v["mount"] == "/")
        # the person is told which device is not encrypted
        assert any(device in line for line in results["disk-encryption"]["evidence"])
    screen = doc["facts"]["screen_lock"]
    if screen["state"] == "not_applicable":
        assert results["screen-lock"]["status"] == "not_applicable"
    firewall = doc["facts"]["firewall"]
    if firewall["state"] == "ok" and firewall["facts"].get("enabled") is not None:
        assert results["firewall-enabled"]["status"] == ("pass" if firewall["facts"]["enabled"] else "fail")
    # Linux has no minimum-version expectation in the baseline
    assert results["supported-os-version"]["status"] == "not_applicable"
    antivirus = doc["facts"]["antivirus"]
    if antivirus["state"] == "ok" and antivirus["facts"].get("running") is False:
        # no product, no signatures: "running" carries the failure, the signature rule does not apply
        assert results["antimalware-running"]["status"] == "fail"
        assert results["antimalware-signatures"]["status"] == "not_applicable"
        assert results["antimalware-signatures"]["reason"] == "applies only when anti-malware running is yes"
        assert results["antimalware-signatures"]["message"]["key"] == "when_not_met"
    elif antivirus["state"] == "ok" and antivirus["facts"].get("running") is True:
        assert results["antimalware-signatures"]["status"] != "not_applicable"


def test_replay_of_this_machine_gives_identical_results(recorded: Dict[str, Any]) -> None:
    # --state-dir: the default one is shared by every agent on this machine (a policy stored there wins)
    code, out, err = run(["check", "--json", "--replay", str(recorded["recording"]),
                          "--state-dir", str(recorded["state"])])
    assert code == recorded["code"], err
    replayed = json.loads(out)
    # the same verdicts; only the grace note differs: a recording is judged without this machine's history
    assert replayed["grace"]["reason"] == "replay"
    assert {**replayed, "grace": None} == {**recorded["json"], "grace": None}
    saved = json.loads(recorded["recording"].read_text(encoding="utf-8"))
    assert saved["platform"] == "linux" and saved["probes"]
    assert saved["os_version"] == recorded["json"]["facts"]["os_identity"]["facts"]["os_version"]


def test_table_in_english(recorded: Dict[str, Any]) -> None:
    code, out, _ = run(["check", "--replay", str(recorded["recording"]), "--lang", "en",
                        "--state-dir", str(recorded["state"])])
    assert code == recorded["code"]
    assert "Rule" in out and "What to do" in out and "System disk encrypted (critical)" in out
    assert out.rstrip().splitlines()[-2].startswith("Result: ")
    statuses = [r["status"] for r in recorded["json"]["results"]]
    assert f"FAIL {statuses.count('fail')}" in out and f"N/A {statuses.count('not_applicable')}" in out
    if "fail" in statuses:
        assert "NOT COMPLIANT" in out
    disk = recorded["json"]["facts"]["disk_encryption"]
    if disk["state"] == "ok" and disk["facts"].get("system_volume_encrypted") is False:
        device = next(v["device"] for v in disk["facts"]["volumes"] if v["mount"] == "/")
        assert device in out  # the table names the unencrypted device, not only the rule


def test_language_follows_the_locale_and_arabic_is_in_blocks(recorded: Dict[str, Any]) -> None:
    code, out, _ = run(["check", "--replay", str(recorded["recording"])], {"LANG": "fr_FR.UTF-8"})
    assert "Que faire" in out and "Disque système chiffré" in out and "Résultat : " in out
    code, out, _ = run(["check", "--replay", str(recorded["recording"])], {"LC_ALL": "ar_MA.UTF-8"})
    assert "تشفير قرص النظام" in out and "ما يجب فعله:" in out and "النتيجة:" in out
    assert "----" not in out  # no column table for right-to-left text
    # --lang wins over the locale
    _, out, _ = run(["check", "--replay", str(recorded["recording"]), "--lang", "en"], {"LANG": "ar_MA.UTF-8"})
    assert "What to do" in out


def test_check_reasons_are_in_the_chosen_language_on_this_machine(recorded: Dict[str, Any]) -> None:
    # Live, as an employee runs it: the screen lock reason comes from the collector, not the engine.
    code, out, err = run(["check", "--only", "screen_lock", "--lang", "fr", "--state-dir", str(recorded["state"])],
                         {"COLUMNS": "80"})
    assert code in (0, 1), err
    _, data, _ = run(["check", "--only", "screen_lock", "--json", "--state-dir", str(recorded["state"])])
    report = json.loads(data)
    outcome = report["facts"]["screen_lock"]
    result = next(r for r in report["results"] if r["check"] == "screen_lock")
    flat = " ".join(out.split())
    assert " ".join(render(result["message"], catalogue("fr")).split()) in flat
    if outcome["state"] != "ok":
        # the collector's reason is a message, nested in the result and rendered in French
        assert outcome["message"]["key"] in TEMPLATES_EN and result["message"]["params"]["reason"] == outcome["message"]
        assert " ".join(outcome["reason"].split()) not in flat
        assert result["reason"].endswith(outcome["reason"])  # the JSON keeps the English text


def test_only_restricts_checks_and_results(recorded: Dict[str, Any]) -> None:
    code, out, _ = run(["check", "--json", "--only", "firewall,disk_encryption", "--replay", str(recorded["recording"])])
    doc = json.loads(out)
    assert set(doc["facts"]) == {"os_identity", "firewall", "disk_encryption"}
    assert {r["check"] for r in doc["results"]} == {"firewall", "disk_encryption"}
    assert code == (0 if doc["status"] == "compliant" else 1)


def test_unknown_only_check_is_a_usage_error() -> None:
    code, out, err = run(["check", "--only", "firewall,antivirs"])
    assert code == 2 and out == ""
    assert "unknown check antivirs" in err and "known checks: antivirus, disk_encryption" in err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_here(["check", "--replay", str(tmp_path / "none.json")], capsys)[0] == 2
    (tmp_path / "not-a-recording.json").write_text('{"schema": "other"}')
    code, _, err = run_here(["check", "--replay", str(tmp_path / "not-a-recording.json")], capsys)
    assert code == 2 and "not a Teleposture recording" in err
    code, _, err = run_here(["check", "--record", "a", "--replay", "b"], capsys)
    assert code == 2 and "not allowed with" in err
    assert run_here(["check", "--lang", "de"], capsys)[0] == 2
    code, _, err = run_here(["check", "--only", ",", "--replay", "x"], capsys)
    assert code == 2 and "--only needs at least one check id" in err


def test_broken_policy_is_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "p.yaml"
    broken.write_text(BASELINE_YAML.read_text(encoding="utf-8").replace("check: firewall", "check: firewal"),
                      encoding="utf-8")
    code, out, err = run(["check", "--policy", str(broken), "--replay", "/nonexistent"])
    assert code == 2 and out == ""
    assert f"{broken}:" in err and "unknown check 'firewal'" in err


def _facts(recorded: Dict[str, Any], check: str) -> Dict[str, Any]:
    return recorded["json"]["facts"][check]


def test_a_policy_the_machine_meets_exits_0(recorded: Dict[str, Any], tmp_path: Path) -> None:
    os_version = _facts(recorded, "os_identity")["facts"]["os_version"]
    policy = tmp_path / "p.yaml"
    policy.write_text(f"""\
schema: teleposture/policy/v1
id: custom
version: 7
title: {{en: Custom, fr: Perso, ar: خاص}}
rules:
  - id: os-known
    check: os_identity
    severity: low
    expect: {{os_version: {{min: "{os_version}"}}}}
    title: {{en: OS, fr: OS, ar: نظام}}
    remediation: {{en: Upgrade, fr: Mettez à jour, ar: قم بالترقية}}
""", encoding="utf-8")
    code, out, _ = run(["check", "--json", "--policy", str(policy), "--replay", str(recorded["recording"])])
    doc = json.loads(out)
    assert (code, doc["status"], doc["policy"]["id"], doc["policy"]["version"]) == (0, "compliant", "custom", 7)
    code, out, _ = run(["check", "--policy", str(policy), "--replay", str(recorded["recording"])])
    assert code == 0 and "Result: COMPLIANT" in out


def test_errors_without_failures_are_not_compliant(tmp_path: Path) -> None:
    # A recording from another OS that holds no probe output: every check is an error.
    recording = tmp_path / "empty-darwin.json"
    recording.write_text(json.dumps({"schema": "teleposture/recording/v1", "platform": "darwin",
                                     "recorded_at": 1_790_000_000.0, "probes": []}))
    code, out, _ = run(["check", "--json", "--only", "firewall", "--replay", str(recording)])
    doc = json.loads(out)
    assert doc["platform"] == "darwin" and doc["status"] == "error" and code == 1
    [result] = doc["results"]
    assert result["status"] == "error" and "could not be checked" in result["reason"]
    code, out, _ = run(["check", "--only", "firewall", "--replay", str(recording), "--lang", "en"])
    assert code == 1 and "Some rules could not be checked" in out and "ERROR" in out


def _enrol(state: Path, document: Dict[str, Any]) -> Tuple[Path, Any]:
    key = protocol.generate_private_key()
    state.mkdir(parents=True, exist_ok=True)
    (state / "identity.json").write_text(json.dumps({"schema": "teleposture/identity/v1", "device_id": "d1",
                                                     "server_url": "https://collector.invalid",
                                                     "server_key": protocol.public_key_b64(key),
                                                     "server_key_id": "k", "enrolled_at": "2026-01-01T00:00:00Z"}))
    (state / "policy.json").write_text(json.dumps(protocol.sign_policy_bundle(key, document)))
    return state, key


def test_enrolled_policy_is_used_and_a_tampered_one_is_not(recorded: Dict[str, Any], tmp_path: Path) -> None:
    document = baseline().to_json()
    document["id"] = "enrolled-test"
    document["version"] = 5
    document["rules"] = [r for r in document["rules"] if r["check"] == "firewall"]
    state, _ = _enrol(tmp_path / "state", document)
    code, out, err = run(["check", "--json", "--replay", str(recorded["recording"]), "--state-dir", str(state)])
    doc = json.loads(out)
    assert doc["policy"]["id"] == "enrolled-test" and [r["rule_id"] for r in doc["results"]] == ["firewall-enabled"]
    assert err == ""
    # the environment variable names the state directory too
    _, out, _ = run(["check", "--json", "--replay", str(recorded["recording"])], {"TELEPOSTURE_STATE_DIR": str(state)})
    assert json.loads(out)["policy"]["id"] == "enrolled-test"
    bundle = json.loads((state / "policy.json").read_text())
    bundle["payload"] = bundle["payload"].replace('"version":5', '"version":6')
    (state / "policy.json").write_text(json.dumps(bundle))
    code, out, err = run(["check", "--json", "--replay", str(recorded["recording"]), "--state-dir", str(state)])
    assert json.loads(out)["policy"]["id"] == "ma-telework-baseline"
    assert "refused" in err and "using the bundled baseline" in err


def test_policy_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "validate", str(BASELINE_YAML)])
    assert code == 0 and f"valid: ma-telework-baseline version {baseline().version}" in out
    code, out, _ = run_here(["policy", "validate", str(POLICIES_DIR / "ma-telework-baseline.json")], capsys)
    assert code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASELINE_YAML.read_text(encoding="utf-8").replace("severity: medium", "severity: urgent", 1)
                   .replace("  - id: firewall-enabled", "  - id: disk-encryption"), encoding="utf-8")
    code, out, _ = run_here(["policy", "validate", str(bad)], capsys)
    lines = out.splitlines()
    assert code == 1 and lines[-1] == f"{bad}: invalid (2 problems)"
    assert any("severity must be one of" in line and line.startswith(f"{bad}:") for line in lines)
    assert any("duplicate rule id 'disk-encryption'" in line for line in lines)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [\n  - a\n", encoding="utf-8")
    code, out, _ = run_here(["policy", "validate", str(broken)], capsys)
    assert code == 1 and out.startswith(f"{broken}:") and "YAML syntax error" in out
    code, _, err = run_here(["policy", "validate", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2 and "cannot read" in err


def test_state_directory_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli import check as cli_check

    env = {"TELEPOSTURE_CONFIG": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cli_check.resolve_state_dir(str(tmp_path / "flag"), env) == (tmp_path / "flag", tmp_path / "flag" / "cache")
    env["TELEPOSTURE_STATE_DIR"] = str(tmp_path / "env")
    assert cli_check.resolve_state_dir(None, env)[0] == tmp_path / "env"
    assert cli_check.resolve_state_dir(str(tmp_path / "flag"), env)[0] == tmp_path / "flag"
    # a person who cannot write the service's directory still reads its policy, and caches in their own
    monkeypatch.setattr(cli_check, "_writable", lambda path: False)
    assert cli_check.resolve_state_dir(None, env) == (tmp_path / "env", tmp_path / "xdg" / "teleposture" / "cache")
    config = tmp_path / "agent.toml"
    config.write_text('state_dir = "/somewhere/else"\nnot_a_setting = 1\n')
    with pytest.raises(cli_check.UsageError, match="unknown setting"):
        cli_check.resolve_state_dir(None, {"TELEPOSTURE_CONFIG": str(config)})
