"""`teleposture-agent check` and grace periods: the verdicts of the agent's service, read from its state without
writing it, or FAIL with a note saying why grace could not be taken into account.

Live checks of one rule on this machine's OS identity (a version no OS has: it fails everywhere, cheaply),
with a 72 h grace period; the state directory holds what the service records (`failing_since`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from agent import protocol
from agent.i18n import catalogue
from agent.probes import LiveHost
from agent.service.core import AgentService, enroll
from agent.service.state import StateDir
from tests.agent.cli.test_check import AGENT, run
from tests.agent.service.conftest import make_settings
from tests.agent.service.fakecollector import FakeCollector

GRACE = 72 * 3600
POLICY = """\
schema: teleposture/policy/v1
id: grace-test
version: 1
title: {en: Grace test, fr: Test de grâce, ar: اختبار المهلة}
rules:
  - id: os-too-old
    check: os_identity
    severity: medium
    grace: 72h
    expect: {os_version: {min: "9999"}}
    title: {en: Recent OS, fr: Système récent, ar: نظام حديث}
    remediation: {en: Upgrade the OS, fr: Mettez à jour le système, ar: قم بترقية النظام}
"""
NOTE_EN = "Note: grace periods were not taken into account"


@pytest.fixture()
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def service_state(root: Path, failing_since: Dict[str, float]) -> Path:
    """A state directory as the service leaves it, written by the service's own StateDir."""
    state = StateDir(root)
    state.update_status(failing_since=failing_since, last_cycle={"status": "compliant"})
    state.close()
    return root


def snapshot(root: Path) -> Dict[str, Tuple[str, int]]:
    """Every file under ``root``: its digest and modification time (what 'nothing written' means)."""
    if not root.exists():
        return {}
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


def check(policy: Path, state: Path, *extra: str, env: Dict[str, str] | None = None) -> Tuple[int, str, str]:
    return run(["check", "--policy", str(policy), "--state-dir", str(state), *extra], env)


def test_a_recent_failure_is_a_warn_within_grace_as_the_service_says(policy: Path, tmp_path: Path) -> None:
    since = time.time() - 600
    state = service_state(tmp_path / "state", {"os-too-old": since})
    before = snapshot(state)
    until = protocol.rfc3339(since + GRACE)

    code, out, err = check(policy, state, "--lang", "en")
    assert code == 0, out + err  # a warn within grace leaves the machine compliant, as at the collector
    flat = " ".join(out.split())
    assert "Recent OS (medium) WARN" in flat
    assert f"within the grace period until {until}" in flat
    assert "Result: COMPLIANT" in out and "FAIL 0" in out and "WARN 1" in out
    assert NOTE_EN not in out and err == ""

    code, out, _ = check(policy, state, "--lang", "fr")
    assert code == 0 and f"dans le délai de grâce jusqu'au {until}" in " ".join(out.split())
    assert "ALERTE" in out and "Résultat : CONFORME" in out
    code, out, _ = check(policy, state, "--lang", "ar")
    assert code == 0 and f"ضمن مهلة السماح حتى {until}" in " ".join(out.split())

    code, out, _ = check(policy, state, "--json")
    doc = json.loads(out)
    [result] = doc["results"]
    assert (code, doc["status"], result["status"], result["within_grace"]) == (0, "compliant", "warn", True)
    assert result["grace_until"] == pytest.approx(since + GRACE)
    assert doc["grace"] == {"applied": True, "source": str(state / "state.db"), "reason": None, "note": None}
    assert snapshot(state) == before  # read, never written


def test_a_failure_older_than_its_grace_is_a_fail(policy: Path, tmp_path: Path) -> None:
    state = service_state(tmp_path / "state", {"os-too-old": time.time() - GRACE - 60})
    code, out, _ = check(policy, state, "--lang", "en")
    flat = " ".join(out.split())
    assert code == 1 and "Recent OS (medium) FAIL" in flat and "Result: NOT COMPLIANT" in out
    assert "within the grace period" not in flat and NOTE_EN not in out  # the grace was known: it is over
    doc = json.loads(check(policy, state, "--json")[1])
    assert doc["results"][0]["status"] == "fail" and doc["grace"]["applied"] is True


