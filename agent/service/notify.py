"""Desktop notifications to the signed-in employee about the noncompliance ladder (docs/actions.md).

The collector's upload answer lists the device's running ladders (rule, step reached, next step and its
deadline, block deadline). ``due`` (pure) picks what to tell: a rule whose ladder reached a new step,
or a reminder once ``reminder`` seconds passed since the rule was last notified; ``compose`` (pure) writes
one notification in the employee's language; the argv builders give the exact command per platform, run
through the Host (never a shell):

- Linux: the agent runs as root; each signed-in user has a session bus at /run/user/UID/bus. ``notify-send``
  (libnotify, the freedesktop Notify call) runs as that user (``runuser``) with that bus address.
- macOS: ``launchctl asuser UID sudo -u USER osascript`` in the console user's session; the texts are
  passed as arguments to the script (``on run argv``), never spliced into AppleScript source.
- Windows: the service (SYSTEM) registers a one-shot scheduled task for the interactive user that shows a
  toast (Windows.UI.Notifications), runs it, and deletes it; texts travel base64-encoded.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.i18n import LANGUAGES, catalogue, fill
from agent.policy import Policy
from agent.probes import Host

log = logging.getLogger(__name__)

APP_NAME = "Teleposture"
RUNTIME_ROOT = "/run/user"

# English texts of the notification; the agent catalogue translates them (context notify.<key>).
TEXTS_EN: Mapping[str, str] = {
    "summary": "Teleposture: action needed on this computer",
    "summary_blocked": "Teleposture: network access blocked",
    "loses_access": "Access to the organisation's network (VPN) will be blocked on {date}.",
    "blocked": "Access to the organisation's network (VPN) is blocked since {date}. Fix it to get it back.",
    "more": "Run `teleposture-agent status` for details.",
}


@dataclass(frozen=True)
class Notice:
    summary: str
    body: str
    urgency: str  # low | normal | critical (freedesktop urgency levels)


@dataclass(frozen=True)
class Session:
    uid: int
    user: str
    bus: str  # path of the session bus socket (Linux); "" elsewhere


def format_when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def due(items: Sequence[Mapping[str, Any]], sent: Mapping[str, Mapping[str, Any]], now: float,
        reminder: float) -> List[Mapping[str, Any]]:
    """The ladder items to notify now: a new step since the last notice of the rule, or a reminder."""
    out = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("rule_id"), str):
            continue
        last = sent.get(item["rule_id"])
        if last is None or int(item.get("step") or 0) > int(last.get("step") or 0) \
                or now - float(last.get("at") or 0) >= reminder:
            out.append(item)
    return out


def compose(items: Sequence[Mapping[str, Any]], policy: Policy, lang: str, now: float) -> Notice:
    """One notification for ``items``: each rule's title and what to do, and the block deadline."""
    texts = catalogue(lang if lang in LANGUAGES else "en")

    def text(key: str, **params: Any) -> str:
        return fill(texts.text(f"notify.{key}", TEXTS_EN[key]), params)

    titles = {rule.id: rule for rule in policy.rules}
    lines: List[str] = []
    blocked = False
    deadlines: List[float] = []
    for item in items:
        rule = titles.get(str(item["rule_id"]))
        title = (rule.title.get(lang) or rule.title.get("en")) if rule else str(item["rule_id"])
        remedy = (rule.remediation.get(lang) or rule.remediation.get("en")) if rule else ""
        lines.append(f"• {title}: {remedy}".strip().rstrip(":"))
        if item.get("blocked_since") is not None:
            blocked = True
        elif isinstance(item.get("block_at"), (int, float)) and item["block_at"] > now:
            deadlines.append(float(item["block_at"]))
    if blocked:
        since = min(float(i["blocked_since"]) for i in items if i.get("blocked_since") is not None)
        lines.append(text("blocked", date=format_when(since)))
    elif deadlines:
        lines.append(text("loses_access", date=format_when(min(deadlines))))
    lines.append(text("more"))
    urgent = blocked or bool(deadlines) or any(i.get("severity") == "critical" for i in items)
    return Notice(text("summary_blocked" if blocked else "summary"), "\n".join(lines),
                  "critical" if urgent else "normal")


# -- sessions -----------------------------------------------------------------------------------------

def parse_passwd(text: str) -> Dict[int, str]:
    users: Dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            users.setdefault(int(parts[2]), parts[0])
    return users


def linux_sessions(host: Host, runtime_root: str = RUNTIME_ROOT) -> List[Session]:
    """Users with a session bus (/run/user/UID/bus exists while they are signed in)."""
    listing = host.listdir(runtime_root)
    if not listing.ok:
        return []
    passwd = host.read_text("/etc/passwd")
    users = parse_passwd(passwd.stdout if passwd.ok else "")
    out = []
    for name in listing.stdout.split():
        if not name.isdigit():
            continue
        bus = f"{runtime_root.rstrip('/')}/{name}/bus"
        if not host.exists(bus):
            continue
        if int(name) not in users:
            # Directory users (SSSD, LDAP, AD) are not in /etc/passwd: ask NSS.
            entry = host.run(["getent", "passwd", name], timeout=5)
            users.update(parse_passwd(entry.stdout) if entry.ok else {})
        if int(name) in users:
            out.append(Session(int(name), users[int(name)], bus))
    return out


