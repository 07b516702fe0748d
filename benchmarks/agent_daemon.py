"""Agent service footprint: the real scheduler loop (`agent.service.scheduler.Daemon`) for N cycles against a real collector.

Each cycle is the service's full path: check cycle -> report -> seq allocated -> signed -> outbox (SQLite,
fsync) -> upload to the collector (`teleposture-server serve`, started here on loopback in a temp directory),
plus the VPN sampler and policy refresh jobs on their own schedules.

Checks: by default a replayed recording of the Debian 12 test VM (tests/agent/service/fixtures/
debian-12-test-vm.json, every probe of the baseline policy), so 1,000 cycles take a minute and measure the
agent's own cost (evaluation, signing, spooling, uploading, scheduling), not apt's. `--live` runs the real
probes of this machine instead (warm cycles use the mtime-keyed probe cache).

Prints RSS after 10 cycles and after the last one (target: within 2 MB), and the median CPU seconds per
cycle (the cycle job's thread CPU) and the whole process's CPU per cycle (uploads and other jobs included).

    .venv/bin/python benchmarks/agent_daemon.py [--cycles 1000] [--interval 0.02] [--live]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.probes import LiveHost, Recording, ReplayHost  # noqa: E402
from agent.service.config import load_settings  # noqa: E402
from agent.service.core import AgentService, enroll  # noqa: E402
from agent.service.scheduler import Daemon  # noqa: E402
from tests.agent.service.realcollector import RealCollector  # noqa: E402

RECORDING = ROOT / "tests" / "agent" / "service" / "fixtures" / "debian-12-test-vm.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.02, help="check interval in seconds")
    parser.add_argument("--live", action="store_true", help="probe this machine instead of replaying")
    args = parser.parse_args()

    from agent.service import logs

    logs.configure("text", "warning")
    # a 20 ms interval makes the scheduler skip runs while a cycle is still going: expected here, not news
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="tp-agent-bench-"))
    collector = RealCollector(work / "collector")
    collector.start()
    try:
        state = work / "agent"
        settings = load_settings({
            "state_dir": str(state), "check_interval": str(args.interval), "upload_interval": "5",
            "policy_refresh_interval": "30", "vpn_sample_interval": "1", "splay": "0", "log_level": "warning",
        }, environ={"TELEPOSTURE_CONFIG": ""})
        host = LiveHost(cache_dir=state / "cache") if args.live else ReplayHost(Recording.load(RECORDING))
        enroll(settings, collector.url, collector.token(), None, True, host=host)
        service = AgentService(settings, host=host)
        process = psutil.Process()
        cycle_cpu: List[float] = []
        rss = {}
        marks = {}

        def on_cycle(produced, cpu: float) -> None:
            cycle_cpu.append(cpu)
            if len(cycle_cpu) in (10, args.cycles):
                rss[len(cycle_cpu)] = process.memory_info().rss
                marks[len(cycle_cpu)] = (time.monotonic(), process.cpu_times())

        daemon = Daemon(service, splay=0, on_cycle=on_cycle, max_cycles=args.cycles, first_cycle_delay=0)
        started = time.monotonic()
        daemon.run_forever(install_signals=False)
        wall = time.monotonic() - started
        outcome = service.upload_pending()
        depth = service.spool.depth()
        service.close()
        allocated = service.state.last_seq()
    finally:
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)

    first, last = rss[10], rss[args.cycles]
    (t10, cpu10), (tn, cpun) = marks[10], marks[args.cycles]
    process_cpu = (cpun.user + cpun.system - cpu10.user - cpu10.system) / (args.cycles - 10)
    print(f"checks: {'live probes of this machine' if args.live else 'replayed recording ' + RECORDING.name}")
    print(f"cycles: {len(cycle_cpu)} at a {args.interval}s interval in {wall:.1f}s wall "
          f"({(tn - t10) / (args.cycles - 10) * 1000:.1f} ms per cycle after the 10th)")
    print(f"RSS after 10 cycles:    {first / 2**20:.2f} MiB")
    print(f"RSS after {args.cycles} cycles:  {last / 2**20:.2f} MiB  (growth {(last - first) / 2**20:+.2f} MiB, "
          f"target within 2 MB: {'OK' if abs(last - first) <= 2_000_000 else 'OVER'})")
    print(f"median CPU per cycle (cycle job thread): {statistics.median(cycle_cpu):.4f} s "
          f"(p90 {statistics.quantiles(cycle_cpu, n=10)[-1]:.4f} s)")
    print(f"process CPU per cycle (all jobs, uploads included): {process_cpu:.4f} s")
    children = (cpun.children_user + cpun.children_system - cpu10.children_user - cpu10.children_system)
    if args.live:
        print(f"probe commands' CPU per cycle (child processes): {children / (args.cycles - 10):.4f} s")
    print(f"delivery: {allocated} reports signed, {allocated - depth} delivered, {depth} left in the outbox; "
          f"last upload error: {outcome.error or 'none'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
