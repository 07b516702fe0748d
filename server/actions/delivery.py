"""Delivery of the outbox to the sinks: at least once, in order per (sink, device), with retries.

A round per sink: claim (short write transaction) the pending deliveries that are due and have no earlier
undelivered event of the same device waiting or in flight, send them in event order (outside any
transaction), then record the outcome (another short transaction). A device whose event fails stops there
for this round, so its later events never overtake it. Claims carry a lease (``claimed_until``): a process
killed mid-delivery leaves claims that expire, and the events are sent again (receivers drop duplicates by
their id). On PostgreSQL the claim takes a per-sink transaction-scoped advisory lock and the rows
``FOR UPDATE SKIP LOCKED``, so several collector processes can run deliverers side by side.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Connection

from server.actions import secrets
from server.actions.sinks import Sender, Sink, SinkError, open_sender
from server.store.db import Database
from server.store.schema import deliveries, events, sinks

log = logging.getLogger(__name__)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
_LOCK_BASE = 0x7E1E_0013_0000
WEBHOOK_LANES = 4


@dataclass
class DeliveryPolicy:
    batch: int = 200
    lease: float = 60.0
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    dead_after: float = 3 * 86400.0  # an event still undelivered this long after it was written is dead


@dataclass
class RoundResult:
    delivered: int = 0
    failed: int = 0
    dead: int = 0


def load_sinks(conn: Connection, server_key: Ed25519PrivateKey, *, enabled_only: bool = True) -> list[Sink]:
    query = sa.select(sinks).order_by(sinks.c.id)
    if enabled_only:
        query = query.where(sinks.c.enabled.is_(True))
    out = []
    for row in conn.execute(query).mappings():
        secret = None
        if row["secret"]:
            try:
                secret = secrets.unseal(server_key, row["secret"])
            except secrets.SecretError as exc:
                log.error("sink %s: %s", row["name"], exc)
        out.append(Sink(int(row["id"]), str(row["name"]), str(row["kind"]), json.loads(row["config"]), secret,
                        json.loads(row["filters"])))
    return out


def _claim(conn: Connection, sink_id: int, now: float, policy: DeliveryPolicy) -> list[tuple[int, str, int]]:
    if conn.dialect.name == "postgresql":
        got = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_BASE + sink_id))).scalar()
        if not got:
            return []  # another process is claiming for this sink right now
    d = deliveries.alias("d")
    p = deliveries.alias("p")
    waiting_before = sa.exists().where(
        p.c.sink_id == d.c.sink_id, p.c.device_key == d.c.device_key, p.c.state == PENDING,
        p.c.event_id < d.c.event_id,
        sa.or_(p.c.next_attempt_at > now, sa.and_(p.c.claimed_until.is_not(None), p.c.claimed_until >= now)))
    query = (sa.select(d.c.event_id, d.c.device_key, d.c.attempts)
             .where(d.c.sink_id == sink_id, d.c.state == PENDING, d.c.next_attempt_at <= now,
                    sa.or_(d.c.claimed_until.is_(None), d.c.claimed_until < now), ~waiting_before)
             .order_by(d.c.event_id).limit(policy.batch))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=d)
    rows = [(int(r.event_id), str(r.device_key), int(r.attempts)) for r in conn.execute(query)]
    if rows:
        conn.execute(deliveries.update().where(deliveries.c.sink_id == sink_id,
                                               deliveries.c.event_id.in_([r[0] for r in rows]))
                     .values(claimed_until=now + policy.lease))
    return rows


def _ours(sink_id: int, lease: float) -> list[Any]:
    """Rows still claimed by this round: a lease that expired and was claimed again is the other round's."""
    return [deliveries.c.sink_id == sink_id, deliveries.c.claimed_until == lease]


def _send_lane(sink: Sink, claimed: list[tuple[int, str, int]], bodies: dict[int, tuple[str, str, float]],
               sender_factory: Callable[[Sink], Sender]) -> tuple[list[int], dict[int, tuple[int, str]]]:
    """Send ``claimed`` in order on one connection; (event ids delivered, event id -> (attempts, error))."""
    sent: list[int] = []
    failures: dict[int, tuple[int, str]] = {}
    stopped: set[str] = set()
    try:
        sender = sender_factory(sink)
    except SinkError as exc:
        # Could not even connect: every device's first event counts one failed attempt.
        for event_id, device_key, attempts in claimed:
            if device_key not in stopped:
                stopped.add(device_key)
                failures[event_id] = (attempts, str(exc))
        return sent, failures
    try:
        for event_id, device_key, attempts in claimed:
            if device_key in stopped:
                continue  # an earlier event of this device failed: keep the order
            uid, text, _created = bodies[event_id]
            try:
                sender.send(uid, text, json.loads(text))
                sent.append(event_id)
            except SinkError as exc:
                failures[event_id] = (attempts, str(exc))
                stopped.add(device_key)
        try:
            sender.flush()
        except SinkError as exc:
            attempts_of = {c[0]: c[2] for c in claimed}
            for event_id in sent:
                failures[event_id] = (attempts_of[event_id], str(exc))
            sent = []
    finally:
        sender.close()
    return sent, failures


