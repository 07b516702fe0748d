"""Agent service footprint as deployed: the real `teleposture-agent run` process, live probes of this machine.

benchmarks/agent_daemon.py runs the scheduler loop inside the benchmark process (replayed probes, 1,000 cycles)
to show that memory stays flat; its RSS includes the benchmark's own imports and the loaded recording. This one
measures what an employee's laptop carries: it starts a collector on loopback, enrols, runs the service
command with a short check interval and samples the process's memory from outside:

  * RSS (resident pages, shared libraries counted in full: the figure `ps` and DESIGN.md's bar use),
  * USS (pages only this process holds: what stopping the agent would give back),
  * PSS (shared pages divided among the processes sharing them),

after the first cycle and at the end, plus the cycles run and the process's CPU per cycle.

    .venv/bin/python benchmarks/agent_process.py [--seconds 90] [--interval 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agent.service.realcollector import AGENT, RealCollector  # noqa: E402


def memory(process: psutil.Process) -> tuple[float, float, float]:
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20, info.pss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the service runs")
    parser.add_argument("--interval", type=float, default=3.0, help="check interval in seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tp-agent-process-"))
    collector = RealCollector(work / "collector")
    collector.start()
    log_path = work / "agent.log"
    try:
        env = {**os.environ, "TELEPOSTURE_STATE_DIR": str(work / "agent"), "TELEPOSTURE_CONFIG": "",
               "TELEPOSTURE_CHECK_INTERVAL": str(args.interval), "TELEPOSTURE_SPLAY": "0",
               "TELEPOSTURE_UPLOAD_INTERVAL": "5", "TELEPOSTURE_LOG_LEVEL": "info"}
        subprocess.run([AGENT, "enroll", "--server", collector.url, "--token", collector.token(), "--allow-http"],
                       env=env, check=True, capture_output=True)
        with open(log_path, "w") as log:
            service = subprocess.Popen([AGENT, "run", "--server", collector.url, "--allow-http"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=log)
        process = psutil.Process(service.pid)

        def cycles() -> int:
            return log_path.read_text().count("[event=cycle")

        deadline = time.monotonic() + 120
        while cycles() < 1 and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.2)
        if cycles() < 1:
            print(f"the service ran no cycle; its log says:\n{log_path.read_text()[-2000:]}")
            return 1
        first = memory(process)
        cpu_first, cycles_first = process.cpu_times(), cycles()
        peak = first
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(2)
            now = memory(process)
            peak = tuple(max(a, b) for a, b in zip(peak, now))  # type: ignore[assignment]
        last = memory(process)
        cpu_last, cycles_last = process.cpu_times(), cycles()
        children = psutil.Process(service.pid).cpu_times()
        service.terminate()
        service.wait(timeout=30)
    finally:
        collector.stop()
    ran = cycles_last - cycles_first
    own = (cpu_last.user + cpu_last.system - cpu_first.user - cpu_first.system) / max(ran, 1)
    probes = (children.children_user + children.children_system
              - cpu_first.children_user - cpu_first.children_system) / max(ran, 1)
    print(f"teleposture-agent run, live probes, check every {args.interval:g} s, {cycles_last} cycles in all")
    print(f"after the first cycle:  RSS {first[0]:5.1f} MiB  USS {first[1]:5.1f} MiB  PSS {first[2]:5.1f} MiB")
    print(f"after {cycles_last:4d} cycles:     RSS {last[0]:5.1f} MiB  USS {last[1]:5.1f} MiB  PSS {last[2]:5.1f} MiB")
    print(f"peak:                   RSS {peak[0]:5.1f} MiB  USS {peak[1]:5.1f} MiB  PSS {peak[2]:5.1f} MiB")
    print(f"CPU per cycle (warm): agent process {own:.3f} s, probe commands {probes:.3f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
