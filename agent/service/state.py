"""The agent's state directory: identity, device key, pinned server key, last good policy, counters.

Layout (directory 0700, secrets 0600):

    identity.json     device id, collector URL, pinned server key, TLS settings used at enrolment
    device_key.pem    the device's Ed25519 private key (PKCS#8, 0600)
    policy.json       the last good signed policy bundle {payload, signature, key_id}
    state.db          SQLite: the report sequence counter and the status `status` shows
    outbox.db         the spool of signed reports (agent.service.outbox)
    last-report.json  a copy of the last signed report payload, for `teleposture-agent privacy` (0644)
    cache/            probe cache (mtime-keyed)

The sequence counter lives in state.db, apart from the outbox, so that a corrupted outbox that is moved
aside never makes the agent reuse a sequence number the collector has already seen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import protocol
from agent.service.storage import (
    is_corruption,
    is_storage_error,
    move_database_aside,
    needs_reopen,
    read_untouched,
    storage_unavailable,
)
from agent.service.storage import rollback as _rollback
from common.files import atomic_write

IDENTITY_SCHEMA = "teleposture/identity/v1"
LAST_REPORT_FILE = "last-report.json"

log = logging.getLogger(__name__)

_SEQ_QUERY = "SELECT value FROM counters WHERE name='seq'"
_STATUS_QUERY = "SELECT name, value FROM status"


class StateError(RuntimeError):
    """The state directory cannot be used; the message says why and what to do."""


class NotEnrolled(StateError):
    pass


def keep_last_report(state_dir: Path, payload: Mapping[str, Any]) -> None:
    """Called by the service after it signed a report (the copy `privacy` shows)."""
    atomic_write(state_dir / LAST_REPORT_FILE, json.dumps(payload, sort_keys=True, ensure_ascii=False).encode(),
                 mode=0o644)


@dataclass(frozen=True)
class Identity:
    device_id: str
    server_url: str
    server_key: str  # base64 Ed25519 public key, pinned at enrolment
    server_key_id: str
    enrolled_at: str
    ca_file: Optional[str] = None
    allow_http: bool = False
    org_unit: Optional[str] = None
    machine_id: Optional[str] = None  # the machine enrolled; another one using this directory is a clone

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["schema"] = IDENTITY_SCHEMA
        return data

    @classmethod
    def from_json(cls, data: Any, source: str) -> Identity:
        if not isinstance(data, dict) or data.get("schema") != IDENTITY_SCHEMA:
            raise StateError(f"{source}: not a Teleposture identity file (expected schema {IDENTITY_SCHEMA}); "
                             "enrol again with `teleposture-agent enroll --force`")
        try:
            return cls(
                device_id=str(data["device_id"]), server_url=str(data["server_url"]),
                server_key=str(data["server_key"]), server_key_id=str(data["server_key_id"]),
                enrolled_at=str(data["enrolled_at"]),
                ca_file=None if data.get("ca_file") is None else str(data["ca_file"]),
                allow_http=bool(data.get("allow_http", False)),
                org_unit=None if data.get("org_unit") is None else str(data["org_unit"]),
                machine_id=str(data["machine_id"]) if data.get("machine_id") else None,
            )
        except KeyError as exc:
            raise StateError(f"{source}: identity file lacks {exc}; enrol again with --force") from exc


class FileLock:
    """An exclusive inter-process lock (flock / msvcrt) on a file; released by the OS if the process dies.

    Each acquisition opens its own descriptor, so two threads of one process exclude each other too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def acquire(self, timeout: Optional[float] = None) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if _try_lock(fd):
                self._fd = fd
                return True
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.02)

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.identity_path = self.root / "identity.json"
        self.key_path = self.root / "device_key.pem"
        self.policy_path = self.root / "policy.json"
        self.db_path = self.root / "state.db"
        self.outbox_path = self.root / "outbox.db"
        self.cache_dir = self.root / "cache"
        # Held while a seq is allocated, signed and spooled: the outbox then only ever grows in seq order.
        self.produce_lock = FileLock(self.root / "produce.lock")
        self.upload_lock_path = self.root / "upload.lock"
        self._db: Optional[sqlite3.Connection] = None
        self._db_lock = threading.Lock()
        self.rebuilt: Optional[str] = None  # why state.db was moved aside and rebuilt, if it was

    # -- directory ---------------------------------------------------------------------------------
    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # only when needed: a read-only disk must not stop the agent from reading its state
            if os.name == "posix" and self.root.stat().st_mode & 0o777 != 0o700:
                os.chmod(self.root, 0o700)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.root}: {exc.strerror or exc} "
                             "(run as the service user, or choose another with --state-dir)") from exc

    def upload_lock(self) -> FileLock:
        return FileLock(self.upload_lock_path)

    # -- identity and keys --------------------------------------------------------------------------
    def is_enrolled(self) -> bool:
        return self.identity_path.exists() and self.key_path.exists()

    def load_identity(self) -> Identity:
        if not self.identity_path.exists():
            raise NotEnrolled(f"this agent is not enrolled (no {self.identity_path}); run "
                              "`teleposture-agent enroll --server URL --token TOKEN` first")
        try:
            data = json.loads(self.identity_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self.identity_path}: {exc}; enrol again with --force") from exc
        return Identity.from_json(data, str(self.identity_path))

    def save_identity(self, identity: Identity) -> None:
        atomic_write(self.identity_path, (json.dumps(identity.to_json(), indent=2, sort_keys=True) + "\n").encode())

    def load_private_key(self) -> Ed25519PrivateKey:
        try:
            return protocol.load_private_key(self.key_path)
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot load the device key {self.key_path}: {exc}; enrol again with --force") from exc

    def save_private_key(self, key: Ed25519PrivateKey) -> None:
        protocol.save_private_key(key, self.key_path)

    # -- policy -------------------------------------------------------------------------------------
    def load_policy_bundle(self) -> Optional[Dict[str, Any]]:
        """The stored bundle, or None; its signature is checked by the caller with the pinned key."""
        try:
            data = json.loads(self.policy_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the stored policy {self.policy_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError(f"{self.policy_path}: expected a signed policy bundle object")
        return data

    def save_policy_bundle(self, bundle: Mapping[str, Any]) -> None:
        # assignment*: the server-signed assignment counter the next bundle is compared with (no rollback)
        keep = {name: bundle[name] for name in ("payload", "signature", "key_id", "assignment", "assignment_signature")
                if name in bundle}
        atomic_write(self.policy_path, (json.dumps(keep, sort_keys=True) + "\n").encode(), mode=0o644)

    # -- state.db: counters and status ----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.ensure()
            try:
                self._db = self._open_db()
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    if is_storage_error(exc):
                        raise storage_unavailable(exc, self.db_path) from exc
                    raise
                # Counters and status only: rebuilt from the identity, the outbox and the collector's last_seq.
                moved = move_database_aside(self.db_path)
                self.rebuilt = f"state database {self.db_path} was unreadable ({exc}); moved aside to {moved} " \
                               "and rebuilt (seq from the outbox and the collector)"
                log.error(self.rebuilt, extra={"event": "state_rebuilt", "moved_to": str(moved)})
                self._db = self._open_db()
        return self._db

    def _open_db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.db_path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA cache_size=-128")  # a few rows: no need for SQLite's 2 MiB default
            conn.execute("PRAGMA wal_autocheckpoint=100")  # a small WAL (400 KiB), not 4 MiB, on a small disk
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            # CREATE only when missing: a full disk must not stop the agent from reading what it has
            if "counters" not in tables:
                conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            if "status" not in tables:
                conn.execute("CREATE TABLE status (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _drop_connection(self) -> None:
        """Reconnect next time: a connection SQLite opened read-only (read-only disk) stays read-only."""
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT) under the state lock; a full or read-only disk
        raises StorageUnavailable, changing nothing."""
        with self._db_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                self._raise_if_storage(exc)
                raise

    def _write(self, statements: List[Tuple[str, Tuple[Any, ...]]]) -> None:
        with self._transaction() as conn:
            for sql, params in statements:
                conn.execute(sql, params)

    def next_seq(self, floor: int = 0) -> int:
        """Allocate the next report sequence number, durably, before anything is signed with it.

        Never at or below ``floor`` (the highest seq in the outbox: a deleted or rolled-back state.db must
        not make the agent reuse one). A process killed after this returns leaves a gap, never a reused number.
        """
        with self._transaction() as conn:
            seq = max(self._seq(conn), floor) + 1
            self._set_seq(conn, seq)
        return seq

    def raise_seq(self, at_least: int) -> Optional[int]:
        """Move the counter up to ``at_least`` (the collector's last accepted seq); the old value if it moved."""
        with self._transaction() as conn:
            current = self._seq(conn)
            if current < at_least:
                self._set_seq(conn, at_least)
        return None if current >= at_least else current

    @staticmethod
    def _seq(conn: sqlite3.Connection) -> int:
        row = conn.execute(_SEQ_QUERY).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _set_seq(conn: sqlite3.Connection, seq: int) -> None:
        conn.execute("INSERT INTO counters(name, value) VALUES('seq', ?) "
                     "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (seq,))

    def _raise_if_storage(self, exc: sqlite3.Error) -> None:
        """A full or read-only disk becomes StorageUnavailable (reconnecting next time where SQLite keeps the
        connection read-only); any other error is left to the caller to re-raise."""
        if is_storage_error(exc):
            if needs_reopen(exc):
                self._drop_connection()
            raise storage_unavailable(exc, self.db_path) from exc

    def _read(self, sql: str) -> List[Any]:
        with self._db_lock:
            try:
                return self._conn().execute(sql).fetchall()
            except sqlite3.OperationalError as exc:
                self._raise_if_storage(exc)
                raise

    def last_seq(self) -> int:
        rows = self._read(_SEQ_QUERY)
        return int(rows[0][0]) if rows else 0

    def status(self) -> Dict[str, Any]:
        return _decode_status(self._read(_STATUS_QUERY))

    def update_status(self, **fields: Any) -> None:
        if not fields:
            return
        self._write([("INSERT INTO status(name, value) VALUES(?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, json.dumps(value, sort_keys=True)))
                     for name, value in fields.items()])

    def peek_status(self) -> Dict[str, Any]:
        """The saved status, read-only: never creates, moves or writes a file (for `status`)."""
        if not self.db_path.exists():
            return {}
        return read_status_file(self.db_path)

    def close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def read_status_file(db_path: Path) -> Dict[str, Any]:
    """The status saved in a state.db (and ``seq_counter``), read without creating, moving or writing a file
    (agent.service.storage.read_untouched: its errors)."""
    def read(conn: sqlite3.Connection) -> Dict[str, Any]:
        out = _decode_status(conn.execute(_STATUS_QUERY).fetchall())
        counter = conn.execute(_SEQ_QUERY).fetchone()
        out["seq_counter"] = int(counter[0]) if counter else 0
        return out

    return read_untouched(db_path, read)


def failing_since_of(status: Mapping[str, Any]) -> Dict[str, float]:
    """Rule id -> when its facts started failing (epoch seconds), as the service keeps it in its status;
    the grace periods count from there. Anything else there reads as no failure recorded."""
    value = status.get("failing_since")
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _decode_status(rows: List[Any]) -> Dict[str, Any]:
    """status rows (name, JSON text) -> values; a value that is not JSON is kept as its text."""
    out: Dict[str, Any] = {}
    for name, value in rows:
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out
