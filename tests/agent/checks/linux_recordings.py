"""Running a check family's Linux collector on a recorded fixture, and on this machine through a recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from agent.checks.base import CheckFamily, CheckOutcome, run_collector
from agent.probes import LiveHost, Recording, RecordingHost, ReplayHost

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "linux"


def replay_fixture(family: CheckFamily, relative: str, params: Optional[Mapping[str, Any]] = None) -> CheckOutcome:
    """The family's outcome for ``tests/fixtures/linux/<relative>``."""
    return run_collector(family, ReplayHost(Recording.load(FIXTURES / relative)), params)


def assert_live_recording_replays(family: CheckFamily, path: Path, live: Optional[LiveHost] = None,
                                  params: Optional[Mapping[str, Any]] = None) -> None:
    """The family run on this machine, recorded to ``path`` and replayed, gives the very same outcome."""
    recording = RecordingHost(live or LiveHost())
    first = run_collector(family, recording, params)
    recording.recording.save(path)
    assert run_collector(family, ReplayHost(Recording.load(path)), params).to_json() == first.to_json()