def parse_console_owner(text: str) -> Optional[Session]:
    """``stat -f '%Su %u' /dev/console`` -> the macOS console user (root at the login window: nobody)."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit() or parts[0] in ("root", "_mbsetupuser", "loginwindow"):
        return None
    return Session(int(parts[1]), parts[0], "")


# -- commands -------------------------------------------------------------------------------------------

def linux_argv(session: Session, notice: Notice, as_uid: int) -> List[str]:
    command = ["notify-send", f"--app-name={APP_NAME}", f"--urgency={notice.urgency}", "--icon=dialog-warning",
               notice.summary, notice.body]
    env = ["env", f"DBUS_SESSION_BUS_ADDRESS=unix:path={session.bus}"]
    if as_uid == session.uid:
        return env + command
    return ["runuser", "-u", session.user, "--"] + env + command


_OSASCRIPT = ("on run argv", f'display notification (item 2 of argv) with title "{APP_NAME}" subtitle (item 1 of argv)',
              "end run")


def darwin_argv(session: Session, notice: Notice) -> List[str]:
    script: List[str] = []
    for line in _OSASCRIPT:
        script += ["-e", line]
    return (["launchctl", "asuser", str(session.uid), "sudo", "-u", session.user, "osascript"] + script
            + [notice.summary, notice.body])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def windows_toast_script(notice: Notice) -> str:
    """PowerShell run in the user's session: a toast with the two texts (decoded from base64, so no quoting)."""
    return (
        "$ErrorActionPreference='Stop';"
        "$d={param($s)[Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($s))};"
        "[Windows.UI.Notifications.ToastNotificationManager,Windows.UI.Notifications,ContentType=WindowsRuntime]"
        "|Out-Null;"
        "$x=[Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent("
        "[Windows.UI.Notifications.ToastTemplateType]::ToastText02);"
        "$t=$x.GetElementsByTagName('text');"
        f"$t.Item(0).AppendChild($x.CreateTextNode((& $d '{_b64(notice.summary)}')))|Out-Null;"
        f"$t.Item(1).AppendChild($x.CreateTextNode((& $d '{_b64(notice.body)}')))|Out-Null;"
        "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
        f"'{APP_NAME}').Show([Windows.UI.Notifications.ToastNotification]::new($x))")


def _encoded(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def windows_argv(notice: Notice) -> List[str]:
    """Register, start and delete a one-shot task that runs the toast script as the interactive user."""
    inner = _encoded(windows_toast_script(notice))
    outer = (
        "$ErrorActionPreference='Stop';"
        "$u=(Get-CimInstance Win32_ComputerSystem).UserName;"
        "if(-not $u){exit 3};"
        "$n='TelepostureNotify-'+[guid]::NewGuid();"
        "$a=New-ScheduledTaskAction -Execute 'powershell.exe' -Argument "
        f"'-NoProfile -NonInteractive -WindowStyle Hidden -EncodedCommand {inner}';"
        "$p=New-ScheduledTaskPrincipal -UserId $u -LogonType Interactive;"
        "Register-ScheduledTask -TaskName $n -Action $a -Principal $p|Out-Null;"
        "Start-ScheduledTask -TaskName $n;Start-Sleep -Seconds 5;"
        "Unregister-ScheduledTask -TaskName $n -Confirm:$false")
    return ["powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand", _encoded(outer)]


class Notifier:
    """Decides and shows notifications; remembers per rule what was notified (in the agent's status)."""

    def __init__(self, host: Host, *, lang: str, reminder: float, as_uid: int,
                 runtime_root: str = RUNTIME_ROOT) -> None:
        self.host = host
        self.lang = lang
        self.reminder = reminder
        self.as_uid = as_uid
        self.runtime_root = runtime_root

    def argvs(self, notice: Notice) -> List[List[str]]:
        if self.host.platform == "linux":
            return [linux_argv(s, notice, self.as_uid) for s in linux_sessions(self.host, self.runtime_root)]
        if self.host.platform == "darwin":
            owner = self.host.run(["stat", "-f", "%Su %u", "/dev/console"], timeout=5)
            session = parse_console_owner(owner.stdout) if owner.ok else None
            return [darwin_argv(session, notice)] if session else []
        if self.host.platform == "windows":
            return [windows_argv(notice)]
        return []

    def consider(self, items: Sequence[Mapping[str, Any]], sent: Mapping[str, Mapping[str, Any]],
                 policy: Policy, now: float) -> Tuple[Dict[str, Dict[str, Any]], Optional[Notice], int]:
        """Show what is due; the new per-rule memory, the notice shown (if any) and how many sessions got it."""
        current = {str(i["rule_id"]) for i in items if isinstance(i, Mapping) and "rule_id" in i}
        memory = {rule: dict(value) for rule, value in sent.items() if rule in current}  # ended episodes forgotten
        todo = due(items, memory, now, self.reminder)
        if not todo:
            return memory, None, 0
        notice = compose(todo, policy, self.lang, now)
        shown = 0
        for argv in self.argvs(notice):
            result = self.host.run(argv, timeout=30)
            if result.ok:
                shown += 1
            else:
                log.warning("notification not shown: %s", (result.stderr or result.error or "")[:200],
                            extra={"event": "notify_failed"})
        if shown:
            for item in todo:
                memory[str(item["rule_id"])] = {"step": int(item.get("step") or 0), "at": now}
        return memory, notice, shown
