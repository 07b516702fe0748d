"""Where a one-report upload's server CPU goes: the split behind collector_load.py's batch-1 figure.

Starts `serve --workers 2` on SQLite as collector_load.py does, enrols a fleet, warms every worker's
caches with batched rounds, then prints:

  * the idle collector's CPU per second, per process (background pollers: actions worker, master
    watch, uvicorn supervisor), which collector_load.py's per-report figure also counts;
  * for batch-1 rounds, CPU per report split by thread: the event loops (HTTP, body, answer) and the
    ingest threads (Ingestor.ingest, access decisions), user and system time;
  * the same bodies to /api/v1/ping at batch 1: what a request that does nothing costs;
  * in-process (this process, one thread, caches warm): Ingestor.ingest of one unchanged report, and
    each part of it timed alone (envelope check + signature + parse, the bounds check from the payload
    text and the walk it replaces, the evaluation inputs' hash, the one-statement claim of an unchanged
    report, an empty write transaction, the seq claim, the running-ladder query: the last three are the
    transaction's way, for reports that change something).

    .venv/bin/python benchmarks/batch1_split.py [--devices 1000] [--rounds 2] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import psutil  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from agent import protocol  # noqa: E402
from benchmarks import collector_load as load  # noqa: E402
from benchmarks.loopback import serve  # noqa: E402
from server import bounds, ingest  # noqa: E402
from server.ingest import Ingestor  # noqa: E402
from server.store import ingest_sql  # noqa: E402
from server.store.db import Database  # noqa: E402
from server.store.schema import devices  # noqa: E402

Envelopes = list[dict[str, str]]


def thread_cpu(procs: list[psutil.Process]) -> dict[tuple[int, int], tuple[float, float]]:
    """(pid, thread id) -> (user+system, system) CPU seconds."""
    out = {}
    for proc in procs:
        for thread in proc.threads():
            out[(proc.pid, thread.id)] = (thread.user_time + thread.system_time, thread.system_time)
    return out


def split(before: dict[tuple[int, int], tuple[float, float]], after: dict[tuple[int, int], tuple[float, float]],
          reports: int) -> str:
    parts = {"event loops": [0.0, 0.0], "other threads": [0.0, 0.0]}
    for (pid, tid), (total, system) in after.items():
        old_total, old_system = before.get((pid, tid), (0.0, 0.0))
        part = parts["event loops" if pid == tid else "other threads"]
        part[0] += total - old_total
        part[1] += system - old_system
    return ", ".join(f"{name} {1000 * t / reports:.3f} ms/report (system {1000 * s / reports:.3f})"
                     for name, (t, s) in parts.items())


def singles(envelopes: Envelopes) -> list[tuple[bytes, int]]:
    return [(gzip.compress(json.dumps({"envelopes": [e]}).encode(), 5), 1) for e in envelopes]


def cpu_ms(call: Callable[[], object], times: int) -> float:
    began = time.thread_time()
    for _ in range(times):
        call()
    return 1000 * (time.thread_time() - began) / times


def in_process(url: str, fleet: load.Fleet) -> None:
    db = Database(url)
    ingestor = Ingestor(db)
    ingestor.ingest(fleet.round())  # keys and policy cached
    one = fleet.round()
    began = time.thread_time()
    for item in one:
        ingestor.ingest([item])
    print(f"  Ingestor.ingest, one unchanged report per call: "  # noqa: T201
          f"{1000 * (time.thread_time() - began) / len(one):.3f} ms")
    raw = fleet.round()[0]
    envelope = protocol.Envelope.from_json(raw)
    key = ingestor.keys.lookup(db, [envelope.device_id])[envelope.device_id]
    payload = protocol.open_envelope(envelope, key, now=time.time(), loads=orjson.loads)

    def open_one() -> None:
        opened = protocol.Envelope.from_json(raw)
        bounds.check_envelope(opened)
        protocol.open_envelope(opened, key, now=time.time(), loads=orjson.loads)

    print(f"  envelope check + Ed25519 verify + parse: {cpu_ms(open_one, 500):.3f} ms")  # noqa: T201
    print(f"  bounds check from the text ({len(envelope.payload)} characters): "  # noqa: T201
          f"{cpu_ms(lambda: bounds.check_payload(payload, envelope.payload), 500):.3f} ms, "
          f"the walk without it: {cpu_ms(lambda: bounds.check_payload(payload), 500):.3f} ms")
    print(f"  evaluation inputs' hash: "  # noqa: T201
          f"{cpu_ms(lambda: ingest._eval_inputs(1, 'linux', payload), 500):.3f} ms")

    @contextlib.contextmanager
    def driver() -> Iterator[ingest_sql.Driver]:
        with db.write_driver() as transaction:
            yield ingest_sql.Driver(transaction.cursor, transaction.pyformat)

    def empty() -> None:
        with db.write_driver():
            pass

    seq = [10 ** 9]

    def claim() -> None:
        seq[0] += 1
        with driver() as cursor:
            ingest_sql.claim_many(cursor, [ingest_sql.claim_params(envelope.device_id, seq[0], time.time(), "r",
                                                                   time.time())])

    def ladders() -> None:
        with driver() as cursor:
            ingest_sql.running_ladders(cursor, [envelope.device_id])

    with db.read() as conn:
        org_unit, eval_hash = conn.execute(sa.select(devices.c.org_unit_id, devices.c.eval_hash)
                                           .where(devices.c.id == envelope.device_id)).one()

    def unchanged() -> None:
        seq[0] += 1
        with db.write_driver(autocommit=True) as transaction:
            compliance = ingest_sql.claim_unchanged(ingest_sql.Driver(transaction.cursor, transaction.pyformat), {
                **ingest_sql.claim_params(envelope.device_id, seq[0], time.time(), "r", time.time()),
                "org_unit": org_unit, "eval_hash": eval_hash, "raw_interval": 1e12}, None)
        assert compliance is not None, "the device row was not claimed"

    print(f"  one-statement claim of an unchanged report (autocommit UPDATE ... RETURNING): "  # noqa: T201
          f"{cpu_ms(unchanged, 500):.3f} ms")
    base = cpu_ms(empty, 500)
    print(f"  write transaction (pool checkout, BEGIN IMMEDIATE, COMMIT, return): {base:.3f} ms")  # noqa: T201
    print(f"  + seq claim (UPDATE ... RETURNING): {cpu_ms(claim, 500) - base:.3f} ms")  # noqa: T201
    print(f"  + running ladders query: {cpu_ms(ladders, 500) - base:.3f} ms")  # noqa: T201
    db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="batch-1 rounds (one report per device each)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the idle collector is watched")
    args = parser.parse_args()
    print(f"(load average at start: {psutil.getloadavg()[0]:.2f})")  # noqa: T201
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-batch1-"))) / "data"
        url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        load.cli(data_dir, url, "init")
        token = load.cli(data_dir, url, "token", "create", "--org-unit", "Bench").strip().splitlines()[-1]
        env = {"TELEPOSTURE_RATE_LIMIT_DEVICE_PER_MINUTE": "0", "TELEPOSTURE_RATE_LIMIT_IP_PER_MINUTE": "0",
               "TELEPOSTURE_LOG_LEVEL": "warning"}
        fleet = load.Fleet(args.devices, 0.05)
        with serve(data_dir, url, "--workers", "2", "--benchmark-routes", env=env, start_timeout=60) as server:
            load.SERVER_PID[0] = server.process.pid
            for device in fleet.devices:
                status, body = load.Connection(server.port).post(
                    "/api/v1/enroll", json.dumps(device.enroll_body(token)).encode(), gzip_body=False)
                if status != 200:
                    raise RuntimeError(f"enrolment failed: {status} {body[:200]!r}")
                device.device_id = json.loads(body)["device_id"]
            for _ in range(4):  # every worker has every key and policy cached
                load.send_all(server.port, "/api/v1/reports", load.batches(fleet.round(), 50), args.clients, "")
            master = psutil.Process(server.process.pid)
            procs = [master, *master.children(recursive=True)]
            before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
            time.sleep(args.idle)
            idle = {p.pid: 1000 * (sum(p.cpu_times()[:2]) - before[p.pid]) / args.idle for p in procs}
            print("idle collector, CPU ms per second per process: "  # noqa: T201
                  + ", ".join(f"{pid} {ms:.1f}" for pid, ms in idle.items()))
            for path in ("/api/v1/reports", "/api/v1/ping"):
                first = thread_cpu(procs)
                runs = [load.send_all(server.port, path, singles(fleet.round()), args.clients, "")
                        for _ in range(args.rounds)]
                run = load.merge(runs, f"{path} (batch 1)")
                print(run.line())  # noqa: T201
                print("  " + split(first, thread_cpu(procs), run.reports))  # noqa: T201
        print("in-process, one thread:")  # noqa: T201
        in_process(url, fleet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
