"""Two collector processes on one PostgreSQL database, receiving interleaved reports of the same devices."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from benchmarks.collector_sim import Posture, SimDevice
from benchmarks.loopback import serve
from server.store.db import Database
from server.store.schema import check_state, devices, transitions
from tests.server.conftest import (
    PG_ADMIN_URL,
    init_collector,
    pg_available,
    postgres_database,
    run_cli,
)

DEVICES = 6
SEQUENTIAL = 10  # reports per device sent one after the other, alternating between the processes
RACES = 3  # then pairs of consecutive reports sent at the same time, one to each process


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_record_every_change_exactly_once(tmp_path: Path) -> None:
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    with postgres_database() as database_url:
        _two_processes(tmp_path, database_url)


def _two_processes(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    init_collector(data_dir, database_url)
    code, out, _ = run_cli("--data-dir", str(data_dir), "--database-url", database_url, "token", "create",
                           "--org-unit", "Ops")
    token = out.strip().splitlines()[-1]
    rng = random.Random(7)
    # disk-encryption has no grace period, so its status follows each report exactly.
    postures = [Posture(disk_encrypted=rng.random() < 0.5) for _ in range(SEQUENTIAL + 2 * RACES)]
    sent: dict[str, list[tuple[int, bool, str]]] = defaultdict(list)  # device -> (seq, encrypted, answer)
    lock = threading.Lock()

    with serve(data_dir, database_url) as first, serve(data_dir, database_url) as second:
        clients = [httpx.Client(base_url=first.url, timeout=30), httpx.Client(base_url=second.url, timeout=30)]
        fleet = []
        for number in range(DEVICES):
            device = SimDevice.numbered(number)
            answer = clients[number % 2].post("/api/v1/enroll", json=device.enroll_body(token))
            assert answer.status_code == 200, answer.text
            device.device_id = answer.json()["device_id"]
            fleet.append(device)

        def post(client: httpx.Client, device: SimDevice, envelope: dict[str, str], encrypted: bool) -> None:
            response = client.post("/api/v1/reports", json={"envelopes": [envelope]})
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            with lock:
                sent[device.device_id].append((result["seq"], encrypted, result["status"]))

        def drive(index: int) -> None:
            device = fleet[index]
            device_rng = random.Random(index)
            for step in range(SEQUENTIAL):
                posture = replace(postures[(step + index) % len(postures)])
                post(clients[(step + index) % 2], device, device.report(posture=posture), posture.disk_encrypted)
            for _ in range(RACES):
                a_posture, b_posture = (Posture(disk_encrypted=device_rng.random() < 0.5) for _ in range(2))
                a = device.report(posture=a_posture)
                b = device.report(posture=b_posture)
                racers = [threading.Thread(target=post, args=(clients[0], device, a, a_posture.disk_encrypted)),
                          threading.Thread(target=post, args=(clients[1], device, b, b_posture.disk_encrypted))]
                for racer in racers:
                    racer.start()
                for racer in racers:
                    racer.join()

        with ThreadPoolExecutor(max_workers=DEVICES) as pool:
            list(pool.map(drive, range(DEVICES)))

    db = Database(database_url)
    with db.read() as conn:
        for device in fleet:
            answers = sorted(sent[device.device_id])
            assert len(answers) == SEQUENTIAL + 2 * RACES
            assert all(status in ("accepted", "duplicate") for _, _, status in answers), answers
            accepted = [(seq, encrypted) for seq, encrypted, status in answers if status == "accepted"]
            assert len(accepted) >= SEQUENTIAL + RACES  # at least one of each racing pair wins
            expected, previous = [], None
            for seq, encrypted in accepted:
                status = "pass" if encrypted else "fail"
                if status != previous:
                    expected.append((previous, status, seq))
                previous = status
            recorded = conn.execute(sa.select(transitions.c.old_status, transitions.c.new_status, transitions.c.seq)
                                    .where(transitions.c.device_id == device.device_id,
                                           transitions.c.rule_id == "disk-encryption")
                                    .order_by(transitions.c.seq)).all()
            assert [tuple(r) for r in recorded] == expected
            # Rules that never changed have exactly their first transition.
            others = conn.execute(sa.select(transitions.c.rule_id, sa.func.count()).where(
                transitions.c.device_id == device.device_id, transitions.c.rule_id != "disk-encryption")
                .group_by(transitions.c.rule_id)).all()
            assert others and all(count == 1 for _, count in others)
            state = conn.execute(sa.select(check_state.c.status).where(
                check_state.c.device_id == device.device_id, check_state.c.rule_id == "disk-encryption")).scalar()
            row = conn.execute(sa.select(devices.c.last_seq, devices.c.compliance)
                               .where(devices.c.id == device.device_id)).one()
            newest_seq, newest_encrypted = accepted[-1]
            assert row.last_seq == newest_seq
            assert state == ("pass" if newest_encrypted else "fail")
            assert row.compliance == ("compliant" if newest_encrypted else "not_compliant")
    db.dispose()
