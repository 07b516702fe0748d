"""common.files.atomic_write: the content, the exact mode, no temporary file left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common import files
from common.files import atomic_write


@pytest.mark.parametrize(("data", "expected"), [
    (b"\x00binary\xff", b"\x00binary\xff"),
    ("texte accentué, نص", "texte accentué, نص".encode()),
    (b"", b""),
], ids=["bytes", "utf-8 text", "empty"])
def test_writes_the_content(tmp_path: Path, data: bytes | str, expected: bytes) -> None:
    path = tmp_path / "file"
    atomic_write(path, data)
    assert path.read_bytes() == expected


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_mode_is_exact_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "file", b"x", mode=mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "file").stat().st_mode) == mode


def test_replaces_an_existing_file_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"old content, longer than the new one")
    os.chmod(path, 0o666)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_creates_parents_and_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.json"
    atomic_write(path, "{}")
    atomic_write(path, "[]")
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_a_failed_write_keeps_the_old_content_and_no_temporary(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_flushes_the_file_and_then_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        flushed.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    atomic_write(tmp_path / "file", b"x")
    assert flushed == ["file", "dir"]
