"""`teleposture-agent run`: the scheduled service (APScheduler).

Jobs, each with max_instances=1 and coalesce (a late job runs once, never twice at a time):

* ``cycle``      check cycle -> signed report into the outbox, every ``check`` seconds + random splay;
                 also right away when the VPN sampler sees the network change (tunnel up/down, new
                 default route); after each cycle an upload is attempted;
* ``upload``     send the outbox, every ``upload`` seconds; on failure, exponential backoff with jitter
                 (or the collector's Retry-After) moves the next attempt;
* ``policy``     fetch the signed policy (ETag), every ``policy_refresh`` seconds;
* ``vpn_sample`` interfaces + default route, every ``vpn_sample`` seconds (default 60).

Intervals come from the running policy (settings may override them) and are re-read when a new policy
is applied. SIGTERM/SIGINT (or `stop()`, e.g. from a Windows service wrapper) shut the scheduler down
after the running jobs finish.
"""

from __future__ import annotations

import ctypes
import logging
import random
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.policy import Policy
from agent.service.core import AgentService, Produced, ServiceError
from agent.service.sampler import take_sample
from agent.service.storage import StorageUnavailable

log = logging.getLogger(__name__)

FIRST_CYCLE_MAX_DELAY = 30.0
# How long a stop waits for a job still running (a probe, an upload) before giving up on it. Nothing is
# lost by giving up: a report leaves the outbox only once the collector accepted it, and a cycle cut short
# had not signed its report yet (or it is in the outbox already).
STOP_GRACE_SECONDS = 10.0
MAX_SPLAY = 300.0


