"""The agent service's work, shared by `teleposture-agent run` (scheduled) and `report --now` (once).

* enrol: create the device key, call the collector, pin its key, keep the first signed policy;
* produce a report: check cycle -> report payload -> seq allocated durably -> signed -> outbox;
* upload: oldest first, in batches, removing only what the collector answered accepted/duplicate;
* refresh the policy: signed bundle, verified with the pinned key, never a lower version.

Two processes may share a state directory (the service and a `report --now` typed by a user): the seq
allocation, signing and spooling happen under one file lock so the outbox only grows in seq order, and
uploads under another so batches never overtake each other at the collector (which would turn an
earlier seq into a "duplicate").
"""

from __future__ import annotations

import json
import logging
import platform as _platform
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from agent import __version__, protocol
from agent.policy import Policy, PolicyError, baseline, evaluate, policy_from_json, summarize
from agent.probes import Host, LiveHost
from agent.service.config import Settings
from agent.service.outbox import DUPLICATE, REJECTED, Queued, Spool, SpoolError
from agent.service.sampler import VpnSampler
from agent.service.state import Identity, StateDir, StateError, failing_since_of, keep_last_report
from agent.service.storage import (
    StorageUnavailable,
    free_bytes,
    is_corruption,
    is_storage_error,
    needs_reopen,
    prepare_condition_file,
    storage_unavailable,
    write_condition,
)
from agent.service.transport import (
    Backoff,
    CollectorRefused,
    RetryableError,
    Transport,
    TransportError,
    Verdict,
)

log = logging.getLogger(__name__)

UPLOAD_LOCK_WAIT = 60.0
FUTURE_REFUSAL = "in the future"
STORAGE_ROOM = 256 * 1024  # free bytes that end a "disk full" condition (a few reports and their WAL pages)  # the collector's reason for a created_at more than 10 min ahead


class ServiceError(RuntimeError):
    """The service cannot do what was asked; the message says why and what to do."""


class IdentityMismatch(ServiceError):
    """The state directory belongs to another machine: this one must be enrolled on its own."""


@dataclass(frozen=True)
class Produced:
    seq: int
    report_id: str
    status: str
    counts: Dict[str, int]
    evicted: int
    duration: float


@dataclass(frozen=True)
class UploadOutcome:
    delivered: int
    rejected: int
    remaining: int
    error: Optional[str] = None
    retry_after: Optional[float] = None
    retryable: bool = True
    storage: bool = False  # failed on a full or read-only disk (logged once by the service)


@dataclass(frozen=True)
class PolicyOutcome:
    changed: bool
    message: str
    error: bool = False


def now_rfc3339() -> str:
    return protocol.rfc3339()


# -- enrolment ----------------------------------------------------------------------------------------

def device_description(host: Host) -> Dict[str, Any]:
    """What the enrolment request says about this machine (from the os_identity check where it works)."""
    from agent.checks.collectors import collect

    facts: Dict[str, Any] = {}
    outcome = collect(host, [])["os_identity"]
    if outcome.state == "ok":
        facts = outcome.facts
    return {
        "hostname": facts.get("hostname") or socket.gethostname(),
        "machine_id": facts.get("machine_id") or "",
        "serial": facts.get("serial") or "",
        "platform": host.platform,
        "os_name": facts.get("os_name") or _platform.system(),
        "os_version": facts.get("os_version") or _platform.release(),
    }


