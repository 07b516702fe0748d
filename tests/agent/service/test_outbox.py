"""The outbox: order, bounds with oldest-first eviction, acks, dead letters, corruption handling."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent.service.outbox import Spool, SpoolError, peek


def _fill(spool: Spool, seqs, size: int = 100) -> None:
    for seq in seqs:
        spool.put(seq, f"r{seq}", "x" * size)


def test_batches_are_oldest_first_and_acks_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "o.db")
    _fill(spool, [3, 1, 2])
    assert [q.seq for q in spool.batch(2)] == [1, 2]
    result = spool.ack({1: "accepted", 2: "duplicate"})
    assert result.delivered == 2 and spool.seqs() == [3]
    spool.ack({3: "something-else"}, {3: "collector said maybe"})
    assert spool.seqs() == [3] and spool.batch(1)[0].attempts == 1


def test_batch_respects_bytes_but_always_sends_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "o.db")
    _fill(spool, [1, 2, 3], size=1000)
    assert [q.seq for q in spool.batch(10, max_bytes=2500)] == [1, 2]
    assert [q.seq for q in spool.batch(10, max_bytes=10)] == [1]


@pytest.mark.parametrize("max_reports, max_bytes, expected_left, expected_dropped", [
    (3, 10_000, [5, 6, 7], 4),
    (100, 350, [5, 6, 7], 4),
    (2, 10_000, [6, 7], 5),
])
def test_eviction_drops_oldest_and_counts_durably(tmp_path: Path, max_reports, max_bytes, expected_left,
                                                  expected_dropped) -> None:
    spool = Spool(tmp_path / "o.db", max_reports=max_reports, max_bytes=max_bytes)
    _fill(spool, range(1, 8))
    assert spool.seqs() == expected_left
    assert spool.dropped_total() == expected_dropped
    spool.close()
    assert Spool(tmp_path / "o.db").dropped_total() == expected_dropped
    assert peek(tmp_path / "o.db")["dropped_total"] == expected_dropped


def test_a_report_bigger_than_the_outbox_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "o.db", max_bytes=50)
    with pytest.raises(SpoolError, match="more than the whole outbox"):
        spool.put(1, "r1", "y" * 51)


def test_rejected_reports_move_to_a_bounded_dead_letter_table(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "o.db")
    _fill(spool, range(1, 121))
    spool.ack({seq: "rejected" for seq in range(1, 121)}, {5: "bad signature"})
    dead = spool.dead_letters()
    assert len(dead) == 100 and dead[0]["seq"] == 21 and spool.rejected_total() == 120
    assert spool.depth() == 0


def _envelope(seq: int, size: int) -> str:
    return json.dumps({"device_id": "d", "payload": json.dumps({"seq": seq, "pad": "x" * size}), "signature": "s"})


@pytest.mark.parametrize("corrupt", ["garbage", "truncated", "bad-page"])
def test_corrupted_outbox_is_moved_aside_and_readable_reports_salvaged(tmp_path: Path, corrupt: str) -> None:
    path = tmp_path / "outbox.db"
    spool = Spool(path)
    for seq in range(1, 200):
        spool.put(seq, f"r{seq}", _envelope(seq, 2000))
    spool.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = path.read_bytes()
    if corrupt == "garbage":
        path.write_bytes(b"\x00garbage" * 4096)
    elif corrupt == "truncated":
        path.write_bytes(data[: len(data) // 3])
    else:
        page = 4096  # page 30: a leaf of the outbox table (2 KB reports: about two per page)
        path.write_bytes(data[: page * 29] + b"\xff" * page + data[page * 30:])
    fresh = Spool(path, dropped_seed=7, expected_depth=199, max_seq_hint=199)
    assert fresh.reset_reason, "corruption not detected"
    assert fresh.moved_to is not None and fresh.moved_to.exists()
    salvaged = fresh.seqs()
    # every report still readable is queued again, the others are counted as dropped
    assert len(salvaged) == fresh.salvaged and fresh.unreadable == 199 - len(salvaged)
    assert fresh.dropped_total() == 7 + 199 - len(salvaged)
    if corrupt == "garbage":
        assert salvaged == []
    elif corrupt == "bad-page":  # (a truncated file's schema no longer loads: SQLite reads nothing of it)
        assert 0 < len(salvaged) < 199 and salvaged == sorted(salvaged)
        first = fresh.batch(1)[0]
        assert first.report_id == f"r{first.seq}" and json.loads(json.loads(first.envelope)["payload"])["seq"] == first.seq
    fresh.put(500, "r500", "ok")
    assert fresh.seqs()[-1] == 500
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_full_database_is_not_corruption(tmp_path: Path) -> None:
    """SQLITE_FULL (here: max_page_count, the same error as ENOSPC) raises, and the outbox stays in place."""
    from agent.service.storage import is_corruption, is_storage_error

    path = tmp_path / "outbox.db"
    spool = Spool(path)
    spool.put(1, "r1", _envelope(1, 100))
    spool._conn.execute("PRAGMA max_page_count=12")
    with pytest.raises(sqlite3.OperationalError) as caught:
        for seq in range(2, 200):
            spool.put(seq, f"r{seq}", _envelope(seq, 3000))
    assert is_storage_error(caught.value) and not is_corruption(caught.value)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))
    assert spool.seqs()[0] == 1
    spool.close()
    assert Spool(path).reset_reason is None  # reopened as it was


def test_peek_is_read_only_and_reports_problems(tmp_path: Path) -> None:
    assert peek(tmp_path / "none.db")["depth"] == 0
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"nonsense" * 100)
    assert "unreadable" in str(peek(bad)["problem"])
    assert bad.read_bytes() == b"nonsense" * 100
