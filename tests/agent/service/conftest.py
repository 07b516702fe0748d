from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from agent.probes import Recording
from agent.service.config import Settings, load_settings
from tests.agent.service.fakecollector import FakeCollector
from tests.agent.service.realcollector import RealCollector


@pytest.fixture()
def fake() -> Iterator[FakeCollector]:
    collector = FakeCollector()
    yield collector
    collector.close()


def make_settings(state_dir: Path, **flags: object) -> Settings:
    values: dict = {"state_dir": str(state_dir)}
    values.update({k: v for k, v in flags.items()})
    return load_settings(values, environ={"TELEPOSTURE_CONFIG": ""})


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCollector]:
    """A real `teleposture-server serve` for the module's tests (test_faults.py runs its own)."""
    real = RealCollector(tmp_path_factory.mktemp("collector"))
    real.start()
    yield real
    real.stop()


@pytest.fixture(scope="session")
def recording() -> Path:
    """A real recording of the test VM (fixtures/SOURCES.md); agent processes replay it for fast cycles."""
    return Path(__file__).parent / "fixtures" / "debian-12-test-vm.json"


@pytest.fixture()
def replay_host(recording: Path):
    from agent.probes import ReplayHost

    return ReplayHost(Recording.load(recording))


def agent_env(state_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({"TELEPOSTURE_STATE_DIR": str(state_dir), "TELEPOSTURE_CONFIG": ""})
    return env
