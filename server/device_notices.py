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
from server.store.schema import DEVICE_ACTIVE, device_notices, devices, server_settings

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
# how far the stale sweep has looked (a last_seen, epoch seconds), and how far back before it each run looks
SWEEP_MARK = "stale_sweep_mark"
SWEEP_OVERLAP = 3600.0
SWEEP_PAGE = 500


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
    since its last report (or its enrolment), once per silence; returns how many (at most ``limit``).

    A run that finds nothing costs next to nothing at 1M devices (the first version sorted every silent
    device and probed its notices: 0.3-1 s of database time per run, and a plan that degraded to minutes on
    stale statistics). A device that reported goes silent at its ``last_seen``, which only moves forward,
    to the collector's clock: so only the ``last_seen`` values that crossed the cutoff since the last run
    need looking at. The sweep keeps how far it got (``SWEEP_MARK`` in server_settings) and looks back
    ``SWEEP_OVERLAP`` before it, for clocks that differ between nodes; the notice check keeps the overlap
    from flagging twice. Devices that never reported (the partial ``ix_devices_never_seen`` index: few,
    and each leaves it at its first report) are all looked at."""
    cutoff = now - stale_after
    mark = _sweep_mark(conn)
    reported = devices.c.last_seen
    window = [reported < cutoff] + ([] if mark is None else [reported >= mark - SWEEP_OVERLAP])
    found, last_looked_at = _unflagged(conn, reported, window, limit)
    # done up to the cutoff; or, when the batch is full, up to the last one flagged: the next batch goes on
    _set_sweep_mark(conn, last_looked_at if len(found) == limit else cutoff if mark is None else max(cutoff, mark))
    if len(found) < limit:
        enrolled = devices.c.enrolled_at
        found += _unflagged(conn, enrolled, [reported.is_(None), enrolled < cutoff], limit - len(found))[0]
    for device_id, seen in found:
        _insert(conn, device_id, STALE, None, now, {"last_seen": seen, "stale_after": stale_after,
                                                    "silent_seconds": round(now - seen)})
    return len(found)


def _unflagged(conn: Connection, seen: sa.ColumnElement[Any], where: list[sa.ColumnElement[bool]],
               limit: int) -> tuple[list[tuple[str, float]], float]:
    """Up to ``limit`` active devices matching ``where`` with no stale notice since their ``seen``, in
    ``seen`` order, and the ``seen`` of the last device looked at. Pages through the index on ``seen``
    and reads the pages' notices by device id: a plan that holds whatever the statistics say."""
    found: list[tuple[str, float]] = []
    after: Optional[tuple[float, str]] = None
    while True:
        query = sa.select(devices.c.id, seen.label("seen")).where(devices.c.state == DEVICE_ACTIVE, *where)
        if after is not None:
            query = query.where(sa.tuple_(seen, devices.c.id) > sa.tuple_(*after))
        page = conn.execute(query.order_by(seen, devices.c.id).limit(SWEEP_PAGE)).all()
        latest = dict(conn.execute(sa.select(device_notices.c.device_id, sa.func.max(device_notices.c.at))
                                   .where(device_notices.c.device_id.in_([row.id for row in page]),
                                          device_notices.c.kind == STALE)
                                   .group_by(device_notices.c.device_id)).all()) if page else {}
        for row in page:
            device_id, silent_since = str(row.id), float(row.seen)
            after = (silent_since, device_id)
            if latest.get(row.id, -1.0) < silent_since:
                found.append((device_id, silent_since))
                if len(found) == limit:
                    return found, silent_since
        if len(page) < SWEEP_PAGE:
            return found, after[0] if after else 0.0


def _sweep_mark(conn: Connection) -> Optional[float]:
    value = conn.execute(sa.select(server_settings.c.value).where(server_settings.c.name == SWEEP_MARK)).scalar()
    try:
        return float(value) if value is not None else None
    except ValueError:  # not written by this code: sweep everything once, then write a good one
        return None


def _set_sweep_mark(conn: Connection, seen: float) -> None:
    # one statement (both databases): a sweep called outside the job's cluster lock (an admin's shell, a
    # test) may race the job for the row's creation
    conn.execute(sa.text("INSERT INTO server_settings (name, value) VALUES (:name, :value) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value"),
                 {"name": SWEEP_MARK, "value": repr(seen)})


def list_notices(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The device's notices, newest first (device page and admin API)."""
    rows = conn.execute(sa.select(device_notices).where(device_notices.c.device_id == device_id)
                        .order_by(device_notices.c.id.desc()).limit(limit)).all()
    return [{"kind": row.kind, "at": row.at, "seq": row.seq, "details": json.loads(row.details)} for row in rows]
