"""Windows at one PowerShell per cycle: the batch script, its answers, replays and the probe cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

from agent.checks._windows_batch import (
    MARKER,
    PowerShellBatch,
    PsProbe,
    batch_argv,
    batch_pipelines,
    expand_batches,
    plan,
    split_answers,
)
from agent.checks._windows_ps import POWERSHELL, ps_argv
from agent.checks.collectors import REGISTRY, collect
from agent.checks.cycle import run_cycle
from agent.checks.os_identity import windows as os_identity
from agent.checks.patches import windows as patches
from agent.policy import POLICIES_DIR, check_params, checks_used, load_policy_file
from agent.probes import (
    DEFAULT_TIMEOUT,
    NOT_FOUND,
    NOT_RECORDED,
    TIMEOUT,
    Host,
    ProbeResult,
    Recording,
    ReplayHost,
    WrappedHost,
)

WINDOWS = Path(__file__).resolve().parents[2] / "fixtures" / "windows"
RECORDINGS = sorted(p for p in WINDOWS.glob("*/*.json") if p.name != "expected.json")
POLICY = load_policy_file(POLICIES_DIR / "ma-telework-baseline.json")


class Counting(WrappedHost):
    """Passes everything to ``inner`` and counts the PowerShell processes asked for."""

    def __init__(self, inner: Host) -> None:
        super().__init__(inner)
        self.powershell: List[Sequence[str]] = []

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
        if argv and argv[0] == POWERSHELL:
            self.powershell.append(argv)
        return self.inner.run(argv, timeout, cache_on)


@pytest.mark.parametrize("path", RECORDINGS, ids=[f"{p.parent.name}/{p.stem}" for p in RECORDINGS])
def test_a_replayed_windows_cycle_starts_one_powershell(path: Path) -> None:
    host = Counting(ReplayHost(Recording.load(path)))
    cycle = run_cycle(host, POLICY)
    assert len(host.powershell) == 1, [argv[-1][:120] for argv in host.powershell]
    # the one command is exactly the recorded one: every planned pipeline is spelled in the recording
    assert batch_pipelines(host.powershell[0]) == [p.pipeline for p in plan(checks_used(POLICY), check_params(POLICY))]
    assert cycle.outcomes["os_identity"].state == "ok"


def test_the_batch_command_reads_back_into_its_pipelines() -> None:
    pipelines = ["Get-Thing | Select-Object A,@{n='B';e={ $_.B }}", "$x = 1; if ($x) { [pscustomobject]@{y = $x} }",
                 "Get-Other"]
    argv = batch_argv(pipelines)
    assert argv[:4] == [POWERSHELL, "-NoProfile", "-NonInteractive", "-Command"]
    assert batch_pipelines(argv) == pipelines
    assert batch_pipelines(ps_argv("Get-Thing")) is None  # one probe on its own is not a batch


def _line(index: int, out: str = "", err: str = "", rc: int = 0, ms: int = 250) -> str:
    return MARKER + json.dumps({"id": index, "rc": rc, "out": out, "err": err, "ms": ms}) + "\r\n"


def test_each_probe_keeps_its_own_errors() -> None:
    pipelines = ["Get-A", "Get-B", "Get-C"]
    denied = ("Get-B : Access denied\r\n    + CategoryInfo          : PermissionDenied: (:) [Get-B], "
              "CimException\r\n")
    stdout = ("WARNING: something a probe printed\r\n" + _line(0, out='{\r\n    "A":  1\r\n}') +
              _line(1, err=denied, rc=1) + _line(2, out="[]"))
    answers = split_answers(ProbeResult("run", tuple(batch_argv(pipelines)), stdout=stdout, duration=2.0), pipelines)
    assert answers["Get-A"].ok and json.loads(answers["Get-A"].stdout) == {"A": 1}
    assert answers["Get-A"].target == tuple(ps_argv("Get-A"))
    assert (answers["Get-B"].rc, answers["Get-B"].stderr) == (1, denied)
    assert answers["Get-C"].ok and answers["Get-C"].stdout == "[]\n"


def test_a_batch_killed_at_its_timeout_keeps_the_answers_given_before() -> None:
    pipelines = ["Get-A", "Search-Updates"]
    result = ProbeResult("run", tuple(batch_argv(pipelines)), stdout=_line(0, out="1", ms=1500), rc=None,
                         timed_out=True, error=TIMEOUT, duration=361.5)
    answers = split_answers(result, pipelines)
    assert answers["Get-A"].ok and answers["Get-A"].stdout == "1\n"
    late = answers["Search-Updates"]
    assert (late.error, late.timed_out, late.duration) == (TIMEOUT, True, 360.0)


def test_no_powershell_at_all_is_every_probe_named_not_found() -> None:
    pipelines = ["Get-A", "Get-B"]
    result = ProbeResult("run", tuple(batch_argv(pipelines)), rc=None, error=NOT_FOUND, detail="powershell.exe")
    answers = split_answers(result, pipelines)
    assert {a.error for a in answers.values()} == {NOT_FOUND}
    assert answers["Get-B"].target == tuple(ps_argv("Get-B"))


def test_an_answer_missing_from_a_batch_that_exited_is_an_error_not_an_empty_answer() -> None:
    pipelines = ["Get-A", "Get-B"]
    result = ProbeResult("run", tuple(batch_argv(pipelines)), stdout=_line(0, out="1") + MARKER + "{broken\r\n",
                         stderr="Out of memory\r\n", rc=-1073741571)
    answers = split_answers(result, pipelines)
    assert answers["Get-B"].error is not None and "no answer in the PowerShell batch" in answers["Get-B"].detail
    assert "Out of memory" in answers["Get-B"].detail


def test_unplanned_probes_still_run_on_their_own() -> None:
    recording = Recording.load(WINDOWS / "11-24h2" / "baseline.json")
    recording.probes[json.dumps(["run", ps_argv("Get-Unplanned")])] = ProbeResult(
        "run", tuple(ps_argv("Get-Unplanned")), stdout="7\n")
    host = Counting(ReplayHost(recording))
    batch = PowerShellBatch(host)
    batch.prefetch(plan(["firewall"], {}))
    assert batch.run(ps_argv("Get-Unplanned")).stdout == "7\n"
    assert len(host.powershell) == 2


def test_replaying_a_subset_of_checks_reads_the_recorded_batch() -> None:
    """`check --replay --only firewall` plans another batch than the one recorded: it is answered from the
    recorded batch's lines, not reported as missing."""
    recording = Recording.load(WINDOWS / "10-22h2" / "firewall-public-off.json")
    outcomes = collect(ReplayHost(recording), ["firewall"], {})
    assert outcomes["firewall"].state == "ok" and outcomes["firewall"].facts["enabled"] is False


