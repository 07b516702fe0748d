"""Expensive checks (scrypt password verification) on low-priority threads, with a bounded queue.

A sign-in costs ~80 ms of CPU (scrypt N=2^15). Twenty attempts a second, run on the request threads,
took both cores of a small collector and report ingest waited behind them (p99 x35). Here they run on
a few threads whose Linux nice value is 19: the kernel gives them only the CPU that report ingest and
the dashboard leave idle. Beyond ``max_waiting`` queued checks a process answers "busy" at once (429)
instead of letting a storm queue up without bound.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
NICE = 19
THREADS = 2
MAX_WAITING = 64


class Busy(RuntimeError):
    """Too many checks are already waiting in this process: answer 429 and let the client retry."""


def _lower_priority() -> None:
    if sys.platform != "linux":
        return  # elsewhere setpriority(PRIO_PROCESS, tid) would renice the whole process
    try:
        # On Linux each thread has its own nice value; raising it needs no privilege.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:
        log.warning("cannot lower the priority of the password-check thread: %s", exc)


class LowPriorityPool:
    def __init__(self, threads: int = THREADS, max_waiting: int = MAX_WAITING) -> None:
        self._threads = threads
        self._executor: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._pending = 0
        self.max_waiting = max_waiting

    @property
    def pending(self) -> int:
        """Checks queued or running in this process."""
        return self._pending

    def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on a low-priority thread; the calling thread waits for its result."""
        with self._lock:
            if self._pending >= self.max_waiting:
                raise Busy(f"{self._pending} password checks are already waiting")
            self._pending += 1
            if self._executor is None:
                # Made on first use: uvicorn worker processes are forked after the app module is imported.
                self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="lowprio",
                                                    initializer=_lower_priority)
            executor = self._executor
        try:
            return executor.submit(function, *args).result()
        finally:
            with self._lock:
                self._pending -= 1


PASSWORD_CHECKS = LowPriorityPool()
