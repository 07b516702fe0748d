"""Thread CPU of one access decision as an upload answer issues it (server.api.access.decisions_for_upload).

An initialised collector (SQLite or PostgreSQL) and its app in this process: a simulated fleet enrols
through the app and reports through ``Ingestor.ingest`` (batches of 50; one round where every device is
evaluated and gets a decision, as a running collector has them). Then, in this one thread:

  * steady: the decision of one device, again and again (nothing changes, nothing is written, caches hot);
  * after ingest: rounds where a fraction of the devices change one check (5 % by default, as in
    collector_load.py); right after each round, the decision of each evaluated device, one call per device
    as the upload answer of a one-report batch makes it (changed decisions are written; the ingest in
    between leaves the caches colder, as in a server).

    .venv/bin/python benchmarks/access_decisions.py [--backend sqlite|postgres] [--devices 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from benchmarks import collector_load as load  # noqa: E402
from benchmarks.loopback import scratch_database  # noqa: E402
from server.api import access  # noqa: E402
from server.app import create_app  # noqa: E402
from server.context import AppContext  # noqa: E402
from server.settings import load_settings  # noqa: E402

BATCH = 50


def ingest_round(ctx: AppContext, fleet: load.Fleet) -> list[str]:
    """One report per device, in batches; the ids of the devices whose report was evaluated."""
    envelopes = fleet.round()
    evaluated = []
    for start in range(0, len(envelopes), BATCH):
        answers = ctx.ingestor.ingest(envelopes[start:start + BATCH])
        evaluated += [str(a.device_id) for a in answers if a.evaluated and a.device_id]
    return evaluated


def run(url: str, data_dir: Path, args: argparse.Namespace) -> None:
    load.cli(data_dir, url, "init")
    token = load.cli(data_dir, url, "token", "create", "--org-unit", "Bench").strip().splitlines()[-1]
    settings = load_settings({"data_dir": data_dir, "database_url": url, "access_log": False}, environ={})
    app = create_app(settings)
    ctx: AppContext = app.state.ctx
    fleet = load.Fleet(args.devices, args.change_fraction)
    client = TestClient(app)  # no lifespan: no background workers competing for this thread's CPU
    for device in fleet.devices:
        enrolled = client.post("/api/v1/enroll", json=device.enroll_body(token))
        if enrolled.status_code != 200:
            raise RuntimeError(f"enrolment failed: {enrolled.status_code} {enrolled.text[:200]}")
        device.device_id = enrolled.json()["device_id"]
    first = ingest_round(ctx, fleet)
    for start in range(0, len(first), BATCH):
        access.decisions_for_upload(ctx, first[start:start + BATCH])

    one = [str(fleet.devices[0].device_id)]
    began = time.thread_time()
    for _ in range(args.steady):
        access.decisions_for_upload(ctx, one)
    steady = 1000 * (time.thread_time() - began) / args.steady
    print(f"steady, one device again and again: {steady:.3f} ms per decision")  # noqa: T201

    spent, decisions = 0.0, 0
    for _ in range(args.rounds):
        for device_id in ingest_round(ctx, fleet):
            began = time.thread_time()
            access.decisions_for_upload(ctx, [device_id])
            spent += time.thread_time() - began
            decisions += 1
    print(f"after ingest, each evaluated device alone: {1000 * spent / max(decisions, 1):.3f} ms per "  # noqa: T201
          f"decision ({decisions} decisions in {args.rounds} rounds of {args.devices} reports)")
    ctx.db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steady", type=int, default=1000, help="decisions timed in the steady loop")
    parser.add_argument("--change-fraction", type=float, default=0.05)
    args = parser.parse_args()
    print(f"(load average at start: {psutil.getloadavg()[0]:.2f}; backend {args.backend}, "  # noqa: T201
          f"{args.devices} devices)")
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-access-"))) / "data"
        if args.backend == "sqlite":
            url = f"sqlite+pysqlite:///{data_dir / 'teleposture.db'}"
        else:
            url = stack.enter_context(scratch_database(load.PG_ADMIN_URL, "tp_access_"))
        run(url, data_dir, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
