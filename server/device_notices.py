"""What an agent tells the collector about its own health, kept as device notices (device page).

Ingest calls `record_report_notices` once per accepted report, in its write transaction, and
`cloned_identity` before judging one; both write `device_notices` rows:

* ``seq_reset``: the report's ``seq_reset`` list: the agent's counter was behind the collector's (state
  directory restored or deleted) and it numbered reports again from ``from`` to ``to``;
* ``reports_dropped``: the report's ``dropped_reports`` total (reports the agent could not deliver: a full
  outbox, an unreadable one) grew since the last notice;
* ``cloned_identity``: a report signed with the device's key says it comes from another machine than the
  one enrolled (the state directory was copied). That report is refused: two machines' posture must not
  merge into one device;
* ``stale``: the device has sent nothing for ``stale_after`` (written by the ``stale-devices`` job, once per
  silence: a report re-arms it);
* ``clock_skew``: the report's ``os_identity`` fact ``clock_skew_seconds`` (the laptop's clock minus the
  collector's, measured by the agent from answers' ``server_time``) is beyond ``CLOCK_SKEW_TOLERANCE``. The
  agent corrects its own stamps, so reports still arrive; the notice tells the team the machine's clock is wrong
  (certificates, Kerberos and logs on that laptop suffer). Written at most once per ``CLOCK_SKEW_REPEAT`` per
  device while the clock stays off, and again at once when the skew changes sign.

Each notice is also an event in the outbox (server.actions.events), in the same transaction:
``seq.reset``, ``reports.dropped``, ``device.cloned``, ``device.stale`` and ``clock.skew``, so sinks hear of them as the device page does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.actions.events import Event, emit_events
from server.store.schema import DEVICE_ACTIVE, device_notices, devices

SEQ_RESET = "seq_reset"
REPORTS_DROPPED = "reports_dropped"
CLONED_IDENTITY = "cloned_identity"
STALE = "stale"
CLOCK_SKEW = "clock_skew"
MAX_RESETS_PER_REPORT = 20
# the protocol accepts created_at up to 10 min ahead; beyond 5 min a clock is wrong enough to tell someone
CLOCK_SKEW_TOLERANCE = 300.0
CLOCK_SKEW_REPEAT = 86400.0
EVENT_TYPES = {SEQ_RESET: "seq.reset", REPORTS_DROPPED: "reports.dropped", CLONED_IDENTITY: "device.cloned",
               STALE: "device.stale", CLOCK_SKEW: "clock.skew"}


def _insert(conn: Connection, device_id: str, kind: str, seq: Optional[int], now: float,
            details: Mapping[str, Any]) -> None:
    conn.execute(device_notices.insert().values(device_id=device_id, kind=kind, at=now, seq=seq,
                                                details=json.dumps(dict(details), sort_keys=True)[:4000]))
    # notices are rare (a restored laptop, a full outbox, a copied state directory): one lookup each is fine
    device = conn.execute(sa.select(devices.c.org_unit_id, devices.c.hostname)
                          .where(devices.c.id == device_id)).first()
    emit_events(conn, [Event(EVENT_TYPES[kind], device_id, int(device.org_unit_id) if device else None, None,
                             {**details, "seq": seq, "hostname": device.hostname if device else ""}, now)],
                now=now)


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63 else None


def reported_machine_id(payload: Mapping[str, Any]) -> Optional[str]:
    """The machine the agent runs on (payload ``machine_id``; absent from agents before it was added)."""
    machine_id = payload.get("machine_id")
    return machine_id if isinstance(machine_id, str) and machine_id else None


def cloned_identity(conn: Connection, device_id: str, enrolled_machine_id: str, payload: Mapping[str, Any],
                    seq: int, now: float) -> Optional[str]:
    """The refusal reason when the report comes from another machine than the enrolled one, else None.

    A notice is written for the first report of each foreign machine id (not for every retry)."""
    reported = reported_machine_id(payload)
    if not reported or not enrolled_machine_id or reported == enrolled_machine_id:
        return None
    seen = conn.execute(sa.select(device_notices.c.details).where(
        device_notices.c.device_id == device_id, device_notices.c.kind == CLONED_IDENTITY)).all()
    if not any(json.loads(row.details).get("machine_id") == reported for row in seen):
        _insert(conn, device_id, CLONED_IDENTITY, seq, now,
                {"machine_id": reported[:200], "enrolled_machine_id": enrolled_machine_id[:200]})
    return (f"cloned identity: this device was enrolled on machine {enrolled_machine_id[:64]}, the report comes "
            f"from {reported[:64]}; enrol that machine on its own (teleposture-agent enroll --force)")


def record_report_notices(conn: Connection, device_id: str, seq: int, payload: Mapping[str, Any],
                          now: float) -> int:
    """Notices an accepted report carries; the number written (0 on the hot path: two dict lookups)."""
    written = 0
    resets, dropped, skew = _notice_triggers(payload)
    if resets is not None:
        for item in resets[:MAX_RESETS_PER_REPORT]:
            if not isinstance(item, dict):
                continue
            details = {"from": _int(item.get("from")), "to": _int(item.get("to")),
                       "renumbered": _int(item.get("renumbered")),
                       "reason": str(item.get("reason") or "")[:300], "at": str(item.get("at") or "")[:40]}
            _insert(conn, device_id, SEQ_RESET, seq, now, details)
            written += 1
    if dropped:
        last = conn.execute(sa.select(device_notices.c.details).where(
            device_notices.c.device_id == device_id, device_notices.c.kind == REPORTS_DROPPED)
            .order_by(device_notices.c.id.desc()).limit(1)).first()
        before = json.loads(last.details).get("total", 0) if last is not None else 0
        if dropped > before:
            _insert(conn, device_id, REPORTS_DROPPED, seq, now, {"total": dropped, "new": dropped - before})
            written += 1
    if skew is not None:
        last = conn.execute(sa.select(device_notices.c.at, device_notices.c.details).where(
            device_notices.c.device_id == device_id, device_notices.c.kind == CLOCK_SKEW)
            .order_by(device_notices.c.id.desc()).limit(1)).first()
        same_side = last is not None and (json.loads(last.details).get("skew_seconds", 0) > 0) == (skew > 0)
        if last is None or not same_side or now - float(last.at) >= CLOCK_SKEW_REPEAT:
            _insert(conn, device_id, CLOCK_SKEW, seq, now,
                    {"skew_seconds": round(skew, 1), "tolerance_seconds": CLOCK_SKEW_TOLERANCE})
            written += 1
    return written


def carries_notices(payload: Mapping[str, Any]) -> bool:
    """Whether record_report_notices has anything to look at in this report (False: it reads and writes
    nothing, as for nearly every report)."""
    resets, dropped, skew = _notice_triggers(payload)
    return resets is not None or bool(dropped) or skew is not None


def _notice_triggers(payload: Mapping[str, Any]) -> tuple[Optional[list[Any]], Optional[int], Optional[float]]:
    """What in a report can make a notice (record_report_notices; carries_notices decides from the same):
    its seq resets (a list), its dropped-reports total, a clock skew beyond the tolerance (else None)."""
    resets = payload.get("seq_reset")
    skew = reported_clock_skew(payload)
    return (resets if isinstance(resets, list) else None, _int(payload.get("dropped_reports")),
            skew if skew is not None and abs(skew) > CLOCK_SKEW_TOLERANCE else None)


def reported_clock_skew(payload: Mapping[str, Any]) -> Optional[float]:
    """``clock_skew_seconds`` from the report's os_identity facts, if the agent measured it."""
    facts = payload.get("facts")
    identity = facts.get("os_identity") if isinstance(facts, dict) else None
    inner = identity.get("facts") if isinstance(identity, dict) else None
    skew = inner.get("clock_skew_seconds") if isinstance(inner, dict) else None
    if isinstance(skew, (int, float)) and not isinstance(skew, bool) and abs(skew) < 1e12:
        return float(skew)
    return None


