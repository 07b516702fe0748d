"""Telling a full or read-only disk from a damaged file, and keeping the current storage condition.

A laptop's disk fills up; a file system goes read-only after an I/O error. Neither damages the outbox or
the state database: the agent must keep every file as it is, skip the cycle and resume when space comes
back. Only a file SQLite says is damaged (SQLITE_CORRUPT, SQLITE_NOTADB) may be moved aside.

The condition (``disk full: <path>, <free bytes>``) must reach `teleposture-agent status` although
nothing can be written while the disk is full: ``condition.json`` is allocated once, while there is
space, and later overwritten in place (rewriting allocated blocks needs no new ones on tmpfs, ext4, xfs,
NTFS). Where even that fails, `status` measures the free space itself.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar, Union

T = TypeVar("T")

CONDITION_FILE = "condition.json"
CONDITION_SIZE = 4096

# SQLite primary result codes (sqlite3.h)
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO}
# Python < 3.11 has no sqlite_errorcode: the messages SQLite gives for these codes
_STORAGE_MESSAGES = ("database or disk is full", "readonly database", "disk i/o error",
                     "unable to open database file", "read-only file system", "no space left")
_CORRUPT_MESSAGES = ("malformed", "file is not a database", "file is encrypted or is not a database")


class StorageUnavailable(RuntimeError):
    """The state directory's disk is full or read-only: nothing was changed, retry later."""

    def __init__(self, path: Union[str, Path], read_only: bool, free_bytes: Optional[int], cause: str) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.free_bytes = free_bytes
        self.cause = cause
        if read_only:
            text = f"read-only file system: {self.path}"
        else:
            text = f"disk full: {self.path}, {free_bytes if free_bytes is not None else 'unknown'} bytes free"
        super().__init__(text)

    @property
    def kind(self) -> str:
        return "read_only" if self.read_only else "disk_full"


def free_bytes(path: Union[str, Path]) -> Optional[int]:
    """Bytes an unprivileged writer may still use on ``path``'s file system (None where unknown)."""
    try:
        stats = os.statvfs(str(path))
    except (OSError, AttributeError):  # AttributeError: Windows has no statvfs
        return None
    return int(stats.f_bavail * stats.f_frsize)


def is_read_only(path: Union[str, Path]) -> bool:
    try:
        stats = os.statvfs(str(path))
    except (OSError, AttributeError):
        return False
    return bool(stats.f_flag & getattr(os, "ST_RDONLY", 1))


def _sqlite_code(exc: sqlite3.Error) -> Optional[int]:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_storage_error(exc: BaseException) -> bool:
    """A full, read-only or failing disk (not a damaged file): the data on disk is as it was."""
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        if code is not None:
            return code in (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN)
        text = str(exc).lower()
        return any(m in text for m in _STORAGE_MESSAGES)
    return False


def needs_reopen(exc: BaseException) -> bool:
    """A read-only or unopenable file: SQLite may have opened the connection read-only for good, so it must
    be reopened once the disk is writable. Not for a full disk: closing the last connection to a WAL
    database checkpoints and deletes its -wal/-shm, and reopening would create them again on a full disk."""
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        if code is not None:
            return code in (SQLITE_READONLY, SQLITE_CANTOPEN)
        text = str(exc).lower()
        return "readonly" in text or "unable to open" in text or "read-only" in text
    return isinstance(exc, OSError) and exc.errno == errno.EROFS


def is_corruption(exc: BaseException) -> bool:
    """SQLite says the file is damaged or not a database: the only reason to move a file aside."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = _sqlite_code(exc)
    if code is not None:
        return code in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return any(m in text for m in _CORRUPT_MESSAGES)


def storage_unavailable(exc: BaseException, path: Union[str, Path]) -> StorageUnavailable:
    directory = Path(path).parent if Path(path).suffix else Path(path)
    read_only = is_read_only(directory) or (isinstance(exc, OSError) and exc.errno == errno.EROFS) \
        or "readonly" in str(exc).lower().replace("-", "")
    return StorageUnavailable(path, read_only, free_bytes(directory), f"{type(exc).__name__}: {exc}")


# -- condition.json: the current storage condition, writable on a full disk ------------------------------

def prepare_condition_file(root: Path) -> None:
    """Allocate condition.json (CONDITION_SIZE bytes) while there is space; harmless when it exists."""
    path = root / CONDITION_FILE
    if path.exists() and path.stat().st_size >= CONDITION_SIZE:
        return
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.write(fd, _padded({}))
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _padded(condition: Dict[str, Any]) -> bytes:
    data = json.dumps(condition, sort_keys=True).encode("utf-8")[:CONDITION_SIZE - 1]
    return data + b"\n" + b" " * (CONDITION_SIZE - len(data) - 1)


def write_condition(root: Path, condition: Dict[str, Any]) -> bool:
    """Overwrite condition.json in place (no new blocks, no new file). False when even that failed."""
    try:
        fd = os.open(str(root / CONDITION_FILE), os.O_WRONLY)
    except OSError:
        return False
    try:
        os.pwrite(fd, _padded(condition), 0) if hasattr(os, "pwrite") else os.write(fd, _padded(condition))
        os.fsync(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def read_condition(root: Path) -> Dict[str, Any]:
    try:
        text = (root / CONDITION_FILE).read_text(encoding="utf-8").strip()
        data = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite may already have rolled it back itself after
    SQLITE_FULL or an I/O error, and a "no transaction is active" error must not hide the real one."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def move_database_aside(path: Path) -> Path:
    """Rename a damaged SQLite database, with its -wal and -shm files, to ``<name>.corrupt-<UTC time>``
    (``-<n>`` added when that exists), keeping it for a post-mortem; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            source.replace(Path(str(target) + suffix))
    return target


_READ_ATTEMPTS = 3


def read_untouched(path: Path, read: Callable[[sqlite3.Connection], T], timeout: float = 5.0) -> T:
    """``read(connection)`` on an SQLite database without creating, moving or writing a file: `status` and
    `check` look at the service's databases while it runs, as any user.

    Raises OSError (FileNotFoundError, PermissionError) when the file cannot be reached, sqlite3.Error when
    it is not a readable database.
    """
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    for _ in range(_READ_ATTEMPTS):
        before = os.stat(path)
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        live = wal.exists() and shm.exists()
        # A writer (the service) has its log and index open: read through them like any reader. Without
        # them the file alone is the database, and ``immutable`` stops SQLite from creating a -wal and a
        # -shm that a read-only connection could not remove (left behind, root's files in the service's
        # directory).
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}",
                               uri=True, timeout=timeout)
        try:
            result = read(conn)
        finally:
            conn.close()
        after = os.stat(path)
        # ``immutable`` reads are safe only if no writer opened the file meanwhile: else read again.
        if live or (not wal.exists() and (before.st_ino, before.st_size, before.st_mtime_ns)
                    == (after.st_ino, after.st_size, after.st_mtime_ns)):
            return result
    raise sqlite3.OperationalError(f"{path} kept changing while it was read ({_READ_ATTEMPTS} attempts)")
