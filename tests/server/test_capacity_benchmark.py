"""benchmarks/capacity.py at a toy size: it runs end to end on a real PostgreSQL and a real `serve`, every
phase accepts every report, and the seeded fleet is the steady state the benchmark says it is (the
silent devices already flagged stale, so the run measures uploads, not a catch-up of notices)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from benchmarks import capacity
from benchmarks.loopback import REPO
from server.device_notices import SWEEP_MARK, flag_stale_devices
from server.store.schema import metadata
from tests.server.conftest import PG_ADMIN_URL, postgres_database

pytestmark = pytest.mark.postgres


def test_the_seeded_fleet_has_its_silent_devices_flagged_and_the_sweep_mark_set() -> None:
    fleet = capacity.Fleet(3, 0.05, seed=16)
    with postgres_database() as url:
        engine = sa.create_engine(url)
        try:
            metadata.create_all(engine)
            capacity.seed(url, 200, 60, fleet, random.Random(1))
            with engine.begin() as conn:
                silent = conn.execute(sa.text("SELECT count(*) FROM devices WHERE last_seen < :cutoff"),
                                      {"cutoff": time.time() - capacity.STALE_AFTER}).scalar_one()
                notices = conn.execute(sa.text("SELECT count(DISTINCT device_id) FROM device_notices "
                                               "WHERE kind = 'stale'")).scalar_one()
                mark = conn.execute(sa.text("SELECT value FROM server_settings WHERE name = :n"),
                                    {"n": SWEEP_MARK}).scalar_one()
                assert silent == notices == 140 and float(mark) < time.time() - capacity.STALE_AFTER
                # the collector's sweep finds nothing left to flag among them: only the driven devices,
                # seeded without a report yet, are silent since their enrolment
                assert flag_stale_devices(conn, now=time.time(), stale_after=capacity.STALE_AFTER) == 3
        finally:
            engine.dispose()


def test_capacity_runs_every_phase_without_an_error() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "capacity.py"), "--enrolled", "3000",
                           "--active", "900", "--interval", "15", "--seconds", "2", "--clients", "4",
                           "--dashboard-requests", "1", "--dashboard-pace", "0.2"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "TELEPOSTURE_BENCH_PG": PG_ADMIN_URL})
    assert done.returncode == 0, done.stdout + done.stderr
    phases = re.findall(r"^  (warm-up|ceiling|half load|full load)[^\n]*requests +(\d+) +errors (\d+)",
                        done.stdout, re.MULTILINE)
    assert [name for name, _, _ in phases] == ["warm-up", "ceiling", "half load", "half load", "full load"]
    assert all(int(requests) > 0 and errors == "0" for _, requests, errors in phases), done.stdout
    assert "dashboard during half load, one page every 0.2 s" in done.stdout
    assert re.search(r"overview \(whole fleet\) +p50 +[\d.]+ ms", done.stdout)
    assert re.search(r"half load p99 [\d.]+ ms \(target < 100 ms; [\d.]+ ms with the dashboard storm", done.stdout)