def test_a_failure_the_service_has_not_seen_yet_starts_its_grace_now(policy: Path, tmp_path: Path) -> None:
    # The service's next cycle would record it as failing from now: within grace, as check says.
    state = service_state(tmp_path / "state", {"another-rule": time.time() - 7 * 86400})
    started = time.time()
    code, out, _ = check(policy, state, "--json")
    [result] = json.loads(out)["results"]
    assert code == 0 and result["status"] == "warn"
    assert started + GRACE <= result["grace_until"] <= time.time() + GRACE


def test_without_the_service_state_failures_are_shown_as_they_are_with_a_note(policy: Path, tmp_path: Path) -> None:
    state = tmp_path / "never-enrolled"
    code, out, err = check(policy, state, "--lang", "en")
    flat = " ".join(out.split())
    assert code == 1 and "Recent OS (medium) FAIL" in flat
    assert flat.count(NOTE_EN) == 1
    assert f"(the agent's service has recorded nothing in {state}: this computer is not enrolled" in flat
    # said once, under the table, before the verdict
    assert out.index(NOTE_EN) < out.index("Result: NOT COMPLIANT")
    code, out, _ = check(policy, state, "--lang", "fr")
    assert code == 1 and "Remarque : les délais de grâce n'ont pas été pris en compte" in out
    code, out, _ = check(policy, state, "--lang", "ar")
    assert code == 1 and "ملاحظة: لم تُؤخذ مُهل السماح في الحسبان" in out
    code, out, _ = check(policy, state, "--json")
    doc = json.loads(out)
    assert (code, doc["status"], doc["results"][0]["status"]) == (1, "not_compliant", "fail")
    assert doc["grace"]["applied"] is False and doc["grace"]["reason"] == "not_enrolled"
    assert doc["grace"]["note"].startswith(NOTE_EN) and doc["grace"]["source"] == str(state / "state.db")
    assert not state.exists()  # looking did not create the state directory


def test_no_note_when_no_failure_could_be_within_grace(tmp_path: Path) -> None:
    # A failing rule without grace (0h) would fail anyway: saying grace is unknown would only be noise.
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.replace("grace: 72h", "grace: 0h"), encoding="utf-8")
    code, out, _ = check(policy, tmp_path / "none", "--lang", "en")
    assert code == 1 and "FAIL 1" in out and NOTE_EN not in out
    assert json.loads(check(policy, tmp_path / "none", "--json")[1])["grace"]["reason"] == "not_enrolled"


