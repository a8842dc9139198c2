"""How `SqliteEventStore` writes its WAL (``src/store/sqlite/wal_vfs.rs``).

A transaction's WAL frames are held and written to the file in one call when the commit
frame is complete. These tests check what that must never change:

- another connection (Python's own ``sqlite3``, through SQLite's default VFS) sees every
  append as soon as it returns, and nothing of it before;
- a batch too large for the writer's page cache (its pages spill into the WAL and are
  rewritten in place before the commit) is stored whole and the file stays sound;
- a write that fails (the file size limit of the process) fails that append, with nothing
  of it stored, and the store goes on once writes succeed again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import close_store, new_event, sqlite_url
from stabilize_events import Event, SqliteEventStore

LIMITED_WRITER = Path(__file__).parent / "helpers" / "limited_writer.py"


def _foreign(path: Path) -> sqlite3.Connection:
    """A connection of Python's ``sqlite3`` module (the store's SQLite library, but SQLite's
    default VFS, not the store's)."""
    return sqlite3.connect(path, isolation_level=None)


def test_each_append_is_visible_to_another_connection_when_it_returns(tmp_path: Path) -> None:
    # In this process: the core calls the libsqlite3 Python's sqlite3 loads (test_one_sqlite.py),
    # so the two connections see each other's locks as two programs' connections would.
    path = tmp_path / "visible.db"
    store = SqliteEventStore(sqlite_url(path))
    other = _foreign(path)
    try:
        for n in range(1, 301):
            if n % 3:
                stored = [store.append(new_event())]
            else:
                stored = store.append_batch([new_event() for _ in range(5)])
            last = stored[-1]
            count, top, size = other.execute(
                "SELECT count(*), max(sequence), (SELECT length(data) FROM event_log WHERE sequence = ?) "
                "FROM event_log",
                (last.sequence,),
            ).fetchone()
            assert top == last.sequence, f"append {n}: the other connection sees sequence {top}"
            assert count == last.sequence
            assert size is not None and size > 0
        assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        other.close()
        close_store(store)


def test_batch_larger_than_the_page_cache_is_stored_whole(tmp_path: Path) -> None:
    path = tmp_path / "large.db"
    url = sqlite_url(path)
    store = SqliteEventStore(url)
    # ~16 MiB of rows and index entries: four times the writer's 4 MiB page cache.
    batch = [new_event(data={"i": i, "text": "y" * 2000}) for i in range(8_000)]
    try:
        stored = store.append_batch(batch)
        assert [e.sequence for e in stored] == list(range(1, 8_001))
        after = store.append(new_event())
        assert after.sequence == 8_001
    finally:
        close_store(store)
    other = _foreign(path)
    try:
        assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert other.execute("SELECT count(*), max(sequence) FROM event_log").fetchone() == (8_001, 8_001)
    finally:
        other.close()
    reopened = SqliteEventStore(url)
    try:
        back = reopened.get_events_since(0, limit=10_000)
        assert [e.data["i"] for e in back[:-1]] == list(range(8_000))
        assert back[-1].event_id == after.event_id
    finally:
        close_store(reopened)


def test_failed_wal_write_fails_the_append_and_stores_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "limited.db"
    url = sqlite_url(path)
    # Create the file first, so that the limit only meets the appends.
    close_store(SqliteEventStore(url))
    size = 200
    proc = subprocess.run(
        [sys.executable, str(LIMITED_WRITER), url, str(3 << 20), str(size)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ok = [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("ok ")]
    failed = [ln for ln in lines if ln.startswith("failed ")]
    after = [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("after ")]
    assert ok, proc.stdout
    assert len(failed) == 1 and "StoreError" in failed[0], proc.stdout
    assert len(after) == 1, proc.stdout

    store = SqliteEventStore(url)
    try:
        events: list[Event] = store.get_events_since(0, limit=100_000)
        sequences = [e.sequence for e in events]
        confirmed = [s for first, last in ok + after for s in range(first, last + 1)]
        # Exactly the batches that returned: none of the failed one, nothing twice.
        assert sequences == confirmed
        assert len(events) == size * (len(ok) + 1)
        assert after[0][0] == ok[-1][1] + 1, "the failed batch used up sequences"
    finally:
        close_store(store)
    other = _foreign(path)
    try:
        assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        other.close()
