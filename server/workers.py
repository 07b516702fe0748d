"""`serve --workers N`: a worker process ends when the master process that started it dies.

uvicorn's master supervises its workers, but when the master itself is killed (kill -9, OOM killer)
the workers were re-parented and kept serving, holding the port: a restarted collector could not
bind, and a systemd restart left old code answering. Each worker arms two guards: on Linux the kernel
sends it SIGTERM when its parent dies (PR_SET_PDEATHSIG), and everywhere a watcher thread notices the
parent change within a second, asks for a graceful stop, and exits hard if that takes too long.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

MASTER_PID_ENV = "TELEPOSTURE_MASTER_PID"
POLL_SECONDS = 1.0
GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def _arm_parent_death_signal() -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())


def _watch(master_pid: int) -> None:
    while os.getppid() == master_pid:
        time.sleep(POLL_SECONDS)
    log.warning("collector master process %d is gone: this worker stops", master_pid)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
    time.sleep(GRACE_SECONDS)
    os._exit(1)  # still here: open connections held the graceful stop


def exit_with_master(master_pid: int) -> None:
    """Call once in each worker process, with the pid of the master that started it."""
    if sys.platform == "linux":
        _arm_parent_death_signal()
    # The master may have died before the guards were armed: the watcher sees that at once.
    threading.Thread(target=_watch, args=(master_pid,), name="master-watch", daemon=True).start()
