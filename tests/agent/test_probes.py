"""The probe layer: errors are data, recordings replay identically."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.probes import (
    NOT_FOUND,
    NOT_RECORDED,
    TIMEOUT,
    LiveHost,
    Recording,
    RecordingHost,
    ReplayHost,
    minimal_processes,
)


def test_missing_binary_is_an_error_naming_the_probe() -> None:
    result = LiveHost().run(["teleposture-no-such-binary", "--x"])
    assert result.error == NOT_FOUND
    assert not result.ok
    assert "teleposture-no-such-binary --x" in result.describe_failure()


def test_timeout_is_an_error_not_a_hang() -> None:
    result = LiveHost().run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    assert result.error == TIMEOUT and result.timed_out
    assert result.duration < 3
    assert "timed out" in result.describe_failure()


def test_nonzero_exit_is_not_a_probe_error() -> None:
    result = LiveHost().run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert result.error is None and result.rc == 3 and not result.ok


def test_permission_denied_file(tmp_path: Path) -> None:
    missing = LiveHost().read_text(str(tmp_path / "nope"))
    assert missing.error == NOT_FOUND


def test_cache_on_mtime(tmp_path: Path) -> None:
    marker = tmp_path / "lists"
    marker.write_text("a")
    counter = tmp_path / "count"
    script = f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1'); print(p.read_text())"
    host = LiveHost(cache_dir=tmp_path / "cache")
    first = host.run([sys.executable, "-c", script], cache_on=[str(marker)])
    second = LiveHost(cache_dir=tmp_path / "cache").run([sys.executable, "-c", script], cache_on=[str(marker)])
    assert first.stdout == second.stdout == "1\n"
    marker.write_text("changed content")
    third = host.run([sys.executable, "-c", script], cache_on=[str(marker)])
    assert third.stdout == "2\n"


def test_record_then_replay_answers_the_same(tmp_path: Path) -> None:
    live = RecordingHost(LiveHost())
    run = live.run([sys.executable, "-c", "print('hello')"])
    read = live.read_text(str(Path(__file__)))
    procs = live.processes()
    ifaces = live.interfaces()
    path = tmp_path / "rec.json"
    live.recording.save(path)
    assert json.loads(path.read_text())["schema"] == "teleposture/recording/v1"

    replay = ReplayHost(Recording.load(path))
    assert replay.run([sys.executable, "-c", "print('hello')"]) == run
    assert replay.read_text(str(Path(__file__))) == read
    assert replay.processes() == minimal_processes(procs)  # a recording keeps less of each process
    assert replay.interfaces() == ifaces
    assert replay.now() == live.now()
    assert replay.run(["something", "else"]).error == NOT_RECORDED


def test_procfs_files_are_readable() -> None:
    # /proc/sys files refuse a single multi-megabyte read() with ENOMEM on some kernels.
    result = LiveHost().read_text("/proc/sys/kernel/osrelease")
    assert result.ok and result.stdout.strip()