def deliver_sink(db: Database, sink: Sink, *, policy: DeliveryPolicy, clock: Callable[[], float] = time.time,
                 sender_factory: Callable[[Sink], Sender] = open_sender) -> RoundResult:
    """One round for one sink."""
    now = clock()
    with db.write() as conn:
        claimed = _claim(conn, sink.id, now, policy)
    result = RoundResult()
    if not claimed:
        return result
    with db.read() as conn:
        bodies = {int(r.id): (str(r.uid), str(r.body), float(r.created_at)) for r in conn.execute(
            sa.select(events.c.id, events.c.uid, events.c.body, events.c.created_at)
            .where(events.c.id.in_([c[0] for c in claimed])))}
    # Webhooks: devices spread over a few connections at once (each device's events stay in order on one);
    # e-mail and syslog: one connection for the round.
    lanes = WEBHOOK_LANES if sink.kind == "webhook" else 1
    buckets: list[list[tuple[int, str, int]]] = [[] for _ in range(lanes)]
    lane_of: dict[str, int] = {}
    for item in claimed:
        lane = lane_of.setdefault(item[1], len(lane_of) % lanes)
        buckets[lane].append(item)
    sent: list[int] = []
    failures: dict[int, tuple[int, str]] = {}  # event id -> (attempts before, error)
    if lanes == 1:
        outcomes = [_send_lane(sink, buckets[0], bodies, sender_factory)]
    else:
        with ThreadPoolExecutor(max_workers=lanes) as pool:
            outcomes = list(pool.map(lambda bucket: _send_lane(sink, bucket, bodies, sender_factory),
                                     [b for b in buckets if b]))
    for lane_sent, lane_failures in outcomes:
        sent += lane_sent
        failures.update(lane_failures)
    done = clock()
    lease = now + policy.lease
    with db.write() as conn:
        if sent:
            conn.execute(deliveries.update().where(*_ours(sink.id, lease), deliveries.c.event_id.in_(sent))
                         .values(state=DELIVERED, delivered_at=done, claimed_until=None, last_error=None))
        for event_id, (attempts, message) in failures.items():
            created = bodies[event_id][2]
            dead = done - created >= policy.dead_after
            delay = min(policy.backoff_max, policy.backoff_base * 2 ** attempts) * random.uniform(0.8, 1.0)  # noqa: S311
            conn.execute(deliveries.update().where(*_ours(sink.id, lease), deliveries.c.event_id == event_id)
                         .values(state=DEAD if dead else PENDING, attempts=attempts + 1, claimed_until=None,
                                 next_attempt_at=done + delay, last_error=message[:1000]))
            result.dead += int(dead)
        untouched = [c[0] for c in claimed if c[0] not in failures and c[0] not in sent]
        if untouched:
            conn.execute(deliveries.update().where(*_ours(sink.id, lease), deliveries.c.event_id.in_(untouched))
                         .values(claimed_until=None))
    result.delivered = len(sent)
    result.failed = len(failures)
    if failures:
        log.warning("sink %s: %d deliveries failed (%s)", sink.name, len(failures),
                    next(iter(failures.values()))[1])
    return result


def dead_letters(conn: Connection, *, sink_id: Optional[int] = None, limit: int = 100) -> list[dict[str, Any]]:
    query = (sa.select(deliveries.c.event_id, deliveries.c.sink_id, sinks.c.name.label("sink"),
                       deliveries.c.device_key, deliveries.c.attempts, deliveries.c.last_error, events.c.uid,
                       events.c.type, events.c.created_at)
             .join(sinks, sinks.c.id == deliveries.c.sink_id).join(events, events.c.id == deliveries.c.event_id)
             .where(deliveries.c.state == DEAD))
    if sink_id is not None:
        query = query.where(deliveries.c.sink_id == sink_id)
    return [dict(r) for r in conn.execute(query.order_by(deliveries.c.event_id.desc()).limit(limit)).mappings()]