def flag_stale_devices(conn: Connection, *, now: float, stale_after: float, limit: int = 500) -> int:
    """A ``stale`` notice (and its ``device.stale`` event) for each active device silent for ``stale_after``
    since its last report (or its enrolment), once per silence; returns how many (at most ``limit``)."""
    seen = sa.func.coalesce(devices.c.last_seen, devices.c.enrolled_at)
    flagged = sa.exists().where(device_notices.c.device_id == devices.c.id, device_notices.c.kind == STALE,
                                device_notices.c.at >= seen)
    rows = conn.execute(sa.select(devices.c.id, seen.label("seen"))
                        .where(devices.c.state == DEVICE_ACTIVE, seen < now - stale_after, ~flagged)
                        .order_by(seen).limit(limit)).all()
    for row in rows:
        _insert(conn, str(row.id), STALE, None, now, {"last_seen": float(row.seen), "stale_after": stale_after,
                                                      "silent_seconds": round(now - float(row.seen))})
    return len(rows)


def list_notices(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The device's notices, newest first (device page and admin API)."""
    rows = conn.execute(sa.select(device_notices).where(device_notices.c.device_id == device_id)
                        .order_by(device_notices.c.id.desc()).limit(limit)).all()
    return [{"kind": row.kind, "at": row.at, "seq": row.seq, "details": json.loads(row.details)} for row in rows]
