"""All the PowerShell probes of a Windows check cycle in one ``powershell.exe``.

Starting Windows PowerShell costs 0.3-1 CPU-second; a cycle asks some twenty questions. The cycle
plans them (`plan`), and `PowerShellBatch.prefetch` runs them in one process: one script in which each
probe is a script block run on its own (its objects, its error records and its exit status kept apart,
so one failure does not fail the others), answering one JSON line per probe. The collectors do not
change: they still call ``run_ps(host, pipeline)`` and get a `ProbeResult` as if that pipeline had run
alone (`agent.checks._windows_ps.ps_argv`). Questions that were not planned (a fallback nobody
foresaw) still run on their own.

Probes cached on their inputs' mtimes (the Windows Update search, the registry version) are left out of
the batch while their cached answer is valid, and the batch's answers refill that cache. The slowest
probes run last, so a hung Windows Update search (killed at the batch's timeout) loses only itself and
those after it: the lines written before the kill are kept.

Recordings hold the batch as the one command it is. A replay whose batch differs from the recorded one
(``--only`` a subset of checks) is answered from the recorded batch's lines; a recording made before
batching (one command per probe) is answered probe by probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from agent.checks._windows_ps import POWERSHELL, PS_TIMEOUT, ps_argv
from agent.checks.antivirus import windows as antivirus
from agent.checks.base import network_list
from agent.checks.disk_encryption import windows as disk_encryption
from agent.checks.firewall import windows as firewall
from agent.checks.local_admin import windows as local_admin
from agent.checks.os_identity import windows as os_identity
from agent.checks.patches import windows as patches
from agent.checks.remote_access import windows as remote_access
from agent.checks.screen_lock import windows as screen_lock
from agent.checks.secure_boot import windows as secure_boot
from agent.checks.vpn import windows as vpn
from agent.probes import DEFAULT_TIMEOUT, NOT_RECORDED, OS_ERROR, Host, ProbeResult, Recording, WrappedHost

# Marks this agent's answer lines in the batch's output (anything else a probe prints is ignored).
MARKER = "@teleposture-probe "
# Extra seconds the whole batch gets beyond its slowest probe: the fast probes run before it.
BATCH_MARGIN = 60.0

_PRELUDE = ("[Console]::OutputEncoding = [System.Text.Encoding]::UTF8; $ProgressPreference = 'SilentlyContinue'; "
            "function Invoke-TelepostureProbe([int]$Id, [scriptblock]$Probe) { "
            "$watch = [Diagnostics.Stopwatch]::StartNew(); $rc = 0; "
            "try { $all = @(& $Probe 2>&1) } catch { $all = @($_); $rc = 1 }; "
            "$errors = @($all | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] }); "
            "$objects = @($all | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] }); "
            "if ($errors.Count -gt 0) { $rc = 1 }; "
            "$out = if ($objects.Count -gt 0) { [string]($objects | ConvertTo-Json -Depth 4) } else { '' }; "
            "$answer = [pscustomobject]@{id = $Id; rc = $rc; out = $out; err = [string]($errors | Out-String); "
            "ms = $watch.ElapsedMilliseconds}; "
            f"[Console]::Out.WriteLine('{MARKER}' + ($answer | ConvertTo-Json -Compress)); "
            "[Console]::Out.Flush() }; ")


@dataclass(frozen=True)
class PsProbe:
    """One PowerShell question of a cycle: the pipeline a collector passes to ``run_ps``."""

    pipeline: str
    timeout: float = PS_TIMEOUT
    cache_on: Tuple[str, ...] = ()


def plan(checks: Iterable[str], params: Mapping[str, Mapping[str, Any]]) -> List[PsProbe]:
    """The PowerShell probes the Windows collectors of ``checks`` will ask for, slowest last.

    Kept beside the collectors' constants (imported, never copied): a collector that asks for a
    pipeline not planned here still works, it only costs a process of its own.
    """
    wanted = set(checks) | {"os_identity"}
    probes: List[PsProbe] = []
    if "os_identity" in wanted or "patches" in wanted:
        probes.append(PsProbe(os_identity.VERSION_PS, cache_on=os_identity.SOFTWARE_HIVE))
    if "os_identity" in wanted:
        probes.append(PsProbe(os_identity.HARDWARE_PS,
                              cache_on=os_identity.SOFTWARE_HIVE + os_identity.SYSTEM_HIVE))
    if "disk_encryption" in wanted:
        # the CIM query is the fallback where the BitLocker module is missing; in the batch it is cheap
        probes += [PsProbe(disk_encryption.BITLOCKER_PS), PsProbe(disk_encryption.CIM_PS)]
    if "vpn" in wanted:
        probes += [PsProbe(vpn.ADAPTERS_PS), PsProbe(vpn.PROFILES_PS), PsProbe(vpn.ROUTES_PS)]
        try:
            networks = network_list(params.get("vpn", {}).get("corporate_networks") or [])
        except ValueError:
            networks = []  # the collector reports the bad parameter itself
        probes += [PsProbe(vpn.find_route_ps(vpn.probe_address(network))) for network in networks]
    if "firewall" in wanted:
        probes.append(PsProbe(firewall.PROFILES_PS))
    if "screen_lock" in wanted:
        probes.append(PsProbe(screen_lock.SETTINGS_PS))
    if "antivirus" in wanted:
        probes += [PsProbe(antivirus.DEFENDER_PS), PsProbe(antivirus.SECURITY_CENTER_PS)]
    if "secure_boot" in wanted:
        probes.append(PsProbe(secure_boot.SECURE_BOOT_PS))
    if "remote_access" in wanted:
        probes.append(PsProbe(remote_access.LISTEN_PS))
    if "local_admin" in wanted:
        # after the quick ones: off the domain network its directory lookup waits for the domain controller
        probes.append(PsProbe(local_admin.ADMIN_PS))
    if "patches" in wanted:
        probes += [PsProbe(patches.HISTORY_PS), PsProbe(patches.HOTFIX_PS), PsProbe(patches.STATE_PS),
                   PsProbe(patches.PENDING_PS, timeout=patches.SEARCH_TIMEOUT, cache_on=(patches.DATASTORE,))]
    unique: Dict[str, PsProbe] = {}
    for probe in probes:
        unique.setdefault(probe.pipeline, probe)
    # stable sort: the planned order, the slow Windows Update search last
    return sorted(unique.values(), key=lambda probe: probe.timeout)


def batch_script(pipelines: Sequence[str]) -> str:
    """The one script that runs ``pipelines`` in order, each as its own script block."""
    body = " ".join(f"Invoke-TelepostureProbe {index} {{ {pipeline} }};" for index, pipeline in enumerate(pipelines))
    return _PRELUDE + body


def batch_argv(pipelines: Sequence[str]) -> List[str]:
    return [POWERSHELL, "-NoProfile", "-NonInteractive", "-Command", batch_script(pipelines)]


def batch_pipelines(argv: Sequence[str]) -> Optional[List[str]]:
    """The pipelines of a batch command line (None: not a batch): how a replay reads a recorded batch."""
    if len(argv) != 5 or argv[0] != POWERSHELL or not argv[4].startswith(_PRELUDE):
        return None
    pipelines: List[str] = []
    rest = argv[4][len(_PRELUDE):]
    index = 0
    while rest:
        head = f"Invoke-TelepostureProbe {index} {{ "
        nxt = f" }}; Invoke-TelepostureProbe {index + 1} {{ "
        if not rest.startswith(head):
            return None
        rest = rest[len(head):]
        end = rest.find(nxt)
        if end < 0:
            if not rest.endswith(" };"):
                return None
            pipelines.append(rest[:-3])
            break
        pipelines.append(rest[:end])
        rest = rest[end + len(" }; "):]
        index += 1
    return pipelines


def split_answers(result: ProbeResult, pipelines: Sequence[str]) -> Dict[str, ProbeResult]:
    """Each pipeline's `ProbeResult` from the batch's output, as if it had run alone.

    A probe without an answer line carries the batch's own failure (not found, timed out, denied), or
    says the batch ended without answering it.
    """
    answers: Dict[str, ProbeResult] = {}
    for line in result.stdout.splitlines():
        if not line.startswith(MARKER):
            continue
        try:
            data = json.loads(line[len(MARKER):])
            index = int(data["id"])
            pipeline = pipelines[index]
            out = str(data.get("out") or "")
            answers[pipeline] = ProbeResult(
                "run", tuple(ps_argv(pipeline)), stdout=out + "\n" if out else "",
                stderr=str(data.get("err") or ""), rc=int(data.get("rc", 1)),
                duration=float(data.get("ms", 0)) / 1000.0)
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # a damaged line: that probe is reported as unanswered below
    # an unanswered probe ran (or waited) for what the batch lasted beyond the answered ones
    left = round(max(0.0, result.duration - sum(answer.duration for answer in answers.values())), 3)
    for pipeline in pipelines:
        if pipeline in answers:
            continue
        if result.error is not None:
            answers[pipeline] = ProbeResult("run", tuple(ps_argv(pipeline)), rc=None, error=result.error,
                                            timed_out=result.timed_out, duration=left,
                                            detail=f"PowerShell batch: {result.detail}".strip())
        else:
            first = result.stderr.strip().splitlines()[:1]
            answers[pipeline] = ProbeResult(
                "run", tuple(ps_argv(pipeline)), rc=None, error=OS_ERROR, duration=left,
                detail=f"no answer in the PowerShell batch (exit status {result.rc}"
                       f"{': ' + first[0][:160] if first else ''})")
    return answers


class PowerShellBatch(WrappedHost):
    """Wraps a cycle's host: planned PowerShell probes are answered from one batch, the rest passes on."""

    def __init__(self, inner: Host) -> None:
        super().__init__(inner)
        self._answers: Dict[Tuple[str, ...], ProbeResult] = {}

    def prefetch(self, probes: Sequence[PsProbe]) -> None:
        todo = [p for p in probes if not (p.cache_on and self.inner.cached(ps_argv(p.pipeline), p.cache_on))]
        if not todo:
            return
        pipelines = [p.pipeline for p in todo]
        timeout = max(p.timeout for p in todo) + BATCH_MARGIN
        result = self.inner.run(batch_argv(pipelines), timeout=timeout)
        if result.error == NOT_RECORDED:
            answers = self._from_recorded_batches(pipelines)
        else:
            answers = split_answers(result, pipelines)
            for probe in todo:
                answer = answers[probe.pipeline]
                if probe.cache_on and answer.error is None and answer.rc == 0:
                    self.inner.remember(ps_argv(probe.pipeline), probe.cache_on, answer)
        self._answers.update((answer.target, answer) for answer in answers.values())

    def _from_recorded_batches(self, pipelines: Sequence[str]) -> Dict[str, ProbeResult]:
        """A replay of another batch (``--only``): answers from the recorded batches' lines; an old
        recording's one-command-per-probe entries are answered by the inner host as they are asked."""
        found: Dict[str, ProbeResult] = {}
        for recorded in self.inner.recorded_runs():
            recorded_pipelines = batch_pipelines(recorded.target)
            if recorded_pipelines is not None:
                found.update(split_answers(recorded, recorded_pipelines))
        return {pipeline: found[pipeline] for pipeline in pipelines if pipeline in found}

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        answer = self._answers.get(tuple(argv))
        if answer is not None:
            return answer
        return self.inner.run(argv, timeout, cache_on)


def batched_host(host: Host, checks: Iterable[str], params: Mapping[str, Mapping[str, Any]]) -> Host:
    """``host`` itself off Windows; on Windows, a `PowerShellBatch` that has run the cycle's probes."""
    if host.platform != "windows":
        return host
    batch = PowerShellBatch(host)
    batch.prefetch(plan(checks, params))
    return batch


def expand_batches(recording: Recording) -> Recording:
    """The recording with each PowerShell batch replaced by one entry per probe, as if each had run alone:
    for reading a support recording probe by probe, and for tests that alter one probe's answer."""
    probes: List[ProbeResult] = []
    for probe in recording.probes.values():
        pipelines = batch_pipelines(probe.target) if probe.kind == "run" else None
        probes.extend(split_answers(probe, pipelines).values() if pipelines is not None else [probe])
    data = recording.to_json()
    data["probes"] = [probe.to_json() for probe in probes]
    return Recording.from_json(data)