def _libc_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None elsewhere (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> None:
    """Give freed heap pages back to the OS after a cycle.

    Each scheduler thread gets its own glibc malloc arena; the short-lived objects of cycles and uploads
    fragment them, and the service's RSS crept up ~3 MiB per 1,000 cycles without this
    (benchmarks/agent_daemon.py).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def default_splay(check_interval: float) -> float:
    return min(MAX_SPLAY, check_interval * 0.1)


class Daemon:
    def __init__(self, service: AgentService, splay: Optional[float] = None,
                 on_cycle: Optional[Callable[[Produced, float], None]] = None,
                 max_cycles: Optional[int] = None, first_cycle_delay: Optional[float] = None) -> None:
        self.service = service
        self.splay_setting = splay
        self.on_cycle = on_cycle
        self.max_cycles = max_cycles
        self.first_cycle_delay = first_cycle_delay
        self.stop_event = threading.Event()
        self.cycles = 0
        self._running_jobs: Dict[str, int] = {}
        self._jobs_changed = threading.Condition()
        self._next_trigger = "schedule"
        self._upload_not_before = 0.0
        self._rng = random.Random()  # noqa: S311 - splay, not a secret
        # four jobs, one instance each: four threads are enough (the default pool has ten)
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc, executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        service.on_policy_change.append(self._policy_changed)

    # -- schedule ------------------------------------------------------------------------------------------
    def _splay(self, check_interval: float) -> float:
        return default_splay(check_interval) if self.splay_setting is None else self.splay_setting

    def _triggers(self) -> Dict[str, IntervalTrigger]:
        intervals = self.service.intervals()
        check = intervals["check"]
        splay = self._splay(check)
        return {
            "cycle": IntervalTrigger(seconds=check, jitter=splay or None, timezone=timezone.utc),
            "upload": IntervalTrigger(seconds=intervals["upload"], timezone=timezone.utc),
            "policy": IntervalTrigger(seconds=intervals["policy_refresh"], timezone=timezone.utc),
            "vpn_sample": IntervalTrigger(seconds=intervals["vpn_sample"], timezone=timezone.utc),
        }

    def start(self) -> None:
        now = datetime.now(timezone.utc)
        triggers = self._triggers()
        check = self.service.intervals()["check"]
        delay = self.first_cycle_delay
        if delay is None:
            # a fleet rebooted at 9:00 must not report at 9:00:00 all together
            delay = self._rng.uniform(0, min(FIRST_CYCLE_MAX_DELAY, self._splay(check)))
        self.scheduler.add_job(self._tracked("vpn_sample", self._sample_job), triggers["vpn_sample"],
                               id="vpn_sample", next_run_time=now)
        self.scheduler.add_job(self._tracked("cycle", self._cycle_job), triggers["cycle"], id="cycle",
                               next_run_time=now + timedelta(seconds=delay))
        self.scheduler.add_job(self._tracked("upload", self._upload_job), triggers["upload"], id="upload",
                               next_run_time=now)
        self.scheduler.add_job(self._tracked("policy", self._policy_job), triggers["policy"], id="policy",
                               next_run_time=now)
        self.scheduler.start()
        intervals = self.service.intervals()
        log.info("agent service started: device %s, collector %s, policy %s v%d, intervals %s",
                 self.service.identity.device_id, self.service.server_url, self.service.policy.id,
                 self.service.policy.version, intervals, extra={"event": "started"})

    def stop(self) -> None:
        self.stop_event.set()

    def _tracked(self, name: str, job: Callable[[], None]) -> Callable[[], None]:
        """The job, counted while it runs, so a stop knows what it is waiting for."""
        def run() -> None:
            with self._jobs_changed:
                self._running_jobs[name] = self._running_jobs.get(name, 0) + 1
            try:
                job()
            finally:
                with self._jobs_changed:
                    self._running_jobs[name] -= 1
                    self._jobs_changed.notify_all()
        return run

    def running_jobs(self) -> List[str]:
        with self._jobs_changed:
            return sorted(name for name, count in self._running_jobs.items() if count > 0)

    def shutdown(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """Stop scheduling; wait up to ``grace`` seconds for running jobs. False when some still run."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        with self._jobs_changed:
            finished = self._jobs_changed.wait_for(lambda: not any(self._running_jobs.values()), timeout=grace)
        if not finished:
            log.warning("stopping with job(s) still running after %.0fs: %s; their work is redone at the next start",
                        grace, ", ".join(self.running_jobs()), extra={"event": "stop_timeout"})
        log.info("agent service stopped after %d cycle(s)", self.cycles, extra={"event": "stopped"})
        return finished

    def run_forever(self, install_signals: bool = True) -> bool:
        """Start, wait for SIGTERM/SIGINT/stop(), shut down. False when a job outlived the stop grace."""
        previous: List[Any] = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous.append((signum, signal.signal(signum, self._on_signal)))
        self.start()
        try:
            while not self.stop_event.wait(timeout=1.0):
                pass
        finally:
            finished = self.shutdown()
            for signum, handler in previous:
                signal.signal(signum, handler)
        return finished

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("signal %s received: stopping", signal.Signals(signum).name, extra={"event": "signal"})
        self.stop_event.set()

    def _run_now(self, job_id: str) -> None:
        if self.scheduler.running and not self.stop_event.is_set():
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(timezone.utc))

    def _policy_changed(self, policy: Policy) -> None:
        if not self.scheduler.running:
            return
        for job_id, trigger in self._triggers().items():
            self.scheduler.reschedule_job(job_id, trigger=trigger)
        log.info("schedule follows policy %s v%d: %s", policy.id, policy.version, self.service.intervals())

    # -- jobs ----------------------------------------------------------------------------------------------
    def _cycle_job(self) -> None:
        if self.stop_event.is_set():
            return
        trigger, self._next_trigger = self._next_trigger, "schedule"
        cpu_start = time.thread_time()
        try:
            produced = self.service.produce_report(trigger)
        except StorageUnavailable:
            return  # logged by the service once per change of condition; the next cycle tries again
        except ServiceError as exc:
            log.error("cycle failed: %s", exc, extra={"event": "cycle_failed"})
            return
        release_free_memory()
        cpu = time.thread_time() - cpu_start
        self.cycles += 1
        counts = " ".join(f"{k}={v}" for k, v in sorted(produced.counts.items()))
        log.info("cycle seq=%d %s (%s) in %.2fs, cpu %.3fs, trigger %s", produced.seq, produced.status, counts,
                 produced.duration, cpu, trigger,
                 extra={"event": "cycle", "seq": produced.seq, "report_id": produced.report_id,
                        "status": produced.status, "counts": produced.counts, "duration": round(produced.duration, 4),
                        "cpu": round(cpu, 4), "trigger": trigger, "evicted": produced.evicted})
        if self.on_cycle is not None:
            self.on_cycle(produced, cpu)
        if self.max_cycles is not None and self.cycles >= self.max_cycles:
            self.stop_event.set()
            return
        if time.monotonic() >= self._upload_not_before:
            self._run_now("upload")

    def _upload_job(self) -> None:
        if self.stop_event.is_set() or time.monotonic() < self._upload_not_before:
            return
        outcome = self.service.upload_pending()
        release_free_memory()
        if outcome.error is None:
            self._upload_not_before = 0.0
            if outcome.delivered or outcome.rejected:
                log.info("uploaded %d report(s), %d rejected, %d queued", outcome.delivered, outcome.rejected,
                         outcome.remaining, extra={"event": "uploaded", "delivered": outcome.delivered,
                                                   "rejected": outcome.rejected, "queued": outcome.remaining})
            return
        delay = self.service.backoff.next_delay(outcome.retry_after)
        if not outcome.retryable:
            delay = max(delay, self.service.backoff.cap)
        self._upload_not_before = time.monotonic() + delay
        log.log(logging.DEBUG if outcome.storage else logging.WARNING,"upload failed (%s); %d report(s) stay queued, next attempt in %.0fs", outcome.error,
                    outcome.remaining, delay, extra={"event": "upload_backoff", "delay": round(delay, 1),
                                                     "queued": outcome.remaining})
        if self.scheduler.running and not self.stop_event.is_set():
            self.scheduler.modify_job("upload", next_run_time=datetime.now(timezone.utc) + timedelta(seconds=delay))

    def _policy_job(self) -> None:
        if self.stop_event.is_set():
            return
        outcome = self.service.refresh_policy()
        if outcome.error:
            log.warning("policy refresh: %s", outcome.message, extra={"event": "policy_refresh_failed"})
        self._renew_device_certificate()

    def _renew_device_certificate(self) -> None:
        """A device TLS certificate (docs/access.md), when this laptop holds one, is renewed at half-life."""
        # agent.service.access (X.509) is imported only on laptops that use a device certificate: its directory exists
        if not (self.service.state.root / "access").is_dir():
            return
        from agent.service import access
        from agent.service.state import StateError
        from agent.service.transport import TransportError

        try:
            renewed = access.renew_if_held(self.service.transport, self.service.state, time.time())
        except (TransportError, StateError, OSError) as exc:
            log.warning("device certificate not renewed: %s", exc, extra={"event": "certificate_renewal_failed"})
            return
        if renewed is not None:
            log.info("device certificate renewed, valid until %s", renewed["not_after"],
                     extra={"event": "certificate_renewed"})

    def _sample_job(self) -> None:
        if self.stop_event.is_set():
            return
        sample = take_sample(self.service.host)
        if self.service.sampler.add(sample):
            log.info("network changed (tunnels %s, default route via %s): checking now",
                     ",".join(sample.tunnels) or "none", sample.default_route_interface,
                     extra={"event": "network_change", "tunnels": list(sample.tunnels),
                            "default_route": sample.default_route_interface})
            if self.scheduler.running:
                self._next_trigger = "network_change"
                self._run_now("cycle")
