"""What the agent keeps of the collector's noncompliance ladders, and the notifications they trigger.

Upload answers carry the device's running ladders (``actions``); the newest is kept in the state's status
(``ladder``) for `status` and `check`, and handed to agent.service.notify. Called by agent.service.core after an upload.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agent.i18n import LANGUAGES, catalogue, detect_language, fill
from agent.policy import Policy
from agent.probes import Host
from agent.service.config import Settings
from agent.service.notify import Notifier, format_when
from agent.service.state import StateDir

log = logging.getLogger(__name__)


def employee_language(settings: Settings) -> str:
    return settings.language or detect_language()


def record(state: StateDir, host: Host, settings: Settings, policy: Policy,
           items: Sequence[Mapping[str, Any]], now: Optional[float] = None,
           runtime_root: Optional[str] = None) -> None:
    """Keep the newest ladder list and show the notifications it calls for (rate-limited per rule)."""
    current = time.time() if now is None else now
    clean: List[Dict[str, Any]] = [dict(item) for item in items if isinstance(item, Mapping)]
    state.update_status(ladder={"received_at": current, "items": clean})
    if not settings.notify:
        return
    notifier = Notifier(host, lang=employee_language(settings), reminder=settings.notify_reminder,
                        as_uid=os.getuid() if hasattr(os, "getuid") else -1,
                        **({"runtime_root": runtime_root} if runtime_root else {}))
    sent = state.status().get("notified") or {}
    memory, notice, shown = notifier.consider(clean, sent if isinstance(sent, dict) else {}, policy, current)
    state.update_status(notified=memory)
    if notice is not None:
        log.info("notified %d session(s): %s", shown, notice.summary, extra={"event": "employee_notified"})


def known_deadlines(status: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The ladder items the collector last sent, as kept in the status (empty when none)."""
    ladder = status.get("ladder")
    if not isinstance(ladder, Mapping) or not isinstance(ladder.get("items"), list):
        return []
    return [dict(item) for item in ladder["items"] if isinstance(item, Mapping)]


def describe(item: Mapping[str, Any]) -> str:
    """One line for `status`/`check`: step reached, what comes next and when."""
    parts = [f"step {item.get('step')}/{item.get('steps')} ({item.get('last_action') or '-'})"]
    if item.get("blocked_since") is not None:
        parts.append(f"access blocked since {format_when(float(item['blocked_since']))}")
    elif item.get("next_action") and item.get("next_at") is not None:
        parts.append(f"next: {item['next_action']} on {format_when(float(item['next_at']))}")
    if item.get("block_at") is not None and item.get("blocked_since") is None:
        parts.append(f"loses VPN access on {format_when(float(item['block_at']))}")
    return "; ".join(parts)


# English texts of the deadlines under `check`; the agent catalogue translates them (context deadlines.<key>).
TEXTS_EN: Mapping[str, str] = {"heading": "Deadlines known from the collector (as of {when}):"}


def known_from_status(status: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"received_at", "items"}`` of the ladders kept in a status (read by `check` with
    agent.service.state.read_status_file, which writes nothing); {} when there are none."""
    ladder = status.get("ladder")
    if not isinstance(ladder, Mapping):
        return {}
    return {"received_at": ladder.get("received_at"), "items": known_deadlines({"ladder": ladder})}


def render_known(known: Mapping[str, Any], lang: str) -> str:
    items = known.get("items") or []
    if not items:
        return ""
    texts = catalogue(lang if lang in LANGUAGES else "en")
    lines = [fill(texts.text("deadlines.heading", TEXTS_EN["heading"]),
                  {"when": format_when(float(known.get("received_at") or 0))})]
    lines += [f"  {item.get('rule_id')}: {describe(item)}" for item in items]
    return "\n".join(lines) + "\n"