def test_recordings_made_before_batching_still_replay() -> None:
    """One command per probe (recordings made by earlier agents, support bundles): answered probe by probe."""
    old = expand_batches(Recording.load(WINDOWS / "11-24h2-fr" / "baseline.json"))
    assert not any(batch_pipelines(p.target) for p in old.probes.values())
    cycle = run_cycle(ReplayHost(old), POLICY)
    assert cycle.status == "compliant", [(r.rule_id, r.reason) for r in cycle.results if r.status != "pass"]


class Cache(Counting):
    """A host whose probe cache holds answers (as LiveHost's mtime-keyed cache does)."""

    def __init__(self, inner: Host) -> None:
        super().__init__(inner)
        self.store: dict = {}

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
        if cache_on and tuple(argv) in self.store:
            return self.store[tuple(argv)]
        return super().run(argv, timeout, cache_on)

    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        return self.store.get(tuple(argv)) if cache_on else None

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        self.store[tuple(argv)] = result


def test_the_batch_fills_the_probe_cache_and_a_warm_batch_leaves_cached_probes_out() -> None:
    recording = expand_batches(Recording.load(WINDOWS / "11-24h2" / "baseline.json"))
    host = Cache(ReplayHost(recording))

    def answer(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, cache_on: Sequence[str] = ()) -> ProbeResult:
        # a live batch: answers every pipeline of the script from the expanded recording
        lines = []
        for index, pipeline in enumerate(batch_pipelines(argv) or []):
            single = recording.probes.get(json.dumps(["run", ps_argv(pipeline)], ensure_ascii=False))
            assert single is not None, pipeline
            lines.append(_line(index, out=single.stdout.rstrip("\n"), err=single.stderr, rc=single.rc or 0))
        return ProbeResult("run", tuple(argv), stdout="".join(lines), duration=3.0)

    host.inner.run = answer  # type: ignore[method-assign]
    probes = plan(checks_used(POLICY), check_params(POLICY))
    PowerShellBatch(host).prefetch(probes)
    cached = {probe.pipeline for probe in probes if probe.cache_on}
    assert {os_identity.VERSION_PS, patches.PENDING_PS} <= cached
    assert {argv[-1] for argv in map(list, host.store)} == {ps_argv(p)[-1] for p in cached}
    # the next cycle: the cached probes are not asked again, the others are, still in one process
    warm = PowerShellBatch(host)
    warm.prefetch(probes)
    assert len(host.powershell) == 2
    assert set(batch_pipelines(host.powershell[1]) or []) == {p.pipeline for p in probes} - cached
    assert warm.run(ps_argv(patches.PENDING_PS), cache_on=[patches.DATASTORE]).ok


def test_the_slow_windows_update_search_runs_last() -> None:
    probes: List[PsProbe] = plan(["patches", "vpn", "antivirus"], {"vpn": {"corporate_networks": ["10.0.0.0/8"]}})
    assert probes[-1].pipeline == patches.PENDING_PS
    assert any("Find-NetRoute -RemoteIPAddress '10.0.0.1'" in p.pipeline for p in probes)
    assert probes[0].pipeline == os_identity.VERSION_PS


def test_not_recorded_batch_without_recorded_lines_leaves_probes_to_the_inner_host() -> None:
    recording = Recording(platform="windows")
    batch = PowerShellBatch(ReplayHost(recording))
    batch.prefetch(plan(["firewall"], {}))
    assert batch.run(ps_argv(os_identity.VERSION_PS)).error == NOT_RECORDED


def test_registry_families_on_windows_are_all_planned() -> None:
    """Every family with a Windows collector has its PowerShell questions in the plan (cheap guard: the
    plan names each family's module constants)."""
    planned = " ".join(p.pipeline for p in plan(REGISTRY, {"vpn": {"corporate_networks": ["10.0.0.0/8"]}}))
    for needle in ("Get-BitLockerVolume", "Get-NetAdapter", "Get-NetFirewallProfile", "Get-MpComputerStatus",
                   "SecurityCenter2", "Get-HotFix", "Microsoft.Update.Session", "ScreenSaveActive",
                   "Win32_ComputerSystem"):
        assert needle in planned, needle
