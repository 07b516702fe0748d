"""Shared fixtures for the installer tests: the repository paths and one wheelhouse per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLERS = REPO / "installers"
LINUX = INSTALLERS / "linux"
UNIT = LINUX / "teleposture-agent.service"


def run(argv: list[str], timeout: float = 120, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, and on failure show what it printed (the assertion message is the diagnosis)."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def need_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup-dev.sh installs the Debian packages)")


def _minor(python: str) -> str:
    return run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The agent's wheel and its runtime dependencies for /usr/bin/python3, built once (PyPI access).

    The packages run on the system Python; its own pip builds the wheels, or, when Debian's
    python3-pip is not installed, this test's interpreter if it has the same X.Y (same wheel tags).
    """
    system = "/usr/bin/python3"
    if not Path(system).exists():
        pytest.skip("/usr/bin/python3 is absent: the Linux packages target the system Python")
    builder = system
    if subprocess.run([system, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        if _minor(sys.executable) != _minor(system):
            pytest.skip(f"{system} has no pip (python3-pip) and this interpreter is Python {_minor(sys.executable)}, "
                        f"not {_minor(system)}: cannot build wheels for the system Python")
        builder = sys.executable
    out = tmp_path_factory.mktemp("wheelhouse")
    run(["bash", str(INSTALLERS / "build-wheelhouse.sh"), str(out)], timeout=300,
        env={**os.environ, "PYTHON": builder})
    yield out