def retry_dead(conn: Connection, *, sink_id: int, event_id: Optional[int] = None, now: Optional[float] = None) -> int:
    """Put dead deliveries (one, or all of a sink) back in the queue; how many."""
    where = [deliveries.c.state == DEAD, deliveries.c.sink_id == sink_id]
    if event_id is not None:
        where.append(deliveries.c.event_id == event_id)
    return int(conn.execute(deliveries.update().where(*where).values(
        state=PENDING, attempts=0, next_attempt_at=time.time() if now is None else now, claimed_until=None)
    ).rowcount or 0)


def queue_counts(conn: Connection) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for sink_id, state, count in conn.execute(
            sa.select(deliveries.c.sink_id, deliveries.c.state, sa.func.count())
            .where(deliveries.c.state.in_([PENDING, DEAD])).group_by(deliveries.c.sink_id, deliveries.c.state)):
        out.setdefault(int(sink_id), {PENDING: 0, DEAD: 0})[str(state)] = int(count)
    return out


@dataclass
class OutboxPruned:
    """What one outbox retention run deleted."""

    events: int = 0
    deliveries: int = 0  # delivery rows deleted with their events
    dead_letters: int = 0  # dead deliveries past dead_letter_retention


def prune_outbox(db: Database, *, event_retention: float, dead_letter_retention: float, batch: int,
                 now: Optional[float] = None, should_stop: Optional[Callable[[], bool]] = None) -> OutboxPruned:
    """Retention of the events outbox, in batches of ``batch`` rows, each its own short transaction.

    Dead letters go first, ``dead_letter_retention`` after their last failed attempt. Then events older
    than ``event_retention`` go with their delivery rows, except an event that still has a pending
    delivery to an enabled sink (it is never deleted undelivered) or a dead letter still kept. A
    disabled sink's pending deliveries do not keep an event: the sink was switched off for longer than
    events are kept. On PostgreSQL too this is batched deletes, not monthly partitions: deliveries
    reference events by id alone, and a month still holding one event kept for a sink could not be
    dropped whole."""
    current = time.time() if now is None else now
    stop = should_stop or (lambda: False)
    out = OutboxPruned()
    with db.read() as conn:
        sink_ids = [int(s) for s in conn.execute(sa.select(sinks.c.id)).scalars()]
    dead_cutoff = current - dead_letter_retention
    for sink_id in sink_ids:
        while not stop():
            with db.write() as conn:
                # Along the (sink_id, state, event_id) index: dead letters are few, their times read apart.
                expired = [int(e) for e in conn.execute(
                    sa.select(deliveries.c.event_id)
                    .where(deliveries.c.sink_id == sink_id, deliveries.c.state == DEAD,
                           deliveries.c.next_attempt_at < dead_cutoff)
                    .order_by(deliveries.c.event_id).limit(batch)).scalars()]
                if expired:
                    conn.execute(deliveries.delete().where(deliveries.c.sink_id == sink_id,
                                                           deliveries.c.state == DEAD,
                                                           deliveries.c.event_id.in_(expired)))
            out.dead_letters += len(expired)
            if len(expired) < batch:
                break
    kept = (sa.select(deliveries.c.event_id).join(sinks, sinks.c.id == deliveries.c.sink_id)
            .where(deliveries.c.event_id == events.c.id,
                   sa.or_(deliveries.c.state == DEAD, sa.and_(deliveries.c.state == PENDING,
                                                               sinks.c.enabled.is_(True)))))
    event_cutoff = current - event_retention
    while not stop():
        with db.write() as conn:
            # Oldest first along the created_at index; the kept ones are skipped (pending ones are at
            # most event_dead_after old while the deliverer runs, so there are few).
            ids = [int(e) for e in conn.execute(
                sa.select(events.c.id).where(events.c.created_at < event_cutoff, ~kept.exists())
                .order_by(events.c.created_at).limit(batch)).scalars()]
            if ids:
                out.deliveries += int(conn.execute(deliveries.delete().where(
                    deliveries.c.event_id.in_(ids))).rowcount or 0)
                out.events += int(conn.execute(events.delete().where(events.c.id.in_(ids))).rowcount or 0)
        if len(ids) < batch:
            break
    if out.events or out.dead_letters:
        log.info("outbox retention: %d events (%d delivery rows), %d dead letters deleted", out.events,
                 out.deliveries, out.dead_letters)
    return out
