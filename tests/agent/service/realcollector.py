"""The real collector (`teleposture-server`) as a child process on a loopback port, for acceptance tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import requests

from benchmarks.loopback import free_port

ROOT = Path(__file__).resolve().parents[3]
SERVER = str(ROOT / ".venv" / "bin" / "teleposture-server")
AGENT = str(ROOT / ".venv" / "bin" / "teleposture-agent")


class RealCollector:
    def __init__(self, data_dir: Path, port: Optional[int] = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.env = dict(os.environ)
        for name in list(self.env):
            if name.startswith("TELEPOSTURE_"):
                del self.env[name]
        # the kill-loop test uploads many times a second from one device
        # every report's raw payload is kept (the tests compare seqs), no per-device rate limit (the kill
        # loop uploads many times a second from one device)
        self.env.update({"TELEPOSTURE_DATA_DIR": str(data_dir), "TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "0",
                         "TELEPOSTURE_RAW_REPORT_INTERVAL": "0.001", "TELEPOSTURE_ACCESS_LOG": "0",
                         "TELEPOSTURE_POLICY_CACHE_SECONDS": "0"})
        out = self.cli("init")
        self.admin_token = out.strip().splitlines()[-1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([SERVER, *args], env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"teleposture-server {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def token(self) -> str:
        return self.cli("token", "create", "--org-unit", "default").strip().splitlines()[-1]

    def start(self) -> None:
        log = open(self.data_dir / "collector.log", "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen([SERVER, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("collector exited: " + (self.data_dir / "collector.log").read_text()[-2000:])
            try:
                if requests.get(self.url + "/api/v1/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("collector did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def allow_replacement(self, org_unit: str = "default") -> None:
        """Let re-enrolments within ``org_unit`` replace the old device without approval: tests that enrol
        several state directories on this one machine stand for several reinstalls of one laptop."""
        self.token()  # the org unit exists once a token names it
        answer = requests.put(self.url + f"/api/v1/admin/org-units/{org_unit}/enrolment", timeout=10,
                              json={"replace_within_org_unit": True},
                              headers={"Authorization": f"Bearer {self.admin_token}"})
        answer.raise_for_status()

    def api(self, path: str) -> dict:
        answer = requests.get(self.url + "/api/v1/admin" + path, timeout=10,
                              headers={"Authorization": f"Bearer {self.admin_token}"})
        answer.raise_for_status()
        return answer.json()

    # -- what the collector stored (its real SQLite database) -------------------------------------------
    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir / 'teleposture.db'}?mode=ro", uri=True, timeout=10)

    def stored_seqs(self, device_id: str) -> List[int]:
        """Seqs of the device's stored reports in the order the collector received them."""
        with self._db() as conn:
            rows = conn.execute("SELECT seq FROM reports WHERE device_id=? ORDER BY id", (device_id,)).fetchall()
        return [int(r[0]) for r in rows]

    def stored_payloads(self, device_id: str) -> Dict[int, str]:
        with self._db() as conn:
            rows = conn.execute("SELECT seq, payload FROM reports WHERE device_id=?", (device_id,)).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}
