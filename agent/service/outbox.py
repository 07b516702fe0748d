"""The durable outbox of signed reports (SQLite, WAL).

A report is signed and committed here before any upload is attempted, and leaves only when the
collector answered ``accepted`` or ``duplicate`` for it. Rows are kept in sequence order, which is the
order they are uploaded in: the collector treats a seq at or below the highest it accepted as a duplicate,
so sending out of order would lose reports.

Bounded by count and bytes: when a new report does not fit, the oldest ones are evicted and a persisted
counter of dropped reports grows (the next report carries it as ``dropped_reports``).

A report the collector *rejects* will never be accepted by retrying (bad signature, unknown device, clock
far in the future...). It is moved to a small ``dead_letter`` table (the newest 100 kept, the rest counted),
logged, and counted in ``rejected_total`` — so it neither blocks the queue nor disappears unseen.

A file that is not a SQLite database, or fails ``PRAGMA integrity_check``, is renamed aside
(``outbox.db.corrupt-<UTC time>``, with its -wal/-shm), a fresh outbox is started, and every report that
can still be read from the damaged file is copied into it (``salvaged``); ``reset_reason`` says why.
A full or read-only disk is not damage: it raises `agent.service.storage.StorageUnavailable` and moves nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from agent.service.storage import (
    is_corruption,
    is_storage_error,
    move_database_aside,
    read_untouched,
    storage_unavailable,
)
from agent.service.storage import rollback as _rollback

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEAD_LETTER_KEEP = 100

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass(frozen=True)
class Queued:
    seq: int
    report_id: str
    envelope: str  # canonical JSON of the envelope
    size: int
    created_at: float
    attempts: int


@dataclass(frozen=True)
class PutResult:
    seq: int
    evicted: int


@dataclass(frozen=True)
class AckResult:
    delivered: int
    rejected: int
    kept: int


class SpoolError(RuntimeError):
    pass


class Spool:
    def __init__(self, path: Path, max_reports: int = 5000, max_bytes: int = 50 * 1024 * 1024,
                 dropped_seed: int = 0, expected_depth: int = 0, max_seq_hint: int = 0) -> None:
        """Open (or create) the outbox.

        When a damaged one is moved aside, its readable reports are salvaged into the fresh one, whose
        dropped counter starts at ``dropped_seed`` (the last known total) plus the reports that could not
        be read: ``expected_depth`` (the last known depth) minus those salvaged. ``max_seq_hint`` bounds
        the row-by-row salvage of a file whose table cannot be scanned. Raises StorageUnavailable on a
        full or read-only disk, having changed nothing.
        """
        self.path = Path(path)
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.reset_reason: Optional[str] = None
        self.moved_to: Optional[Path] = None
        self.salvaged = 0
        self.unreadable = 0
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            if is_storage_error(exc) and not is_corruption(exc):
                raise storage_unavailable(exc, self.path) from exc
            self._reset(f"{type(exc).__name__}: {exc}")
        else:
            problem = self._integrity_problem()
            if problem:
                self._conn.close()
                self._reset(problem)
        if self.reset_reason is not None:
            rows = _readable_rows(self.moved_to, max_seq_hint) if self.moved_to is not None else []
            self.salvaged = len(rows)
            self.unreadable = max(0, expected_depth - self.salvaged)
            self._salvage_into_self(rows)
            if dropped_seed or self.unreadable:
                self._set_meta("dropped_total", dropped_seed + self.unreadable)

    def _reset(self, reason: str) -> None:
        """Move the damaged file aside, start a fresh outbox and count what can be salvaged from the old."""
        try:
            self._move_aside(reason)
        except OSError as exc:
            if is_storage_error(exc):
                raise storage_unavailable(exc, self.path) from exc
            raise
        self._conn = self._open()

    # -- opening, checking, moving aside ---------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a report the caller was told is queued survives a power cut, not only a kill.
            conn.execute("PRAGMA synchronous=FULL")
            # reads are sequential and the service runs for months: a small page cache keeps RSS flat
            conn.execute("PRAGMA cache_size=-256")
            conn.execute("PRAGMA wal_autocheckpoint=100")  # a small WAL (400 KiB), not 4 MiB, on a small disk
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"outbox schema version {version} is newer than this agent's "
                                            f"({SCHEMA_VERSION})")
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS outbox (
                    seq INTEGER PRIMARY KEY, report_id TEXT NOT NULL, envelope TEXT NOT NULL,
                    size INTEGER NOT NULL, created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT);
                CREATE TABLE IF NOT EXISTS dead_letter (
                    seq INTEGER PRIMARY KEY, report_id TEXT NOT NULL, envelope TEXT NOT NULL,
                    reason TEXT NOT NULL, rejected_at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                """
            )
            if version != SCHEMA_VERSION:  # a write: not on every open (the disk may be full)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            cols = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
            missing = {"seq", "report_id", "envelope", "size", "created_at", "attempts"} - cols
            if missing:
                raise sqlite3.DatabaseError(f"outbox table lacks column(s) {', '.join(sorted(missing))}")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _integrity_problem(self) -> Optional[str]:
        try:
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return f"integrity_check failed: {exc}"
        messages = [str(row[0]) for row in rows]
        if messages != ["ok"]:
            return "integrity_check: " + "; ".join(messages[:5])
        return None

    def _move_aside(self, reason: str) -> None:
        target = move_database_aside(self.path)
        self.reset_reason = reason
        self.moved_to = target
        log.error("outbox %s is unusable (%s): moved aside to %s and started a fresh one; reports that were "
                  "queued in it are counted as dropped", self.path, reason, target,
                  extra={"event": "outbox_reset", "reason": reason, "moved_to": str(target)})

    def _salvage_into_self(self, rows: List[Tuple[int, str, str, int, float]]) -> None:
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO outbox(seq, report_id, envelope, size, created_at) "
                                       "VALUES(?,?,?,?,?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(self._conn)
                raise
        log.warning("salvaged %d report(s) from the damaged outbox %s; %d could not be read", len(rows),
                    self.moved_to, self.unreadable, extra={"event": "outbox_salvaged", "salvaged": len(rows),
                                                           "unreadable": self.unreadable})

    # -- meta counters -------------------------------------------------------------------------------------
    def _get_meta(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, name: str, value: int) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO meta(name, value) VALUES(?, ?) "
                               "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))

    def _add_meta(self, name: str, amount: int) -> None:
        self._conn.execute("INSERT INTO meta(name, value) VALUES(?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value", (name, amount))

    def dropped_total(self) -> int:
        with self._lock:
            return self._get_meta("dropped_total")

    def rejected_total(self) -> int:
        with self._lock:
            return self._get_meta("rejected_total")

    # -- writing -------------------------------------------------------------------------------------------
    def put(self, seq: int, report_id: str, envelope: str, created_at: Optional[float] = None) -> PutResult:
        """Commit a signed report; evict the oldest ones if the bounds are exceeded."""
        size = len(envelope.encode("utf-8"))
        if size > self.max_bytes:
            raise SpoolError(f"report seq {seq} is {size} bytes, more than the whole outbox may hold "
                             f"({self.max_bytes}); raise outbox_max_bytes")
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO outbox(seq, report_id, envelope, size, created_at) VALUES(?,?,?,?,?)",
                             (seq, report_id, envelope, size, time.time() if created_at is None else created_at))
                count, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
                evicted = 0
                if count > self.max_reports or total > self.max_bytes:
                    rows = conn.execute("SELECT seq, size FROM outbox WHERE seq != ? ORDER BY seq", (seq,))
                    doomed: List[int] = []
                    for old_seq, old_size in rows:
                        if count <= self.max_reports and total <= self.max_bytes:
                            break
                        doomed.append(old_seq)
                        count -= 1
                        total -= old_size
                    conn.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in doomed])
                    evicted = len(doomed)
                    if evicted:
                        self._add_meta("dropped_total", evicted)
                conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(conn)
                raise
        if evicted:
            log.warning("outbox full (%d reports / %d bytes max): dropped the %d oldest", self.max_reports,
                        self.max_bytes, evicted, extra={"event": "outbox_evicted", "evicted": evicted})
        return PutResult(seq=seq, evicted=evicted)

    def batch(self, limit: int, max_bytes: int = 4 * 1024 * 1024) -> List[Queued]:
        """The oldest queued reports, in seq order, at most ``limit`` and about ``max_bytes``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, report_id, envelope, size, created_at, attempts FROM outbox ORDER BY seq LIMIT ?",
                (limit,)).fetchall()
        out: List[Queued] = []
        total = 0
        for row in rows:
            if out and total + row[3] > max_bytes:
                break
            out.append(Queued(*row))
            total += row[3]
        return out

    def ack(self, verdicts: Dict[int, str], reasons: Optional[Dict[int, str]] = None) -> AckResult:
        """Apply the collector's answers: seq -> accepted | duplicate | rejected. Others stay queued."""
        reasons = reasons or {}
        delivered = rejected = kept = 0
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for seq, verdict in verdicts.items():
                    if verdict in (ACCEPTED, DUPLICATE):
                        delivered += conn.execute("DELETE FROM outbox WHERE seq=?", (seq,)).rowcount
                    elif verdict == REJECTED:
                        row = conn.execute("SELECT report_id, envelope FROM outbox WHERE seq=?", (seq,)).fetchone()
                        if row is None:
                            continue
                        conn.execute("INSERT OR REPLACE INTO dead_letter(seq, report_id, envelope, reason, "
                                     "rejected_at) VALUES(?,?,?,?,?)",
                                     (seq, row[0], row[1], reasons.get(seq, "rejected"), time.time()))
                        conn.execute("DELETE FROM outbox WHERE seq=?", (seq,))
                        self._add_meta("rejected_total", 1)
                        rejected += 1
                    else:
                        conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE seq=?",
                                     (reasons.get(seq, verdict), seq))
                        kept += 1
                conn.execute("DELETE FROM dead_letter WHERE seq NOT IN "
                             "(SELECT seq FROM dead_letter ORDER BY seq DESC LIMIT ?)", (DEAD_LETTER_KEEP,))
                conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(conn)
                raise
        return AckResult(delivered=delivered, rejected=rejected, kept=kept)

    def renumber(self, first_seq: int, new_first: int,
                 reseal: Callable[[str, int], str]) -> List[Tuple[int, int, str]]:
        """Give every queued report from ``first_seq`` on a new seq from ``new_first`` on, in order, re-signed
        by ``reseal(envelope, new_seq)``; returns (old seq, new seq, report_id) per report."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute("SELECT seq, report_id, envelope, created_at FROM outbox WHERE seq >= ? "
                                    "ORDER BY seq", (first_seq,)).fetchall()
                moved: List[Tuple[int, int, str]] = []
                conn.execute("DELETE FROM outbox WHERE seq >= ?", (first_seq,))
                for offset, (old_seq, report_id, envelope, created_at) in enumerate(rows):
                    new_seq = new_first + offset
                    text = reseal(envelope, new_seq)
                    conn.execute("INSERT INTO outbox(seq, report_id, envelope, size, created_at) VALUES(?,?,?,?,?)",
                                 (new_seq, report_id, text, len(text.encode("utf-8")), created_at))
                    moved.append((int(old_seq), new_seq, str(report_id)))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        return moved

    def replace_envelope(self, seq: int, envelope: str) -> None:
        """The same report (seq, report_id) signed again, e.g. with a corrected created_at."""
        with self._lock:
            self._conn.execute("UPDATE outbox SET envelope=?, size=? WHERE seq=?",
                               (envelope, len(envelope.encode("utf-8")), seq))

    def seq_of(self, report_id: str) -> Optional[int]:
        """Where a report is queued now (renumbering may have moved it), None when it left the outbox."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM outbox WHERE report_id=?", (report_id,)).fetchone()
        return None if row is None else int(row[0])

    def report_id(self, seq: int) -> Optional[str]:
        with self._lock:
            row = self._conn.execute("SELECT report_id FROM outbox WHERE seq=?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def note_attempt(self, seqs: Sequence[int], error: str) -> None:
        with self._lock:
            self._conn.executemany("UPDATE outbox SET attempts=attempts+1, last_error=? WHERE seq=?",
                                   [(error[:500], s) for s in seqs])

    # -- reading -------------------------------------------------------------------------------------------
    def depth(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def size_bytes(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])

    def seqs(self) -> List[int]:
        with self._lock:
            return [int(r[0]) for r in self._conn.execute("SELECT seq FROM outbox ORDER BY seq")]

    def max_seq(self) -> int:
        """The highest seq this outbox holds or dead-lettered (0 if none): the counter never goes below it."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM outbox "
                                     "UNION ALL SELECT MAX(seq) FROM dead_letter)").fetchone()
        return int(row[0] or 0)

    def dead_letters(self) -> List[Dict[str, object]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, report_id, reason, rejected_at FROM dead_letter ORDER BY seq").fetchall()
        return [{"seq": r[0], "report_id": r[1], "reason": r[2], "rejected_at": r[3]} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_ROW = "SELECT seq, report_id, envelope, size, created_at FROM outbox"


def _readable_rows(path: Path, max_seq_hint: int) -> List[Tuple[int, str, str, int, float]]:
    """Every outbox row that can still be read from a damaged file, in seq order.

    A whole-table scan first; when a damaged page stops it, row by row (each lookup descends the b-tree
    afresh, so rows on intact pages are found past a damaged one), up to ``max_seq_hint``.
    """
    try:
        conn = sqlite3.connect(f"file:{path.as_posix()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return []
    rows: List[Tuple[int, str, str, int, float]] = []
    try:
        try:
            rows = [tuple(r) for r in conn.execute(_ROW + " ORDER BY seq")]
            return [r for r in rows if _is_envelope(r[2])]
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "no such table" in str(exc):
                return []
        rows = []
        cursor = 0
        limit = max(max_seq_hint, 0)
        while cursor < limit:
            try:
                row = conn.execute(_ROW + " WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,)).fetchone()
            except sqlite3.DatabaseError:
                cursor += 1
                continue
            if row is None:
                break
            if _is_envelope(row[2]):
                rows.append(tuple(row))
            cursor = int(row[0])
    finally:
        conn.close()
    return rows


def _is_envelope(text: object) -> bool:
    try:
        data = json.loads(str(text))
    except ValueError:
        return False
    return isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("device_id", "payload", "signature"))


def peek(path: Path) -> Dict[str, object]:
    """Counts of an outbox, read-only (for `status`: never moves a file or creates one)."""
    empty: Dict[str, object] = {"depth": 0, "bytes": 0, "dropped_total": 0, "rejected_total": 0,
                                "dead_letters": 0}
    if not Path(path).exists():
        return empty
    def read(conn: sqlite3.Connection) -> Tuple[int, int, Dict[str, int], int]:
        depth, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        dead = conn.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        return depth, total, meta, dead

    try:
        depth, total, meta, dead = read_untouched(Path(path), read, timeout=10.0)
    except OSError as exc:
        return dict(empty, problem=f"outbox unreadable: {exc}")
    except sqlite3.Error as exc:
        return dict(empty, problem=f"outbox unreadable ({exc}); the agent moves it aside on its next run")
    return {"depth": int(depth), "bytes": int(total), "dropped_total": int(meta.get("dropped_total", 0)),
            "rejected_total": int(meta.get("rejected_total", 0)), "dead_letters": int(dead)}