def enroll(settings: Settings, server: str, token: str, ca_file: Optional[str], allow_http: bool,
           force: bool = False, host: Optional[Host] = None, transport: Optional[Transport] = None) -> Identity:
    state = StateDir(settings.state_dir)
    if state.is_enrolled() and not force:
        existing = state.load_identity()
        raise ServiceError(f"already enrolled as device {existing.device_id} with {existing.server_url}; "
                           "pass --force to enrol again (a new device identity)")
    state.ensure()
    transport = transport or Transport(server, ca_file=ca_file, allow_http=allow_http,
                                       timeout=settings.http_timeout)
    host = host or LiveHost(cache_dir=state.cache_dir)
    key = protocol.generate_private_key()
    description = device_description(host)
    answer = transport.enroll(token, protocol.public_key_b64(key), description,
                              previous=reenrol_proof(state, protocol.public_key_b64(key)))
    try:
        server_key = protocol.load_public_key(answer["server_key"])
    except protocol.ProtocolError as exc:
        raise TransportError(f"enrolment answer: server_key is unusable ({exc})") from exc
    bundle = answer.get("policy")
    policy_problem = None
    if bundle is not None:
        try:
            doc, _ = protocol.open_policy_bundle(bundle, server_key)
            policy_from_json(doc)
        except (protocol.ProtocolError, PolicyError) as exc:
            policy_problem = f"the policy sent at enrolment is unusable: {_policy_error_text(exc)}"
    identity = Identity(
        device_id=answer["device_id"], server_url=transport.base_url, server_key=answer["server_key"],
        server_key_id=protocol.key_id(answer["server_key"]), enrolled_at=now_rfc3339(),
        ca_file=ca_file, allow_http=allow_http,
        org_unit=answer.get("org_unit") if isinstance(answer.get("org_unit"), str) else None,
        machine_id=(description["machine_id"] if isinstance(host, LiveHost) else
                    device_description(LiveHost())["machine_id"]) or None)
    # key first, identity last: an identity file always has its key beside it
    state.save_private_key(key)
    if bundle is not None and policy_problem is None:
        state.save_policy_bundle(bundle)
    elif state.policy_path.exists():
        state.policy_path.unlink()
    state.save_identity(identity)
    state.update_status(enrolled_at=identity.enrolled_at, policy_etag=None)
    if policy_problem:
        state.update_status(last_error={"at": now_rfc3339(), "message": policy_problem})
        log.error(policy_problem)
    if answer.get("state") == ENROLMENT_PENDING:
        state.update_status(last_error={"at": now_rfc3339(), "message": PENDING_MESSAGE})
    state.close()
    return identity


ENROLMENT_PENDING = "pending"
PENDING_MESSAGE = ("enrolment pending: the collector already knows this machine under another device key, "
                   "so an administrator must approve this enrolment before reports are accepted")


def reenrol_proof(state: StateDir, new_public_key: str) -> Optional[Dict[str, str]]:
    """The previous identity's signature handing this machine to the new key (enrol --force on an enrolled
    machine): the collector then replaces the old device at once. None when there is no usable old identity."""
    if not state.is_enrolled():
        return None
    try:
        previous = state.load_identity()
        return protocol.reenrol_proof(state.load_private_key(), previous.device_id, new_public_key)
    except (StateError, protocol.ProtocolError, OSError, ValueError) as exc:
        log.warning("re-enrolling without the previous key's signature (an admin must approve): %s", exc)
        return None


def _policy_error_text(exc: Exception) -> str:
    if isinstance(exc, PolicyError):
        return "; ".join(exc.problems[:5])
    return str(exc)


def _add_fact(facts: Dict[str, Any], check: str, name: str, value: Any) -> bool:
    """Add a fact the service measured to a check's facts (when the check produced facts)."""
    outcome = facts.get(check)
    if value is None or not isinstance(outcome, dict):
        return False
    facts[check] = dict(outcome, facts=dict(outcome.get("facts") or {}, **{name: value}))
    return True


# -- the running agent ----------------------------------------------------------------------------------

