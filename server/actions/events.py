"""Events: types, their OCSF-shaped JSON, and the outbox writer ``emit_event``.

An event is written in the transaction of the change that caused it, together with one delivery row per
sink whose filters match it; the delivery worker sends it later. Nothing here does network I/O.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.schema import deliveries, events, sinks

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "Teleposture", "vendor_name": "Teleposture", "version": "1"}

# type -> (OCSF class_uid, activity_id, description). 2003 = Compliance Finding (activity 1 Create,
# 2 Update, 3 Close); 0 = Base Event, for the operational events that are not findings.
EVENT_TYPES: Mapping[str, tuple[int, int, str]] = {
    "rule.failing": (2003, 1, "a rule started failing on a device"),
    "rule.passing": (2003, 3, "a rule that failed passes again"),
    "step.reached": (2003, 2, "a step of the noncompliance ladder fired"),
    "device.noncompliant": (2003, 2, "the device's compliance summary became not_compliant"),
    "device.compliant": (2003, 3, "the device's compliance summary became compliant"),
    "device.blocked": (2003, 2, "the ladder reached `block`: the device's access decision is deny"),
    "device.unblocked": (2003, 3, "the device is no longer blocked"),
    "device.stale": (0, 0, "the device has not reported for stale_after"),
    "exception.granted": (2003, 2, "an admin exempted a device or org unit from a rule"),
    "exception.ended": (2003, 2, "an exception expired or was revoked"),
    "device.enrolled": (0, 0, "a device enrolled"),
    "device.replaced": (0, 0, "a re-enrolment replaced a device"),
    "enrolment.conflict": (0, 0, "an enrolment conflicted with an existing device"),
    "reports.dropped": (0, 0, "the agent's full outbox dropped reports"),
    "seq.reset": (0, 0, "the agent's report sequence went back (lost or restored state)"),
    "clock.skew": (0, 0, "the agent's clock is off by more than the tolerance"),
    "device.cloned": (0, 0, "a report signed with the device's key came from another machine (copied state)"),
    "sink.test": (0, 0, "a test event sent from the dashboard or the API"),
}
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_ORDER = ("low", "medium", "high", "critical")


class EventError(ValueError):
    """An event that cannot be written (unknown type)."""


@dataclass(frozen=True)
class Event:
    type: str
    device_id: Optional[str] = None
    org_unit_id: Optional[int] = None
    severity: Optional[str] = None
    # What the event says: rule_id, status, step, deadline, hostname ... (docs/actions.md lists them).
    data: dict[str, Any] = field(default_factory=dict)
    at: Optional[float] = None


def ocsf_body(event: Event, uid: str, at: float) -> dict[str, Any]:
    """The OCSF-shaped document of an event (the mapping is documented in docs/actions.md)."""
    class_uid, activity_id, description = EVENT_TYPES[event.type]
    data = dict(event.data)
    body: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": "Compliance Finding" if class_uid == 2003 else "Base Event",
        "category_uid": 2 if class_uid == 2003 else 0,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": int(at * 1000),
        "severity_id": SEVERITY_IDS.get(event.severity or "", 1),
        "severity": (event.severity or "informational").capitalize(),
        "message": str(data.get("message") or description),
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": uid, "event_code": event.type},
    }
    if event.device_id is not None:
        device: dict[str, Any] = {"uid": event.device_id}
        if data.get("hostname"):
            device["hostname"] = data["hostname"]
        if data.get("org_unit"):
            device["org"] = {"name": data["org_unit"]}
        body["device"] = device
    if class_uid == 2003:
        rule_id = data.get("rule_id")
        body["finding_info"] = {"uid": f"{event.device_id}/{rule_id}" if rule_id else str(event.device_id),
                                "title": str(data.get("title") or rule_id or event.type),
                                "types": [event.type]}
        if data.get("started_at") is not None:
            body["finding_info"]["first_seen_time"] = int(float(data["started_at"]) * 1000)
        if rule_id:
            failing = data.get("status") == "fail" or event.type in ("rule.failing", "step.reached",
                                                                     "device.blocked")
            body["compliance"] = {"control": rule_id, "status": "Fail" if failing else "Pass",
                                  "status_id": 3 if failing else 1}
    body["unmapped"] = {"teleposture": {"type": event.type, "org_unit_id": event.org_unit_id, **data}}
    return body


@dataclass(frozen=True)
class SinkFilter:
    event_types: frozenset[str]
    org_unit_ids: frozenset[int]
    min_severity: Optional[str]

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> SinkFilter:
        return SinkFilter(frozenset(raw.get("event_types") or ()), frozenset(raw.get("org_unit_ids") or ()),
                          raw.get("min_severity"))

    def matches(self, event: Event) -> bool:
        if event.type == "sink.test":
            return False  # a test event goes to the one sink it was sent to
        if self.event_types and event.type not in self.event_types:
            return False
        if self.org_unit_ids and event.org_unit_id not in self.org_unit_ids:
            return False
        if self.min_severity and event.severity is not None:
            return SEVERITY_ORDER.index(event.severity) >= SEVERITY_ORDER.index(self.min_severity)
        return True


def _active_sinks(conn: Connection) -> list[tuple[int, SinkFilter]]:
    rows = conn.execute(sa.select(sinks.c.id, sinks.c.filters).where(sinks.c.enabled.is_(True))).all()
    return [(int(row.id), SinkFilter.from_json(json.loads(row.filters))) for row in rows]


def emit_events(conn: Connection, batch: Sequence[Event], *, now: Optional[float] = None,
                only_sink: Optional[int] = None) -> list[str]:
    """Write ``batch`` into the outbox with its deliveries, in the caller's transaction; their uids.

    ``only_sink`` sends to that sink alone, whatever its filters (the test event)."""
    if not batch:
        return []
    current = time.time() if now is None else now
    for event in batch:
        if event.type not in EVENT_TYPES:
            raise EventError(f"unknown event type {event.type!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    rows = []
    for event in batch:
        uid = str(uuid.uuid4())
        at = current if event.at is None else event.at
        rows.append({"uid": uid, "type": event.type, "device_id": event.device_id, "org_unit_id": event.org_unit_id,
                     "severity": event.severity, "created_at": current,
                     "body": json.dumps(ocsf_body(event, uid, at), sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False, default=str)})
    ids = [int(row[0]) for row in conn.execute(
        events.insert().returning(events.c.id, sort_by_parameter_order=True), rows)]
    targets = ([(only_sink, SinkFilter(frozenset(), frozenset(), None))] if only_sink is not None
               else _active_sinks(conn))
    fan_out = [{"event_id": event_id, "sink_id": sink_id, "device_key": event.device_id or "", "state": "pending",
                "attempts": 0, "next_attempt_at": min(current, time.time())}
               for event_id, event in zip(ids, batch)
               for sink_id, flt in targets if only_sink is not None or flt.matches(event)]
    if fan_out:
        conn.execute(deliveries.insert(), fan_out)
    return [str(row["uid"]) for row in rows]


def emit_event(conn: Connection, type: str, *, device_id: Optional[str] = None,  # noqa: A002 (the event's type)
               org_unit_id: Optional[int] = None, severity: Optional[str] = None,
               data: Optional[Mapping[str, Any]] = None, at: Optional[float] = None,
               now: Optional[float] = None) -> str:
    """Write one event into the outbox in the caller's transaction (the one that made the change); its uid.

    Other parts of the collector call this for their event types (``seq.reset``, ``reports.dropped``,
    ``clock.skew``, ``device.replaced``, ``enrolment.conflict`` ...): see EVENT_TYPES."""
    return emit_events(conn, [Event(type, device_id, org_unit_id, severity, dict(data or {}), at)], now=now)[0]


def event_types() -> Iterable[str]:
    return EVENT_TYPES.keys()
