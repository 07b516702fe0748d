"""Writing a file so that a crash or a power cut leaves either the old content or the new one, never a mix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def atomic_write(path: Path, data: Union[bytes, str], mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), with permissions ``mode``.

    The content goes to a uniquely named temporary file in the same directory (a rename is atomic only
    within one file system), is flushed to disk, then renamed over ``path``; the directory is flushed
    too, so the rename itself survives a power cut. ``mode`` is set exactly, whatever the umask: a private
    key must not be readable by others for a moment. Missing parent directories are created.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            else:  # Windows before Python 3.13: only the read-only bit exists there anyway
                os.chmod(temporary, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        # the temporary file must not outlive a failed write (a full disk, an interrupt)
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk; a no-op where the OS has no
    such thing (Windows cannot open a directory as a file)."""
    if os.name != "posix":
        return
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