class AgentService:
    def __init__(self, settings: Settings, host: Optional[Host] = None,
                 transport: Optional[Transport] = None) -> None:
        self.settings = settings
        self.state = StateDir(settings.state_dir)
        self.identity = self.state.load_identity()
        self.key = self.state.load_private_key()
        try:
            self.server_key = protocol.load_public_key(self.identity.server_key)
        except protocol.ProtocolError as exc:
            raise StateError(f"pinned server key in {self.state.identity_path} is unusable: {exc}") from exc
        self.host: Host = host or LiveHost(cache_dir=self.state.cache_dir)
        # a configured server URL wins over the enrolled one (the collector moved, or a dev port changed)
        self.server_url = settings.server or self.identity.server_url
        self.transport = transport or Transport(
            self.server_url, ca_file=settings.ca_file or self.identity.ca_file,
            allow_http=settings.allow_http or self.identity.allow_http, timeout=settings.http_timeout)
        self.sampler = VpnSampler()
        self.backoff = Backoff(base=settings.backoff_base, cap=max(settings.backoff_cap, settings.backoff_base))
        self._thread_lock = threading.Lock()
        self._spool_lock = threading.Lock()
        self.storage_condition: Optional[Dict[str, Any]] = None
        self.machine_id: Optional[str] = None  # this machine's id, read at the first cycle
        self.renumbered: Dict[str, int] = {}  # report_id -> its new seq, for `report --now` to say
        self._restamped: Set[str] = set()  # report_ids stamped again once after a "future" refusal
        self.clock_offset: Optional[float] = None
        try:
            saved_offset = self.state.status().get("clock_offset")
        except StorageUnavailable as exc:
            saved_offset = None
            self.storage_failed(exc)
        if isinstance(saved_offset, (int, float)):
            self.clock_offset = float(saved_offset)
        prepare_condition_file(self.state.root)
        self.spool: Optional[Spool] = None
        try:
            self.spool = self._open_spool()
        except StorageUnavailable as exc:
            self.storage_failed(exc)  # the service waits for space instead of exiting into a restart loop
        self.policy, self.policy_from_bundle = self._load_policy()
        self.on_policy_change: List[Callable[[Policy], None]] = []

    # -- pieces of state ------------------------------------------------------------------------------
    def _open_spool(self) -> Spool:
        previous = self.state.status()
        spool = Spool(self.state.outbox_path, self.settings.outbox_max_reports, self.settings.outbox_max_bytes,
                      dropped_seed=int(previous.get("dropped_total") or 0),
                      expected_depth=int(previous.get("outbox_depth") or 0), max_seq_hint=self.state.last_seq())
        if spool.reset_reason:
            self._error(f"outbox was unusable ({spool.reset_reason}); moved aside to {spool.moved_to}, "
                        f"started a fresh one, salvaged {spool.salvaged} report(s), {spool.unreadable} "
                        "could not be read (counted as dropped)", event="outbox_reset", log_it=False)
            self.state.update_status(outbox_reset={"at": now_rfc3339(), "reason": spool.reset_reason,
                                                   "moved_to": str(spool.moved_to), "salvaged": spool.salvaged,
                                                   "unreadable": spool.unreadable},
                                     dropped_total=spool.dropped_total(), outbox_depth=spool.depth())
        return spool

    def _spool_call(self, method: str, *args: Any) -> Any:
        """Call a Spool method. A damaged database is moved aside and the call retried once; a full or
        read-only disk raises StorageUnavailable and leaves every file as it is."""
        with self._spool_lock:
            try:
                if self.spool is None:  # the disk was full or read-only when the service started
                    self.spool = self._open_spool()
                return getattr(self.spool, method)(*args)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    if is_storage_error(exc):
                        if needs_reopen(exc):
                            self._drop_spool()  # reopened next time: it may have been opened read-only
                        raise storage_unavailable(exc, self.state.outbox_path) from exc
                    raise
                log.error("outbox failed (%s): reopening it", exc)
                try:
                    if self.spool is not None:
                        self.spool.close()
                except sqlite3.Error:
                    log.debug("closing the broken outbox failed too", exc_info=True)
                self.spool = None
                self.spool = self._open_spool()
                return getattr(self.spool, method)(*args)

    def _drop_spool(self) -> None:
        if self.spool is not None:
            try:
                self.spool.close()
            except sqlite3.Error:
                log.debug("closing the outbox failed", exc_info=True)
            self.spool = None

    def storage_failed(self, exc: StorageUnavailable) -> None:
        """Remember a full or read-only disk; logged once per change of condition, not once per cycle."""
        condition = {"kind": exc.kind, "path": exc.path, "free_bytes": exc.free_bytes, "since": now_rfc3339(),
                     "message": str(exc)}
        previous = self.storage_condition
        if previous is not None and previous["kind"] == exc.kind:
            return  # state.db or outbox.db: one disk, one condition
        self.storage_condition = condition
        log.error("%s: reports are not produced until space comes back; every file is kept as it is (%s)",
                  exc, exc.cause, extra={"event": "storage_unavailable", "kind": exc.kind, "path": exc.path,
                                         "free_bytes": exc.free_bytes})
        write_condition(self.state.root, condition)

    def storage_ok(self) -> None:
        """A write went through. On a full disk one may (SQLite reuses its WAL's allocated pages): the
        condition ends when the file system itself has room again or is writable, not at each such write."""
        if self.storage_condition is None:
            return
        if self.storage_condition["kind"] == "disk_full":
            free = free_bytes(self.state.root)
            if free is not None and free < STORAGE_ROOM:
                return
        log.warning("storage writable again (was %s): resuming", self.storage_condition["message"],
                    extra={"event": "storage_recovered"})
        self.storage_condition = None
        write_condition(self.state.root, {})

    def _load_policy(self) -> Tuple[Policy, bool]:
        try:
            bundle = self.state.load_policy_bundle()
        except StateError as exc:
            self._error(f"stored policy unreadable ({exc}); using the bundled baseline until a refresh")
            return baseline(), False
        if bundle is None:
            return baseline(), False
        try:
            doc, _ = protocol.open_policy_bundle(bundle, self.server_key)
            return policy_from_json(doc), True
        except (protocol.ProtocolError, PolicyError) as exc:
            self._error(f"stored policy {self.state.policy_path} refused ({_policy_error_text(exc)}); using the "
                        "bundled baseline until a refresh")
            return baseline(), False

    def _error(self, message: str, event: str = "error", log_it: bool = True) -> None:
        if log_it:
            log.error(message, extra={"event": event})
        try:
            self.state.update_status(last_error={"at": now_rfc3339(), "message": message})
        except StorageUnavailable as exc:
            self.storage_failed(exc)

    def intervals(self) -> Dict[str, float]:
        values: Dict[str, float] = {name: float(v) for name, v in self.policy.intervals.items()}
        values.update(self.settings.intervals_override())
        return values

    # -- producing reports -----------------------------------------------------------------------------
    def produce_report(self, trigger: str = "schedule") -> Produced:
        """Check, sign and queue one report. Raises StorageUnavailable (nothing produced, every file kept)
        when the disk is full or read-only, ServiceError when the report cannot be made."""
        try:
            produced = self._produce(trigger)
        except StorageUnavailable as exc:
            self.storage_failed(exc)
            raise
        self.storage_ok()
        return produced

    def _produce(self, trigger: str) -> Produced:
        from agent.checks.cycle import run_cycle

        self._refuse_if_cloned()
        started = time.monotonic()
        policy = self.policy
        # when each rule started failing, so grace periods give the same verdicts here as at the collector
        failing_since = failing_since_of(self.state.status())
        cycle = run_cycle(self.host, policy, failing_since=failing_since)
        facts = cycle.facts_json()
        evaluated = cycle.results
        # facts only the service knows, which a rule may test: evaluate again with them
        added = _add_fact(facts, "vpn", "vpn_up_share", self.sampler.take_share())
        added = _add_fact(facts, "os_identity", "clock_skew_seconds", self.clock_skew()) or added
        if added:
            evaluated = evaluate(policy, facts, self.host.platform, self.host.now(), failing_since)
        results = [r.to_report_json() for r in evaluated]
        status = summarize(evaluated)
        checked_at = self.host.now()
        self.state.update_status(failing_since={
            r.rule_id: failing_since.get(r.rule_id, checked_at) for r in evaluated if r.failing})
        counts: Dict[str, int] = {}
        for result in results:
            counts[result["status"]] = counts.get(result["status"], 0) + 1

        with self._thread_lock, self.state.produce_lock:
            dropped = self._spool_call("dropped_total")
            # durable before anything is signed with it, and above every seq the outbox ever held
            seq = self.state.next_seq(floor=self._spool_call("max_seq"))
            extra: Dict[str, Any] = {"dropped_reports": dropped}
            if self.machine_id:
                extra["machine_id"] = self.machine_id  # the collector flags a key used on two machines
            resets = self.state.status().get("pending_seq_resets")
            if resets:
                extra["seq_reset"] = resets
            payload = protocol.build_report(
                device_id=self.identity.device_id, seq=seq, agent_version=__version__,
                platform=self.host.platform, policy=policy.ref(), facts=facts, results=results,
                created_at=self.corrected_time(), extra=extra)
            envelope = protocol.seal(self.key, self.identity.device_id, payload)
            self._keep_last_report(payload)
            text = protocol.canonical_json(envelope.to_json())
            try:
                put = self._spool_call("put", seq, payload["report_id"], text)
            except SpoolError as exc:
                self._error(str(exc))
                raise ServiceError(str(exc)) from exc
            if resets:
                # the notice is in a queued report now: delivered with it, or counted lost with it
                self.state.update_status(pending_seq_resets=[])
        duration = time.monotonic() - started
        depth = self._spool_call("depth")
        self.state.update_status(
            last_cycle={"at": now_rfc3339(), "seq": seq, "status": status, "counts": counts,
                        "trigger": trigger, "duration": round(duration, 3),
                        "policy": policy.ref(),
                        "failing": [r["rule_id"] for r in results if r["status"] in ("fail", "error")]},
            outbox_depth=depth, dropped_total=self._spool_call("dropped_total"))
        return Produced(seq=seq, report_id=payload["report_id"], status=status, counts=counts,
                        evicted=put.evicted, duration=duration)

    def _refuse_if_cloned(self) -> None:
        """This state directory was enrolled on another machine (copied, or restored onto new hardware).

        The machine is the one the agent runs on (read from it once), not the checked facts: those may be
        replayed from a recording."""
        if self.machine_id is None:
            self.machine_id = device_description(LiveHost())["machine_id"] or ""
        machine_id = self.machine_id
        if not self.identity.machine_id or not machine_id or machine_id == self.identity.machine_id:
            return
        message = (f"this state directory ({self.state.root}) was enrolled on machine {self.identity.machine_id}, "
                   f"but this machine is {machine_id}: it was copied or restored onto another machine. Not "
                   "reporting with another machine's identity; enrol this machine with `teleposture-agent enroll "
                   "--server URL --token TOKEN --force`")
        self._error(message, event="cloned_identity")
        raise IdentityMismatch(message)

    # -- uploading -------------------------------------------------------------------------------------
    def upload_pending(self, lock_wait: float = UPLOAD_LOCK_WAIT) -> UploadOutcome:
        """Send everything queued, oldest first. Stops at the first failure (the caller backs off)."""
        try:
            outcome = self._upload(lock_wait)
        except StorageUnavailable as exc:
            self.storage_failed(exc)
            return UploadOutcome(0, 0, self._depth_or_zero(), error=str(exc), storage=True)
        return outcome

    def _depth_or_zero(self) -> int:
        try:
            return int(self._spool_call("depth"))
        except (StorageUnavailable, sqlite3.Error):
            return 0

    def _upload(self, lock_wait: float) -> UploadOutcome:
        lock = self.state.upload_lock()
        if not lock.acquire(timeout=lock_wait):
            depth = self._spool_call("depth")
            return UploadOutcome(0, 0, depth, error="another agent process is uploading this outbox")
        delivered = rejected = 0
        try:
            while True:
                batch = self._spool_call("batch", self.settings.upload_batch)
                if not batch:
                    break
                try:
                    verdicts = self.transport.upload([q.envelope for q in batch])
                except TransportError as exc:
                    self._note_clock()
                    message = str(exc)
                    seqs = [q.seq for q in batch]
                    self._spool_call("note_attempt", seqs, message)
                    self._error(f"upload failed: {message}", event="upload_failed")
                    depth = self._spool_call("depth")
                    self.state.update_status(outbox_depth=depth)
                    return UploadOutcome(
                        delivered, rejected, depth, error=message,
                        retry_after=exc.retry_after if isinstance(exc, RetryableError) else None,
                        retryable=not isinstance(exc, CollectorRefused))
                self._note_clock()
                answers = {q.seq: v.status for q, v in zip(batch, verdicts)}
                reasons = {q.seq: v.reason for q, v in zip(batch, verdicts) if v.reason}
                # `duplicate` for a report the collector never saw (another report_id is stored at its seq):
                # this agent's counter went backwards. Number it again instead of deleting it.
                unseen = [(q, v) for q, v in zip(batch, verdicts)
                          if v.status == DUPLICATE and not self._collector_saw(q, v)]
                # refused only because created_at was in the future: stamped again with the corrected clock
                restamp = [q for q, v in zip(batch, verdicts) if v.status == REJECTED and FUTURE_REFUSAL in v.reason
                           and q.report_id not in self._restamped and self.transport.clock_offset is not None]
                for q, _ in unseen:
                    answers.pop(q.seq)
                for q in restamp:
                    answers.pop(q.seq)
                ack = self._spool_call("ack", answers, reasons)
                ladders = [v.actions for v in verdicts if v.actions is not None]
                if ladders:
                    self._ladder(ladders[-1])
                for seq, verdict in answers.items():
                    if verdict == REJECTED:
                        log.error("collector rejected report seq %d: %s (moved to the dead-letter table)", seq,
                                  reasons.get(seq, ""), extra={"event": "report_rejected", "seq": seq})
                moved = len(restamp)
                for q in restamp:
                    self._restamp(q)
                if unseen:
                    moved += self._renumber(unseen[0][0].seq, max(int(v.last_seq or 0) for _, v in unseen),
                                            "the collector already holds other reports at these seqs")
                delivered += ack.delivered
                rejected += ack.rejected
                self.state.update_status(last_upload_at=now_rfc3339(),
                                         last_upload={"at": now_rfc3339(), "delivered": ack.delivered,
                                                      "rejected": ack.rejected,
                                                      "last_seq": batch[-1].seq})
                if ack.delivered + ack.rejected + moved == 0:
                    break  # nothing moved: do not spin on the same batch
        finally:
            lock.release()
        self.backoff.reset()
        depth = self._spool_call("depth")
        self.state.update_status(outbox_depth=depth)
        return UploadOutcome(delivered, rejected, depth)

    def _collector_saw(self, queued: Queued, verdict: Verdict) -> bool:
        """Whether a `duplicate` answer is about this very report (a resend after a lost answer).

        The collector names its last accepted seq L and that report's id. Uploads go in seq order, so when
        this outbox holds L with that id (or this report is L), everything before it here was delivered.
        Otherwise the reports here were numbered again by a counter that went backwards: unseen.
        Without the ids (an older collector) a duplicate is taken as delivered, as before."""
        if verdict.last_seq is None or verdict.last_report_id is None:
            return True
        if queued.seq == verdict.last_seq:
            return queued.report_id == verdict.last_report_id
        return bool(self._spool_call("report_id", verdict.last_seq) == verdict.last_report_id)

    def _reseal(self, envelope_text: str, seq: Optional[int] = None, created_at: Optional[float] = None) -> str:
        envelope = json.loads(envelope_text)
        payload = json.loads(envelope["payload"])
        if seq is not None:
            payload["seq"] = seq
        if created_at is not None:
            payload["created_at"] = protocol.rfc3339(created_at)
        return protocol.canonical_json(protocol.seal(self.key, self.identity.device_id, payload).to_json())

    def _renumber(self, first_seq: int, collector_last: int, reason: str) -> int:
        """Give the outbox's reports from ``first_seq`` on seqs after the collector's, and note the reset."""
        with self._thread_lock, self.state.produce_lock:
            # every queued report from first_seq on moves, those above collector_last too: no seq collides
            moved = self._spool_call("renumber", first_seq, collector_last + 1, lambda text, seq: self._reseal(text, seq=seq))
            if not moved:
                return 0
            self.state.raise_seq(moved[-1][1])
            self._note_seq_reset(moved[0][0], moved[0][1], len(moved), reason)
            self.renumbered.update({report_id: new for _, new, report_id in moved})
        log.warning("collector's last seq is %d: %d queued report(s) numbered again from seq %d (were %d..%d), "
                    "none deleted", collector_last, len(moved), moved[0][1], moved[0][0], moved[-1][0],
                    extra={"event": "seq_reset", "from": moved[0][0], "to": moved[0][1], "renumbered": len(moved)})
        return len(moved)

    def _note_seq_reset(self, old: int, new: int, renumbered: int, reason: str) -> None:
        pending = list(self.state.status().get("pending_seq_resets") or [])
        pending.append({"from": old, "to": new, "renumbered": renumbered, "reason": reason, "at": now_rfc3339()})
        self.state.update_status(pending_seq_resets=pending[-20:])

    def note_collector_seq(self, collector_last: int) -> None:
        """The collector's last accepted seq is ahead of this agent's counter (state.db lost, emptied or
        restored from a backup): move the counter past it before the next report is numbered."""
        with self._thread_lock, self.state.produce_lock:
            old = self.state.raise_seq(collector_last)
            if old is None:
                return
            self._note_seq_reset(old + 1, collector_last + 1, 0,
                                 f"the collector's last seq {collector_last} is ahead of this agent's counter {old}")
        log.warning("collector's last seq %d is ahead of this agent's counter %d (state lost or restored): the "
                    "next report is numbered %d", collector_last, old, collector_last + 1,
                    extra={"event": "seq_reset", "from": old + 1, "to": collector_last + 1})

    def _restamp(self, queued: Queued) -> None:
        self._restamped.add(queued.report_id)
        created = self.corrected_time()
        self._spool_call("replace_envelope", queued.seq, self._reseal(queued.envelope, created_at=created))
        log.warning("report seq %d was refused as dated in the future (this clock is %.0f s off the collector's): "
                    "stamped again with the collector's time and re-signed", queued.seq, self.clock_skew() or 0.0,
                    extra={"event": "report_restamped", "seq": queued.seq})

    # -- clock ------------------------------------------------------------------------------------------
    def _note_clock(self) -> None:
        offset = self.transport.clock_offset
        if offset is None or offset == self.clock_offset:
            return
        self.clock_offset = offset
        try:
            self.state.update_status(clock_offset=round(offset, 3))
        except StorageUnavailable as exc:
            self.storage_failed(exc)

    def corrected_time(self) -> float:
        """Now, by the collector's clock as last measured (this machine's clock until then)."""
        return time.time() + (self.clock_offset or 0.0)

    def clock_skew(self) -> Optional[float]:
        """This machine's clock minus the collector's (seconds), None until measured."""
        return None if self.clock_offset is None else round(-self.clock_offset, 3)

    def _keep_last_report(self, payload: Dict[str, Any]) -> None:
        try:
            keep_last_report(self.state.root, payload)
        except OSError as exc:  # the copy for `privacy` only: never a reason to lose the report
            log.warning("cannot keep the last report for `privacy`: %s", exc)

    def _ladder(self, items: List[Dict[str, Any]]) -> None:
        from agent.service import ladder_view

        try:
            ladder_view.record(self.state, self.host, self.settings, self.policy, items)
        except (OSError, sqlite3.Error) as exc:
            self._error(f"noncompliance notice not recorded: {exc}", log_it=True)

    # -- policy ---------------------------------------------------------------------------------------------
    def refresh_policy(self) -> PolicyOutcome:
        try:
            return self._refresh_policy()
        except StorageUnavailable as exc:
            self.storage_failed(exc)
            return PolicyOutcome(False, str(exc), error=True)

    def _refresh_policy(self) -> PolicyOutcome:
        etag = self.state.status().get("policy_etag") if self.policy_from_bundle else None
        for attempt in (1, 2):
            before = self.clock_offset
            try:
                answer = self.transport.fetch_policy(self.key, self.identity.device_id, etag, self.corrected_time())
                break
            except TransportError as exc:
                self._note_clock()
                skew_learned = self.clock_offset is not None and abs(self.clock_offset - (before or 0.0)) > 300
                if attempt == 1 and isinstance(exc, CollectorRefused) and exc.status == 401 and skew_learned:
                    continue  # the signed timestamp was off by the skew this answer just revealed: sign again
                self._error(f"policy refresh failed: {exc}", event="policy_fetch_failed")
                return PolicyOutcome(False, str(exc), error=True)
        self._note_clock()
        if answer.last_seq is not None:
            try:
                self.note_collector_seq(answer.last_seq)
            except StorageUnavailable as exc:
                self.storage_failed(exc)
        if answer.not_modified or answer.bundle is None:
            return PolicyOutcome(False, "policy not modified")
        return self.apply_bundle(answer.bundle, answer.etag)

    def apply_bundle(self, bundle: Dict[str, Any], etag: Optional[str] = None) -> PolicyOutcome:
        """Verify and install a signed bundle; anything wrong leaves the running policy untouched."""
        try:
            label = bundle.get("key_id")
            if isinstance(label, str) and label and label != self.identity.server_key_id:
                raise protocol.ProtocolError(f"bundle is signed with key {label}, but the pinned server key is "
                                             f"{self.identity.server_key_id}")
            doc, _ = protocol.open_policy_bundle(bundle, self.server_key)
            candidate = policy_from_json(doc)
            counter = protocol.open_assignment(bundle, self.server_key, self.identity.device_id)
        except (protocol.ProtocolError, PolicyError) as exc:
            return self._refuse(f"policy bundle refused: {_policy_error_text(exc)}")
        current = self.policy
        if self.policy_from_bundle and candidate.id == current.id:
            if candidate.version < current.version:
                return self._refuse(f"policy {candidate.id} version {candidate.version} refused: this agent runs "
                                    f"version {current.version} and never goes back (rollback)")
            if candidate.version == current.version:
                if candidate.digest() != current.digest():
                    return self._refuse(f"policy {candidate.id} version {candidate.version} refused: same version "
                                        "as the running one but different content")
                self.state.update_status(policy_etag=etag)
                return PolicyOutcome(False, "policy unchanged")
        elif self.policy_from_bundle and candidate.id != current.id:
            log.warning("collector assigned policy %s v%d (was %s v%d)", candidate.id, candidate.version,
                        current.id, current.version)
        problem = self._assignment_problem(counter, bundle)
        if problem:
            return self._refuse(f"policy {candidate.id} version {candidate.version} refused: {problem}")
        self.state.save_policy_bundle(bundle)
        self.policy, self.policy_from_bundle = candidate, True
        self.state.update_status(policy_etag=etag, policy_applied_at=now_rfc3339())
        log.info("policy %s version %d applied", candidate.id, candidate.version,
                 extra={"event": "policy_applied", "policy_id": candidate.id, "version": candidate.version})
        for callback in self.on_policy_change:
            callback(candidate)
        return PolicyOutcome(True, f"policy {candidate.id} version {candidate.version} applied")

    def _assignment_problem(self, counter: Optional[int], bundle: Dict[str, Any]) -> Optional[str]:
        """Why a bundle with assignment ``counter`` must not replace the running one (None: it may).

        The running bundle's counter is the floor: lower is a replayed older assignment, whatever policy id
        it carries; equal with another policy cannot come from the collector (one counter, one policy)."""
        if not self.policy_from_bundle:
            return None
        try:
            stored = self.state.load_policy_bundle()
            running = protocol.open_assignment(stored, self.server_key, self.identity.device_id) if stored else None
        except (StateError, protocol.ProtocolError):
            return None  # the running bundle's own assignment is unreadable: nothing to compare with
        if running is None:
            return None
        if counter is None:
            return f"it carries no assignment counter, and this agent runs assignment {running}"
        if counter < running:
            return f"its assignment counter {counter} is lower than the running {running} (an older bundle replayed)"
        if counter == running and stored is not None and bundle.get("payload") != stored.get("payload"):
            return f"same assignment counter {counter} as the running bundle but another policy"
        return None

    def _refuse(self, message: str) -> PolicyOutcome:
        self._error(message + f"; still running {self.policy.id} version {self.policy.version}",
                    event="policy_refused")
        return PolicyOutcome(False, message, error=True)

    def close(self) -> None:
        with self._spool_lock:
            if self.spool is not None:
                self.spool.close()
        self.transport.close()
        self.state.close()
