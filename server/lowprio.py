"""Expensive checks (scrypt password verification) in a low-priority child process, with a bounded
queue, and stand-ins that take as long as a real check without using the CPU.

A sign-in costs ~0.1 s of CPU and 32 MiB of memory traffic (scrypt N=2^15). Twenty attempts a second,
run on the request threads, took both cores of a small collector and report ingest waited behind them
(p99 x35). Here real checks run one at a time per collector process, in a child process at the lowest
priority (nice 19, and SCHED_BATCH on Linux): ingest always wins the CPU, sign-ins wait for what is
left. A process, not a thread: a starved low-priority thread holding the GIL (it needs it around each
hash) would stall every request thread of its process behind it. The child is started
with "spawn", so it inherits no listening socket, and it exits within a second of its parent.

Most attempts of a storm name no user at all. Hashing a dummy password for them only hides which names
exist; a pause as long as a real check takes hides it as well and costs nothing. ``stand_in`` sleeps for
the duration of one of the recent real checks of this process, drawn at random, measured from the
moment the check was asked for to its answer (queue wait included), so a stand-in answers with the
same distribution of delays that a real check has right now. When too few recent checks were measured
(at start, or after a quiet spell), the stand-in runs a real check instead, which also refreshes the
samples.

Beyond ``max_waiting`` checks and stand-ins in a process, further ones are answered "busy" at once
(429): each waits on a request thread, and the threads report ingest needs must stay free.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from typing import Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
NICE = 19
# Request threads of a process: Starlette's thread pool has 40, shared with report ingest.
MAX_WAITING = 16
SAMPLES = 64  # recent real check durations a stand-in draws from
MIN_SAMPLES = 4  # fewer recent ones than this: a stand-in runs a real check
SAMPLE_MAX_AGE = 600.0  # seconds: older durations no longer tell how long a check takes now
PARENT_POLL_SECONDS = 1.0


class Busy(RuntimeError):
    """Too many checks are already waiting in this process: answer 429 and let the client retry."""


def _exit_with_parent(parent: int) -> None:
    # The child holds both ends of its task queue, so its parent's death closes no pipe it reads.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def _start_child(parent: int) -> None:
    """In the child process, before its first check: leave with the parent, lowest priority."""
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    _lower_priority()


def _lower_priority() -> None:
    """The lowest CPU priority that never starves, for the calling (child) process."""
    if sys.platform == "linux":
        try:
            # A session of its own: with autogroup scheduling (desktop and shared Linux machines) the
            # kernel shares the CPU between sessions first, and the child's hashing would otherwise be
            # charged to the collector's session, which ingest then waits to be given back. At
            # autogroup nice 19 the child's session only gets what the others leave.
            os.setsid()
            with open("/proc/self/autogroup", "w", encoding="ascii") as autogroup:
                autogroup.write(str(NICE))
        except OSError as exc:  # no autogroup in this kernel (or under systemd: a cgroup), no matter
            log.debug("password-check process keeps its scheduling group: %s", exc)
        try:
            # SCHED_BATCH: never preempts a thread that wakes up (ingest), only runs on what is left.
            # Not SCHED_IDLE: that gets next to nothing on a busy machine, and sign-ins time out.
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError as exc:
            log.info("SCHED_BATCH refused for the password-check process (%s); nice %d only", exc, NICE)
    try:
        # nice 19: against each busy normal thread it gets about 1.5 % of a core, so it always ends.
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError as exc:
        log.warning("cannot lower the priority of the password-check process: %s", exc)


def low_priority_process() -> Executor:
    """The executor of real checks: one child process, started with "spawn", at the lowest priority."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_child,
                               initargs=(os.getpid(),))


class LowPriorityPool:
    """One low-priority child process that runs checks one at a time, shared by a collector process's
    request threads. ``checks_run`` counts the checks it ran, ``stand_ins`` the pauses that replaced one."""

    def __init__(self, max_waiting: int = MAX_WAITING, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, rng: Optional[random.Random] = None,
                 executor: Callable[[], Executor] = low_priority_process) -> None:
        self._make_executor = executor
        self._executor: Optional[Executor] = None
        self._lock = threading.Lock()
        self._pending = 0
        self._durations: deque[tuple[float, float]] = deque(maxlen=SAMPLES)  # (finished at, seconds)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()
        self.max_waiting = max_waiting
        self.checks_run = 0
        self.stand_ins = 0

    @property
    def pending(self) -> int:
        """Checks and stand-ins queued or running in this process."""
        return self._pending

    def _enter(self) -> None:
        with self._lock:
            if self._pending >= self.max_waiting:
                raise Busy(f"{self._pending} password checks are already waiting")
            self._pending += 1

    def _leave(self) -> None:
        with self._lock:
            self._pending -= 1

    def _executor_now(self) -> tuple[Executor, bool]:
        """The executor, and whether it was made just now."""
        with self._lock:
            if self._executor is not None:
                return self._executor, False
            # Made on first use: uvicorn worker processes are forked after the app module is imported.
            self._executor = self._make_executor()
            return self._executor, True

    def _check(self, function: Callable[..., T], *args: object) -> T:
        executor, fresh = self._executor_now()
        try:
            if fresh:
                # Started before timing: a sample with the child's start-up in it would make
                # stand-ins wait seconds.
                executor.submit(int).result()
            began = self._clock()
            result = executor.submit(function, *args).result()
        except BrokenExecutor as exc:
            # The child process died (killed, out of memory): the next check starts a new one.
            with self._lock:
                if self._executor is executor:
                    self._executor = None
            executor.shutdown(wait=False)
            raise Busy("the password-check process stopped; try again") from exc
        finished = self._clock()
        with self._lock:
            self.checks_run += 1
            self._durations.append((finished, finished - began))
        return result

    def shutdown(self) -> None:
        """Stop the child process (a new one starts at the next check)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in the low-priority process (``function`` and its arguments are pickled:
        a module-level function); the calling thread waits for its result, and
        how long that took (queue wait included) becomes a sample for ``stand_in``."""
        self._enter()
        try:
            return self._check(function, *args)
        finally:
            self._leave()

    def recent_durations(self) -> list[float]:
        """Durations of the real checks of the last ``SAMPLE_MAX_AGE`` seconds, oldest first."""
        now = self._clock()
        with self._lock:
            return [seconds for finished, seconds in self._durations if now - finished < SAMPLE_MAX_AGE]

    def stand_in(self, real_check: Callable[[], object]) -> None:
        """Take as long as a real check would, without doing one: sleep for the duration of one of the
        recent real checks, drawn at random. With fewer than ``MIN_SAMPLES`` recent ones, run
        ``real_check`` (picklable) in the low-priority process instead (its duration becomes a sample)."""
        self._enter()
        try:
            recent = self.recent_durations()
            if len(recent) < MIN_SAMPLES:
                self._check(real_check)
                return
            with self._lock:
                self.stand_ins += 1
            self._sleep(self._rng.choice(recent))
        finally:
            self._leave()


PASSWORD_CHECKS = LowPriorityPool()
