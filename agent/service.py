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

import logging
import platform as _platform
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent import __version__, protocol
from agent.config import Settings
from agent.policy import Policy, PolicyError, Result, baseline, evaluate, policy_from_json, summarize
from agent.probes import Host, LiveHost
from agent.sampler import VpnSampler
from agent.spool import REJECTED, Spool, SpoolError
from agent.state import Identity, StateDir, StateError
from agent.transport import Backoff, CollectorRefused, RetryableError, Transport, TransportError

log = logging.getLogger(__name__)

UPLOAD_LOCK_WAIT = 60.0


class ServiceError(RuntimeError):
    """The service cannot do what was asked; the message says why and what to do."""


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
    from agent.checks import collect

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
    answer = transport.enroll(token, protocol.public_key_b64(key), device_description(host),
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
        org_unit=answer.get("org_unit") if isinstance(answer.get("org_unit"), str) else None)
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


def _raw_failing(result: Result) -> bool:
    """The rule's facts fail, whether or not the failure is still inside its grace period."""
    return result.status == "fail" or (result.status == "warn" and result.message.get("key") == "within_grace")


def _float_map(value: Any) -> Dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


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
        self.spool = self._open_spool()
        self.policy, self.policy_from_bundle = self._load_policy()
        self.on_policy_change: List[Callable[[Policy], None]] = []

    # -- pieces of state ------------------------------------------------------------------------------
    def _open_spool(self) -> Spool:
        previous = self.state.status()
        seed = int(previous.get("dropped_total") or 0) + int(previous.get("outbox_depth") or 0)
        spool = Spool(self.state.outbox_path, self.settings.outbox_max_reports, self.settings.outbox_max_bytes,
                      dropped_seed=seed)
        if spool.reset_reason:
            self._error(f"outbox was unusable ({spool.reset_reason}); moved aside to {spool.moved_to}, "
                        "started a fresh one", event="outbox_reset", log_it=False)
            self.state.update_status(outbox_reset={"at": now_rfc3339(), "reason": spool.reset_reason,
                                                   "moved_to": str(spool.moved_to)},
                                     dropped_total=spool.dropped_total(), outbox_depth=0)
        return spool

    def _spool_call(self, method: str, *args: Any) -> Any:
        """Call a Spool method; a database that went bad under us is moved aside and the call retried once."""
        with self._spool_lock:
            try:
                return getattr(self.spool, method)(*args)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                log.error("outbox failed (%s): reopening it", exc)
                try:
                    self.spool.close()
                except sqlite3.Error:
                    log.debug("closing the broken outbox failed too", exc_info=True)
                self.spool = self._open_spool()
                return getattr(self.spool, method)(*args)

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
        self.state.update_status(last_error={"at": now_rfc3339(), "message": message})

    def intervals(self) -> Dict[str, float]:
        values: Dict[str, float] = {name: float(v) for name, v in self.policy.intervals.items()}
        values.update(self.settings.intervals_override())
        return values

    # -- producing reports -----------------------------------------------------------------------------
    def produce_report(self, trigger: str = "schedule") -> Produced:
        from agent.cycle import run_cycle

        started = time.monotonic()
        policy = self.policy
        # when each rule started failing, so grace periods give the same verdicts here as at the collector
        failing_since = _float_map(self.state.status().get("failing_since"))
        cycle = run_cycle(self.host, policy, failing_since=failing_since)
        facts = cycle.facts_json()
        evaluated = cycle.results
        share = self.sampler.take_share()
        vpn = facts.get("vpn")
        if share is not None and isinstance(vpn, dict):
            vpn_facts = dict(vpn.get("facts") or {})
            vpn_facts["vpn_up_share"] = share
            facts["vpn"] = dict(vpn, facts=vpn_facts)
            # the share is a fact a rule may test: evaluate again with it
            evaluated = evaluate(policy, facts, self.host.platform, self.host.now(), failing_since)
        results = [r.to_report_json() for r in evaluated]
        status = summarize(evaluated)
        checked_at = self.host.now()
        self.state.update_status(failing_since={
            r.rule_id: failing_since.get(r.rule_id, checked_at) for r in evaluated if _raw_failing(r)})
        counts: Dict[str, int] = {}
        for result in results:
            counts[result["status"]] = counts.get(result["status"], 0) + 1

        with self._thread_lock, self.state.produce_lock:
            dropped = self._spool_call("dropped_total")
            seq = self.state.next_seq()  # durable before anything is signed with it
            payload = protocol.build_report(
                device_id=self.identity.device_id, seq=seq, agent_version=__version__,
                platform=self.host.platform, policy=policy.ref(), facts=facts, results=results,
                extra={"dropped_reports": dropped})
            envelope = protocol.seal(self.key, self.identity.device_id, payload)
            text = protocol.canonical_json(envelope.to_json())
            try:
                put = self._spool_call("put", seq, payload["report_id"], text)
            except SpoolError as exc:
                self._error(str(exc))
                raise ServiceError(str(exc)) from exc
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

    # -- uploading -------------------------------------------------------------------------------------
    def upload_pending(self, lock_wait: float = UPLOAD_LOCK_WAIT) -> UploadOutcome:
        """Send everything queued, oldest first. Stops at the first failure (the caller backs off)."""
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
                answers = {q.seq: v.status for q, v in zip(batch, verdicts)}
                reasons = {q.seq: v.reason for q, v in zip(batch, verdicts) if v.reason}
                ack = self._spool_call("ack", answers, reasons)
                for seq, verdict in answers.items():
                    if verdict == REJECTED:
                        log.error("collector rejected report seq %d: %s (moved to the dead-letter table)", seq,
                                  reasons.get(seq, ""), extra={"event": "report_rejected", "seq": seq})
                delivered += ack.delivered
                rejected += ack.rejected
                self.state.update_status(last_upload_at=now_rfc3339(),
                                         last_upload={"at": now_rfc3339(), "delivered": ack.delivered,
                                                      "rejected": ack.rejected,
                                                      "last_seq": batch[-1].seq})
                if ack.delivered + ack.rejected == 0:
                    break  # nothing moved: do not spin on the same batch
        finally:
            lock.release()
        self.backoff.reset()
        depth = self._spool_call("depth")
        self.state.update_status(outbox_depth=depth)
        return UploadOutcome(delivered, rejected, depth)

    # -- policy ---------------------------------------------------------------------------------------------
    def refresh_policy(self) -> PolicyOutcome:
        etag = self.state.status().get("policy_etag") if self.policy_from_bundle else None
        try:
            answer = self.transport.fetch_policy(self.key, self.identity.device_id, etag)
        except TransportError as exc:
            self._error(f"policy refresh failed: {exc}", event="policy_fetch_failed")
            return PolicyOutcome(False, str(exc), error=True)
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
            self.spool.close()
        self.transport.close()
        self.state.close()
