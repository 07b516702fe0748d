"""Employee notifications: what is due (rate limit), the texts in en/fr/ar, the exact commands per platform,
and a real freedesktop notification over a session D-Bus (dbus-daemon + dunst under Xvfb, with
dbus-monitor recording the Notify calls)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.policy import baseline
from agent.probes import LiveHost
from agent.service.notify import (
    Notice,
    Notifier,
    Session,
    compose,
    darwin_argv,
    due,
    linux_argv,
    parse_console_owner,
    windows_argv,
)
from tests.waiting import eventually

NOW = 1_800_000_000.0
ITEM = {"rule_id": "disk-encryption", "severity": "critical", "started_at": NOW - 60, "step": 1, "steps": 3,
        "last_action": "notify_employee", "next_action": "notify_team", "next_at": NOW + 3600,
        "block_at": NOW + 72 * 3600, "blocked_since": None}


def test_due_new_step_and_reminder_only() -> None:
    assert due([ITEM], {}, NOW, 3600) == [ITEM]
    sent = {"disk-encryption": {"step": 1, "at": NOW - 10}}
    assert due([ITEM], sent, NOW, 3600) == []  # same step, notified 10 s ago: not every cycle
    assert due([{**ITEM, "step": 2}], sent, NOW, 3600) != []  # a new step
    assert due([ITEM], sent, NOW + 3600, 3600) == [ITEM]  # reminder


@pytest.mark.parametrize("lang, words", [("en", "will be blocked on"), ("fr", "sera bloqué le"),
                                         ("ar", "سيتم حظر الوصول")])
def test_compose_in_the_employees_language(lang: str, words: str) -> None:
    notice = compose([ITEM], baseline(), lang, NOW)
    rule = baseline().rule("disk-encryption")
    assert rule.title[lang] in notice.body and rule.remediation[lang] in notice.body
    assert words in notice.body and notice.urgency == "critical"
    blocked = compose([{**ITEM, "blocked_since": NOW - 5}], baseline(), lang, NOW)
    assert blocked.summary != notice.summary


def test_exact_commands_per_platform() -> None:
    notice = Notice("Teleposture: x", 'body "quoted" $(rm -rf /)', "critical")
    session = Session(1000, "amina", "/run/user/1000/bus")
    assert linux_argv(session, notice, as_uid=0) == [
        "runuser", "-u", "amina", "--", "env", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus",
        "notify-send", "--app-name=Teleposture", "--urgency=critical", "--icon=dialog-warning",
        "Teleposture: x", 'body "quoted" $(rm -rf /)']
    assert linux_argv(session, notice, as_uid=1000)[0] == "env"
    mac = darwin_argv(Session(501, "amina", ""), notice)
    assert mac[:7] == ["launchctl", "asuser", "501", "sudo", "-u", "amina", "osascript"]
    assert mac[-2:] == [notice.summary, notice.body]  # data, never AppleScript source
    assert parse_console_owner("amina 501\n") == Session(501, "amina", "")
    assert parse_console_owner("root 0\n") is None
    win = windows_argv(notice)
    assert win[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    outer = base64.b64decode(win[4]).decode("utf-16-le")
    assert "New-ScheduledTaskPrincipal -UserId $u -LogonType Interactive" in outer
    inner = base64.b64decode(outer.split("-EncodedCommand ")[1].split("'")[0]).decode("utf-16-le")
    assert "ToastNotificationManager" in inner and notice.body not in inner
    assert base64.b64encode(notice.body.encode()).decode() in inner


@pytest.fixture
def session_bus(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A session bus at RUNTIME/<uid>/bus with dunst serving org.freedesktop.Notifications and dbus-monitor
    recording every Notify call; yields (runtime root, monitor log)."""
    for tool in ("dbus-daemon", "dunst", "xvfb-run", "dbus-monitor", "notify-send", "runuser"):
        assert shutil.which(tool), f"{tool} missing: run scripts/setup-dev.sh"
    runtime = tmp_path / f"run-{os.getpid()}"
    bus_dir = runtime / str(os.getuid())
    bus_dir.mkdir(parents=True)
    address = f"unix:path={bus_dir / 'bus'}"
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
    procs = [subprocess.Popen(["dbus-daemon", "--session", f"--address={address}", "--nofork", "--nopidfile"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        assert eventually(lambda: (bus_dir / "bus").exists(), 15), "dbus-daemon did not start"
        procs.append(subprocess.Popen(["xvfb-run", "-a", "dunst"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))

        def served() -> bool:
            answer = subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                                     "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.Notifications"],
                                    env=env, capture_output=True, text=True, check=False)
            return "boolean true" in answer.stdout
        assert eventually(served, 30), "dunst did not take org.freedesktop.Notifications"
        log = tmp_path / "monitor.log"
        with open(log, "w") as handle:
            procs.append(subprocess.Popen(["dbus-monitor", "--session",
                                           "type='method_call',interface='org.freedesktop.Notifications',"
                                           "member='Notify'"], env=env, stdout=handle, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        yield runtime, log
    finally:
        for proc in reversed(procs):
            if isinstance(proc.args, list) and proc.args[0] == "xvfb-run":
                os.killpg(proc.pid, 15)  # xvfb-run, Xvfb and dunst: their own process group
            else:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_real_notification_on_the_session_bus(session_bus: tuple[Path, Path]) -> None:
    runtime, log = session_bus
    # as_uid=-1: the agent is "another user" than the session's, so it goes through runuser as root does.
    notifier = Notifier(LiveHost(), lang="fr", reminder=3600, as_uid=-1, runtime_root=str(runtime))
    memory, notice, shown = notifier.consider([ITEM], {}, baseline(), time.time())
    assert shown == 1 and notice is not None
    assert eventually(lambda: "Notify" in log.read_text(encoding="utf-8", errors="replace"), 15)
    recorded = log.read_text(encoding="utf-8")
    assert "Teleposture : action requise sur cet ordinateur" in recorded
    assert baseline().rule("disk-encryption").title["fr"] in recorded and "sera bloqué le" in recorded
    assert 'string "Teleposture"' in recorded  # app name
    # Rate limit: the same step again shows nothing; the next step does.
    again, notice2, shown2 = notifier.consider([ITEM], memory, baseline(), time.time())
    assert notice2 is None and shown2 == 0
    _, notice3, shown3 = notifier.consider([{**ITEM, "step": 2, "last_action": "notify_team"}], again, baseline(),
                                           time.time())
    assert shown3 == 1 and notice3 is not None
    assert eventually(lambda: log.read_text(encoding="utf-8").count("member=Notify") == 2, 15)


def test_sessions_found_in_passwd_or_through_nss(tmp_path: Path) -> None:
    from agent.probes import ProbeResult
    from agent.service.notify import linux_sessions

    class Host(LiveHost):
        def run(self, argv: Any, timeout: float = 5.0, cache_on: Any = ()) -> ProbeResult:
            assert list(argv) == ["getent", "passwd", "1500"]
            return ProbeResult("run", tuple(argv), stdout="karim@ad.example:*:1500:1500:Karim:/home/karim:/bin/bash\n")

        def read_text(self, path: str) -> ProbeResult:
            return ProbeResult("read", (path,), stdout="root:x:0:0:root:/root:/bin/bash\namina:x:1000:1000::/home/a:/bin/sh\n")

    for uid in ("1000", "1500", "2000"):
        (tmp_path / uid).mkdir()
        if uid != "2000":
            (tmp_path / uid / "bus").touch()
    found = linux_sessions(Host(), str(tmp_path))
    assert [(s.uid, s.user) for s in found] == [(1000, "amina"), (1500, "karim@ad.example")]
