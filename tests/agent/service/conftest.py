from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from agent.config import Settings, load_settings
from agent.probes import LiveHost, Recording, RecordingHost
from tests.agent.service.fakecollector import FakeCollector


@pytest.fixture()
def fake() -> Iterator[FakeCollector]:
    collector = FakeCollector()
    yield collector
    collector.close()


def make_settings(state_dir: Path, **flags: object) -> Settings:
    values = {"state_dir": str(state_dir)}
    values.update({k: v for k, v in flags.items()})
    return load_settings(values, environ={"TELEPOSTURE_CONFIG": ""})


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's probes, recorded once per session and replayed by agent processes (fast cycles)."""
    from agent.cycle import run_cycle
    from agent.policy import baseline

    host = RecordingHost(LiveHost())
    run_cycle(host, baseline())
    host.interfaces()
    host.read_text("/proc/net/route")
    path = tmp_path_factory.mktemp("recording") / "this-machine.json"
    host.recording.save(path)
    return path


@pytest.fixture()
def replay_host(recording: Path):
    from agent.probes import ReplayHost

    return ReplayHost(Recording.load(recording))


def agent_env(state_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({"TELEPOSTURE_STATE_DIR": str(state_dir), "TELEPOSTURE_CONFIG": ""})
    return env
