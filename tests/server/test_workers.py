"""`serve --workers N` on a real process tree: the workers exit when the master is killed with -9."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psutil

from benchmarks.loopback import serve
from tests.server.conftest import init_collector


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_workers_exit_when_the_master_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
    init_collector(data_dir, url)
    with serve(data_dir, url, "--workers", "2", start_timeout=60) as server:
        master = psutil.Process(server.process.pid)
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline:
            # uvicorn's workers are the master's children running the app (multiprocessing's resource
            # tracker, if any, is a child too but is not a worker)
            workers = [c for c in master.children() if "spawn_main" in " ".join(c.cmdline())
                       and "resource_tracker" not in " ".join(c.cmdline())]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, [c.cmdline() for c in master.children()]
        os.kill(master.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        try:
            assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
            assert not _port_open(server.port), "the port is still served after the master died"
        finally:
            for process in alive:  # started by this test: never leave them behind
                process.kill()
        assert len(gone) == 2
