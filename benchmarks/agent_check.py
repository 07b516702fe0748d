"""Agent footprint: CPU seconds of a check cycle on this machine, cold and warm, and peak RSS.

    .venv/bin/python benchmarks/agent_check.py [--warm-cycles 5] [--policy FILE] [--json]

CPU seconds are user+sys of this process and its children (the probes' commands), from
resource.getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN), measured around each cycle:

* cold: an empty probe cache directory (the package manager simulation runs);
* warm, new host: the same cache directory, a fresh LiveHost (what a `check` command costs after
  the service has run, minus Python start-up);
* warm, same host: the service's case, a long-lived LiveHost keeping its in-memory cache;
* the `teleposture-agent check --json` command as a whole (Python start-up and imports included),
  cold and warm, for comparison.

* Windows (replayed, any OS): PowerShell processes a cycle starts, for every recording under
  tests/fixtures/windows, and how many PowerShell probes they answer (each was a process of its own
  before batching; agent/checks/_windows_batch.py).

Target (DESIGN.md): warm cycle <= 0.15 CPU-s including probes. Nothing is asserted: figures only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from agent.checks._windows_batch import batch_pipelines
from agent.checks._windows_ps import POWERSHELL
from agent.checks.cycle import run_cycle
from agent.policy import Policy, baseline, load_policy_file
from agent.probes import DEFAULT_TIMEOUT, LiveHost, ProbeResult, Recording, ReplayHost

WINDOWS_RECORDINGS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "windows"

TARGET_WARM_CPU_S = 0.15


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(action: Callable[[], Any]) -> float:
    before = cpu_seconds()
    action()
    return cpu_seconds() - before


def cycle_cpu(host: LiveHost, policy: Policy) -> float:
    return measured(lambda: run_cycle(host, policy))


_COMMAND = """
import resource, sys
from agent.cli.main import main
code = main(sys.argv[1:])
sys.stderr.write("maxrss_kib=%d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def command_run(state_dir: Path, policy_file: Optional[str]) -> Tuple[float, float]:
    """(CPU seconds incl. start-up and probe commands, the agent process's own peak RSS in MiB)."""
    argv = [sys.executable, "-c", _COMMAND, "check", "--json", "--state-dir", str(state_dir)]
    if policy_file:
        argv += ["--policy", policy_file]
    box: Dict[str, Any] = {}
    cpu = measured(lambda: box.update(proc=subprocess.run(argv, capture_output=True, text=True, check=False,
                                                           timeout=300)))
    rss = 0.0
    for line in box["proc"].stderr.splitlines():
        if line.startswith("maxrss_kib="):
            rss = int(line.split("=", 1)[1]) / 1024
    return cpu, rss


class _CountingReplay(ReplayHost):
    """A replay that counts the PowerShell processes a cycle asks for and the probes they carry."""

    def __init__(self, recording: Recording) -> None:
        super().__init__(recording)
        self.powershell_processes = 0
        self.powershell_probes = 0

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
        if argv and argv[0] == POWERSHELL:
            self.powershell_processes += 1
            self.powershell_probes += len(batch_pipelines(argv) or [None])
        return super().run(argv, timeout, cache_on)


def windows_powershell(policy: Policy) -> Dict[str, Any]:
    """PowerShell processes per replayed Windows cycle (cold: nothing cached), over every recording."""
    processes, probes = [], []
    for path in sorted(WINDOWS_RECORDINGS.glob("*/*.json")):
        if path.name == "expected.json":
            continue
        host = _CountingReplay(Recording.load(path))
        run_cycle(host, policy)
        processes.append(host.powershell_processes)
        probes.append(host.powershell_probes)
    return {"windows_recordings": len(processes), "windows_powershell_per_cycle_max": max(processes),
            "windows_powershell_probes_per_cycle_max": max(probes)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm-cycles", type=int, default=5, help="warm cycles to time (median reported)")
    parser.add_argument("--policy", help="policy file (default: the bundled baseline)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-command", action="store_true", help="skip timing the whole command")
    args = parser.parse_args(argv)
    policy = load_policy_file(args.policy) if args.policy else baseline()

    figures: Dict[str, Any] = {"policy": policy.ref(), "checks": sorted({r.check for r in policy.rules})}
    with tempfile.TemporaryDirectory(prefix="teleposture-bench-") as tmp:
        cache = Path(tmp) / "cache"
        # Imports (psutil is imported on first use) are a one-time cost of the process, not of a cycle.
        LiveHost().processes()
        figures["cold_cycle_cpu_s"] = round(cycle_cpu(LiveHost(cache_dir=cache), policy), 3)
        fresh = [cycle_cpu(LiveHost(cache_dir=cache), policy) for _ in range(args.warm_cycles)]
        figures["warm_cycle_new_host_cpu_s"] = round(statistics.median(fresh), 3)
        daemon_host = LiveHost(cache_dir=cache)
        cycle_cpu(daemon_host, policy)
        same = [cycle_cpu(daemon_host, policy) for _ in range(args.warm_cycles)]
        figures["warm_cycle_same_host_cpu_s"] = round(statistics.median(same), 3)
        # ru_maxrss is in KiB on Linux.
        figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if not args.no_command:
            command_state = Path(tmp) / "command-state"
            cold_cpu, _ = command_run(command_state, args.policy)
            warm = [command_run(command_state, args.policy) for _ in range(3)]
            figures["command_cold_cpu_s"] = round(cold_cpu, 3)
            figures["command_warm_cpu_s"] = round(statistics.median(cpu for cpu, _ in warm), 3)
            figures["command_peak_rss_mib"] = round(max(rss for _, rss in warm), 1)
    figures.update(windows_powershell(policy))
    figures["target_warm_cpu_s"] = TARGET_WARM_CPU_S
    figures["warm_within_target"] = figures["warm_cycle_new_host_cpu_s"] <= TARGET_WARM_CPU_S

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"policy {policy.id} v{policy.version}; checks: {', '.join(figures['checks'])}")
    print(f"cold cycle (empty cache dir)         {figures['cold_cycle_cpu_s']:7.3f} CPU-s")
    print(f"warm cycle (new host, disk cache)    {figures['warm_cycle_new_host_cpu_s']:7.3f} CPU-s "
          f"(target <= {TARGET_WARM_CPU_S}) median of {args.warm_cycles}")
    print(f"warm cycle (same host, service case) {figures['warm_cycle_same_host_cpu_s']:7.3f} CPU-s")
    print(f"peak RSS of this process             {figures['peak_rss_mib']:7.1f} MiB")
    if not args.no_command:
        print(f"`check --json` command, cold         {figures['command_cold_cpu_s']:7.3f} CPU-s (start-up included)")
        print(f"`check --json` command, warm         {figures['command_warm_cpu_s']:7.3f} CPU-s (start-up included)")
        print(f"peak RSS of the command's process    {figures['command_peak_rss_mib']:7.1f} MiB")
    print(f"Windows (replayed, {figures['windows_recordings']} recordings): at most "
          f"{figures['windows_powershell_per_cycle_max']} PowerShell process(es) per cycle, answering up to "
          f"{figures['windows_powershell_probes_per_cycle_max']} PowerShell probes (one process each before batching)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