def test_a_corrupt_state_database_gives_the_note_and_is_left_as_it_is(policy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.db").write_bytes(b"not a database\n" * 400)
    before = snapshot(state)
    code, out, err = check(policy, state, "--lang", "en")
    flat = " ".join(out.split())
    assert code == 1 and "Recent OS (medium) FAIL" in flat
    assert f"{NOTE_EN} (the agent's state {state / 'state.db'} cannot be read: file is not a database)" in flat
    code, out, _ = check(policy, state, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["grace"]["reason"] == "state_unreadable" and doc["results"][0]["status"] == "fail"
    assert snapshot(state) == before  # not moved aside, not rebuilt: that is the service's call


def test_state_read_while_the_service_writes_it(policy: Path, tmp_path: Path) -> None:
    """The service keeps state.db open (WAL): check reads its latest commit and leaves its files alone."""
    state = service_state(tmp_path / "state", {})
    service = StateDir(state)  # the service's own writer; it keeps its connection open, as the service does
    since = time.time() - 3600
    service.update_status(failing_since={"os-too-old": since})  # committed to the WAL, not yet checkpointed
    files = sorted(p.name for p in state.iterdir())
    assert {"state.db-wal", "state.db-shm"} <= set(files)
    code, out, _ = check(policy, state, "--json")
    assert code == 0 and json.loads(out)["results"][0]["grace_until"] == pytest.approx(since + GRACE)
    assert sorted(p.name for p in state.iterdir()) == files
    service.close()
    # the service stopped: its WAL is gone, and check creates none (SQLite's read-only mode would)
    assert sorted(p.name for p in state.iterdir()) == ["state.db"]
    assert json.loads(check(policy, state, "--json")[1])["results"][0]["status"] == "warn"
    assert sorted(p.name for p in state.iterdir()) == ["state.db"]


def test_replay_is_judged_without_this_machine_history(policy: Path, tmp_path: Path) -> None:
    recording = tmp_path / "rec.json"
    state = service_state(tmp_path / "state", {"os-too-old": time.time() - 600})
    code, _, err = check(policy, tmp_path / "other", "--record", str(recording))
    assert code == 1, err
    code, out, _ = check(policy, state, "--replay", str(recording), "--lang", "en")
    flat = " ".join(out.split())
    assert code == 1 and "Recent OS (medium) FAIL" in flat
    assert f"{NOTE_EN} (a recording is judged without this computer's history of failures)" in flat
    doc = json.loads(check(policy, state, "--replay", str(recording), "--json")[1])
    assert doc["grace"]["reason"] == "replay" and doc["grace"]["source"] is None
    assert doc["results"][0]["status"] == "fail"


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="check-grace-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the check as another user")
def test_a_user_who_cannot_read_the_state_is_told_to_use_sudo(shared_dir: Path) -> None:
    state = service_state(shared_dir / "state", {"os-too-old": time.time() - 600})
    os.chmod(state, 0o700)  # as the service leaves it: its own
    policy = shared_dir / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    policy.chmod(0o644)
    cache = shared_dir / "nobody-cache"
    cache.mkdir()
    cache.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "TELEPOSTURE_"))}
    env.update({"LANG": "C.UTF-8", "NO_COLOR": "1", "COLUMNS": "120", "HOME": str(cache), "XDG_CACHE_HOME": str(cache)})
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(AGENT), "check",
                           "--policy", str(policy), "--state-dir", str(state), "--lang", "en"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert proc.returncode == 1 and "Recent OS (medium) FAIL" in flat, proc.stdout + proc.stderr
    assert f"{NOTE_EN} (only the agent's service can read {state / 'state.db'}; run the check with sudo" in flat


@pytest.fixture()
def fake_with_policy() -> Iterator[FakeCollector]:
    from agent.policy import load_policy_text

    collector = FakeCollector()
    collector.set_policy(protocol.sign_policy_bundle(collector.server_key, load_policy_text(POLICY).to_json()),
                         '"grace"')
    yield collector
    collector.close()


def test_check_says_what_the_running_service_reports(fake_with_policy: FakeCollector, tmp_path: Path) -> None:
    """The real service enrolled, checking and recording; then check, as the employee types it."""
    settings = make_settings(tmp_path / "state")
    host = LiveHost(cache_dir=tmp_path / "state" / "cache")
    enroll(settings, fake_with_policy.url, "tok", None, True, host=host)
    service = AgentService(settings, host=host)
    service.produce_report()
    time.sleep(0.05)
    service.produce_report()  # the second cycle judges with the failing_since the first recorded
    service.upload_pending()
    service.close()
    [reported] = fake_with_policy.payloads[-1]["results"]
    assert reported["status"] == "warn" and reported["message"]["key"] == "within_grace"

    # the enrolled policy and the service's record, from the state directory alone
    code, out, err = run(["check", "--json", "--state-dir", str(tmp_path / "state")])
    doc = json.loads(out)
    [result] = doc["results"]
    assert (code, doc["policy"]["id"], doc["status"]) == (0, "grace-test", "compliant"), err
    assert {k: result[k] for k in ("status", "message", "reason")} == \
        {k: reported[k] for k in ("status", "message", "reason")}
    code, out, _ = run(["check", "--state-dir", str(tmp_path / "state"), "--lang", "fr"])
    until = reported["message"]["params"]["until"]
    assert code == 0 and f"dans le délai de grâce jusqu'au {until}" in " ".join(out.split())
    assert catalogue("fr").text("status.warn", "WARN") in out
