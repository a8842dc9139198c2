"""SQLite-specific behaviour: URLs, files, WAL, sharing a file between stores and processes, bad input."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import READ_MODES, close_store, new_event, read_options, sqlite_url
from stabilize_events import Event, EventQuery, EventType, SqliteEventStore, _core, errors
from stabilize_events.types import RAW_EVENT_TYPE


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*"))


def sqlite_tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    finally:
        conn.close()


def events_table(conn: sqlite3.Connection) -> str:
    """The table holding events (the one with event_id and event_type columns)."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        cols = {r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')}
        if {"event_id", "event_type", "data"} <= cols:
            return str(name)
    raise AssertionError("no events table found")


# --- URLs -------------------------------------------------------------------------------------


def test_absolute_url_creates_file(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")
    s = SqliteEventStore(url)
    e = s.append(new_event())
    assert path.is_file()
    assert s.get_event_by_id(e.event_id) == e
    close_store(s)


def test_relative_url_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    s = SqliteEventStore("sqlite:///sub/rel.db")
    s.append(new_event())
    assert (tmp_path / "sub" / "rel.db").is_file()
    close_store(s)
    s2 = SqliteEventStore("sqlite:///rel2.db", create_tables=True)
    assert (tmp_path / "rel2.db").is_file()
    close_store(s2)


def test_relative_store_keeps_its_file_after_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = SqliteEventStore("sqlite:///here.db")
    first = s.append(new_event())
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    second = s.append(new_event())
    assert s.get_events_since(0) == [first, second]
    assert not (other / "here.db").exists()
    close_store(s)


def test_memory_url_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = SqliteEventStore("sqlite:///:memory:")
    s.append(new_event())
    assert s.count_events() == 1
    assert listing(tmp_path) == []
    close_store(s)


@pytest.mark.parametrize("form", ["relative", "dot-relative", "sqlite-two-slashes"])
def test_plain_relative_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    # What the reference takes: SqliteEventStore("events.db"), and "sqlite://x" with two slashes.
    text = {
        "relative": "sub/events.db",
        "dot-relative": "./sub/events.db",
        "sqlite-two-slashes": "sqlite://sub/events.db",
    }[form]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    s = SqliteEventStore(text)
    first = s.append(new_event())
    assert (tmp_path / "sub" / "events.db").is_file()
    # Resolved once, when the store opened: a chdir afterwards moves nothing.
    monkeypatch.chdir(tmp_path / "sub")
    second = s.append(new_event())
    assert s.get_events_since(0) == [first, second]
    assert s._connection_string == text
    assert repr(s) == f"SqliteEventStore({text!r})"
    assert not (tmp_path / "sub" / "sub").exists()
    close_store(s)
    # The same file, named as a URL, holds the same events.
    again = SqliteEventStore("sqlite:///events.db", create_tables=False)
    assert again.get_events_since(0) == [first, second]
    close_store(again)


def test_plain_absolute_path_and_path_object(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "events.db"
    path.parent.mkdir()
    s = SqliteEventStore(str(path))
    stored = s.append(new_event())
    assert path.is_file()
    assert s._connection_string == str(path)
    assert repr(s) == f"SqliteEventStore({str(path)!r})"
    close_store(s)
    # A pathlib.Path names the same file; it is kept as its text.
    p = SqliteEventStore(path, create_tables=False)
    assert p.get_events_since(0) == [stored]
    assert p._connection_string == str(path)
    assert repr(p) == f"SqliteEventStore({str(path)!r})"
    close_store(p)
    url = SqliteEventStore(sqlite_url(path), create_tables=False)
    assert url.get_events_since(0) == [stored]
    assert url._connection_string == f"sqlite:///{path}"  # a URL is kept exactly as given
    close_store(url)


def test_relative_path_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = SqliteEventStore(Path("rel.db"))
    s.append(new_event())
    assert (tmp_path / "rel.db").is_file()
    assert s._connection_string == "rel.db"
    close_store(s)


def test_plain_path_may_hold_a_question_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain path is a file name, every character of it (the reference's sqlite3 reads it so).
    monkeypatch.chdir(tmp_path)
    s = SqliteEventStore("odd?name.db")
    s.append(new_event())
    assert (tmp_path / "odd?name.db").is_file()
    close_store(s)


@pytest.mark.parametrize("text", [":memory:", "sqlite://:memory:", "sqlite:///:memory:"])
def test_every_memory_form_creates_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.chdir(tmp_path)
    s = SqliteEventStore(text)
    s.append(new_event())
    assert s.count_events() == 1
    assert s._connection_string == text
    assert repr(s) == f"SqliteEventStore({text!r})"
    assert listing(tmp_path) == []
    close_store(s)


def test_memory_stores_are_independent() -> None:
    a = SqliteEventStore("sqlite:///:memory:")
    b = SqliteEventStore("sqlite:///:memory:")
    a.append(new_event())
    assert a.count_events() == 1
    assert b.count_events() == 0
    close_store(a)
    close_store(b)


# --- files ------------------------------------------------------------------------------------


def test_reopen_file_keeps_events_and_continues_sequences(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "e.db")
    s1 = SqliteEventStore(url)
    stored = s1.append_batch([new_event() for _ in range(3)])
    close_store(s1)
    del s1
    s2 = SqliteEventStore(url)
    assert s2.get_events_since(0) == stored
    assert s2.get_current_sequence() == stored[-1].sequence
    nxt = s2.append(new_event())
    assert nxt.sequence > stored[-1].sequence
    close_store(s2)
    s3 = SqliteEventStore(url, create_tables=False)
    assert s3.count_events() == 4
    close_store(s3)


def test_two_stores_on_one_file(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    a = SqliteEventStore(url)
    b = SqliteEventStore(url)
    ea = a.append(new_event(workflow_id="wf"))
    assert b.get_event_by_id(ea.event_id) == ea
    assert b.get_current_sequence() == ea.sequence
    eb = b.append(new_event(workflow_id="wf"))
    assert eb.sequence > ea.sequence
    assert a.get_event_by_id(eb.event_id) == eb
    assert a.get_events_for_workflow("wf") == [ea, eb]
    assert a.count_events() == b.count_events() == 2
    # A duplicate across stores is still a duplicate.
    with pytest.raises(errors.DuplicateEventError):
        b.append(ea)
    close_store(a)
    close_store(b)


def test_two_stores_on_one_file_threads(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    stores = [SqliteEventStore(url) for _ in range(3)]
    out: list[list[Event]] = [[] for _ in stores]
    errs: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(100):
                out[i].append(stores[i].append(new_event()))
        except BaseException as exc:
            errs.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errs, errs
    all_seqs = [e.sequence for evs in out for e in evs]
    assert len(set(all_seqs)) == 300
    assert stores[0].count_events() == 300
    assert sorted(all_seqs) == [e.sequence for e in stores[1].get_events_since(0)]
    for s in stores:
        close_store(s)


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    s = SqliteEventStore(sqlite_url(path))
    s.append(new_event())
    close_store(s)  # inspect with Python's sqlite3 only once the store's connections are closed
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_synchronous_option(tmp_path: Path, sync: str) -> None:
    s = SqliteEventStore(sqlite_url(tmp_path / "s.db"), synchronous=sync)
    e = s.append(new_event())
    assert s.get_event_by_id(e.event_id) == e
    close_store(s)


def test_writer_waits_for_a_foreign_write_lock(tmp_path: Path) -> None:
    # A plain sqlite3 connection of this process holds the lock: the core calls the same
    # libsqlite3 (test_one_sqlite.py), so the lock is seen as another program's would be.
    path = tmp_path / "locked.db"
    s = SqliteEventStore(sqlite_url(path))
    s.append(new_event())
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.6, lambda: locker.execute("COMMIT"))
    release.start()
    try:
        start = time.monotonic()
        e = s.append(new_event())
        waited = time.monotonic() - start
    finally:
        release.join()
        locker.close()
    assert waited >= 0.3, f"append returned after {waited:.3f}s while the file was write-locked"
    assert s.get_event_by_id(e.event_id) == e
    assert s.count_events() == 2
    close_store(s)


def test_unknown_event_type_in_file_reads_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    s = SqliteEventStore(sqlite_url(path))
    e = s.append(new_event(data={"a": 1}))
    close_store(s)
    conn = sqlite3.connect(path)
    table = events_table(conn)
    conn.execute(f'UPDATE "{table}" SET event_type = ? WHERE event_id = ?', ("future.kind", e.event_id))
    conn.commit()
    conn.close()
    s2 = SqliteEventStore(sqlite_url(path))
    for got in (s2.get_event_by_id(e.event_id), *s2.get_events(EventQuery()), *s2.get_events_since(0)):
        assert got is not None
        assert got.event_type is EventType.UNKNOWN
        assert got.data == {"a": 1, RAW_EVENT_TYPE: "future.kind"}
        assert got.sequence == e.sequence
    close_store(s2)


def test_corrupt_payload_row_names_its_sequence(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    s = SqliteEventStore(sqlite_url(path))
    ok = s.append(new_event())
    bad = s.append(new_event())
    close_store(s)
    conn = sqlite3.connect(path)
    table = events_table(conn)
    conn.execute(f'UPDATE "{table}" SET data = ? WHERE event_id = ?', (b"\xc1\xc1\xc1", bad.event_id))
    conn.commit()
    conn.close()
    s2 = SqliteEventStore(sqlite_url(path))
    assert s2.get_event_by_id(ok.event_id) == ok
    # The error may come when the row is read or when its payload is first used.
    with pytest.raises(errors.CorruptEventError) as info:
        got = s2.get_event_by_id(bad.event_id)
        assert got is not None
        _ = got.data
    assert f"sequence {bad.sequence}" in str(info.value)
    with pytest.raises(errors.CorruptEventError):
        for e in s2.get_events(EventQuery()):
            _ = e.data
    close_store(s2)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x",
        "postgresql://user:pw@host/db",
        "sqlite:/x.db",
        "sqlite:///",
        "sqlite://",
        "sqlite:///x.db?mode=rw",
        "",
        "dir/",
        "x\0y.db",
        "SQLITE:///x.db",
        "file:///tmp/x.db",
    ],
)
def test_bad_url_is_invalid_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.InvalidArgumentError) as info:
        SqliteEventStore(url)
    assert isinstance(info.value, ValueError)
    assert listing(tmp_path) == []


def test_url_of_another_kind_says_why_and_what_to_pass() -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        SqliteEventStore("postgresql://user@host/db")
    message = str(info.value)
    assert message.startswith('not an SQLite URL or path: "postgresql://user@host/db"'), message
    assert "sqlite:///relative.db" in message and "plain file path" in message


@pytest.mark.parametrize("url", [42, None, b"sqlite:///x.db", ["sqlite:///x.db"]], ids=repr)
def test_non_str_url_is_argument_type_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ArgumentTypeError) as info:
        SqliteEventStore(url)
    assert isinstance(info.value, TypeError)
    assert listing(tmp_path) == []


def test_bytes_path_object_is_argument_type_error(tmp_path: Path) -> None:
    class BytesPath:
        def __fspath__(self) -> bytes:
            return bytes(tmp_path / "x.db")

    with pytest.raises(errors.ArgumentTypeError):
        SqliteEventStore(BytesPath())  # type: ignore[arg-type]
    assert listing(tmp_path) == []


@pytest.mark.parametrize("sync", ["BOGUS", "", "NORMAL; DROP TABLE x"])
def test_bad_synchronous_is_invalid_argument(tmp_path: Path, sync: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        SqliteEventStore(sqlite_url(tmp_path / "s.db"), synchronous=sync)
    assert listing(tmp_path) == []


def test_missing_directory_is_store_open_error(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "missing" / "deeper" / "e.db")
    with pytest.raises(errors.StoreOpenError) as info:
        SqliteEventStore(url)
    assert "missing" in str(info.value)
    assert listing(tmp_path) == []


def test_missing_directory_memory_style_name(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreOpenError):
        SqliteEventStore(sqlite_url(tmp_path / "nodir" / ":memory:"))
    assert listing(tmp_path) == []


def test_not_sqlite_file_is_store_open_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"this is not an SQLite database, just some text\n" * 200
    path.write_bytes(content)
    for create in (True, False):
        with pytest.raises(errors.StoreOpenError):
            SqliteEventStore(sqlite_url(path), create_tables=create)
        assert path.read_bytes() == content
        assert listing(tmp_path) == ["notes.db"]


def test_directory_as_database_is_store_open_error(tmp_path: Path) -> None:
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(errors.StoreOpenError):
        SqliteEventStore(sqlite_url(d))
    assert listing(tmp_path) == ["adir"]


def _foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def test_other_tables_without_event_store_is_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _foreign_db(path)
    before = path.read_bytes()
    with pytest.raises(errors.SchemaError) as info:
        SqliteEventStore(sqlite_url(path), create_tables=False)
    assert isinstance(info.value, errors.StoreOpenError)
    assert sqlite_tables(path) == ["users"]
    assert path.read_bytes() == before, "the database was modified"
    assert listing(tmp_path) == ["app.db"]


def test_create_tables_beside_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _foreign_db(path)
    s = SqliteEventStore(sqlite_url(path), create_tables=True)
    e = s.append(new_event())
    assert s.get_event_by_id(e.event_id) == e
    close_store(s)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    conn.close()
    s2 = SqliteEventStore(sqlite_url(path), create_tables=False)
    assert s2.count_events() == 1
    close_store(s2)


def test_create_tables_false_on_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreOpenError):
        SqliteEventStore(sqlite_url(tmp_path / "absent.db"), create_tables=False)
    assert listing(tmp_path) == []


def test_create_tables_false_on_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(errors.StoreOpenError):
        SqliteEventStore(sqlite_url(path), create_tables=False)
    assert path.read_bytes() == b""


def test_create_tables_on_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    s = SqliteEventStore(sqlite_url(path))
    s.append(new_event())
    assert s.count_events() == 1
    close_store(s)


def test_create_tables_false_on_event_store(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "e.db")
    close_store(SqliteEventStore(url))
    s = SqliteEventStore(url, create_tables=False)
    assert s.count_events() == 0
    s.append(new_event())
    assert s.count_events() == 1
    close_store(s)


def test_create_tables_false_on_memory_is_schema_error() -> None:
    with pytest.raises(errors.StoreOpenError):
        SqliteEventStore("sqlite:///:memory:", create_tables=False)


# --- several processes --------------------------------------------------------------------------

# The writer child of the concurrency tests: singles and batches, one line per stored event.
WRITER = Path(__file__).parent / "helpers" / "concurrency_writer.py"


def _spawn(url: str, go: Path, n: int, tag: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(go), str(n), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(procs: list[subprocess.Popen[str]]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        lines = [ln for ln in stdout.strip().splitlines() if ln and ln != "ready"]
        for line in lines:
            eid, seq = line.split()
            out.append((eid, int(seq)))
    return out


def _wait_ready(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            _, err = p.communicate(timeout=30)
            raise AssertionError(f"child failed to open the store: {line!r} {err}")


def _check_file(url: str, results: list[tuple[str, int]], total: int) -> None:
    ids = [r[0] for r in results]
    seqs = [r[1] for r in results]
    assert len(results) == total
    assert len(set(ids)) == total
    assert len(set(seqs)) == total, "a sequence was assigned twice"
    s = SqliteEventStore(url)
    assert s.count_events() == total
    stored = s.get_events_since(0, limit=total + 10)
    assert [e.sequence for e in stored] == sorted(seqs)
    by_id = {e.event_id: e.sequence for e in stored}
    for eid, seq in results:
        assert by_id.get(eid) == seq, f"event {eid} stored with sequence {by_id.get(eid)}, returned {seq}"
    assert s.get_current_sequence() == max(seqs)
    close_store(s)


def test_processes_append_to_one_file_concurrently(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "multi.db")
    go = tmp_path / "go"
    main_store = SqliteEventStore(url)
    per_child, n_children, mine = 300, 2, 300
    procs = [_spawn(url, go, per_child, f"child-{i}") for i in range(n_children)]
    try:
        _wait_ready(procs)
        go.touch()
        results: list[tuple[str, int]] = []
        for i in range(mine):
            e = main_store.append(new_event(workflow_id="parent", data={"i": i}))
            results.append((e.event_id, e.sequence))
        results += _collect(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # The parent's own appends increase.
    parent = [s for _, s in results[:mine]]
    assert parent == sorted(parent)
    _check_file(url, results, per_child * n_children + mine)
    # Each child's events are stored in the order it appended them.
    for i in range(n_children):
        got = [e.data["i"] for e in main_store.get_events_for_workflow(f"child-{i}")]
        assert got == list(range(per_child))
    close_store(main_store)


#: Holds a write on a new file (rollback journal: no WAL yet) for a moment, in its own
#: process, as another program would.
_HOLD_A_WRITE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE other (x)")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_open_waits_while_another_process_writes_the_fresh_file(tmp_path: Path) -> None:
    # Switching a file to WAL needs it to itself. With another connection mid-write
    # SQLite answers busy at once, without calling its busy handler; the open must
    # wait for that write as it waits for any lock, not fail. (Processes creating
    # one file at once met this now and then, failing in ~1 s of a 5 s timeout.)
    path = tmp_path / "held.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_WRITE, str(path), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        store = SqliteEventStore(sqlite_url(path))
        waited = time.monotonic() - start
    finally:
        assert holder.wait(timeout=30) == 0
    assert waited >= 0.5, f"opened after {waited:.3f} s, while the other write was still going on"
    stored = store.append(new_event(workflow_id="after-wait"))
    assert store.get_events_for_workflow("after-wait") == [stored]
    close_store(store)
    assert "other" in sqlite_tables(path)


def test_processes_create_one_file_at_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fresh.db")
    go = tmp_path / "go"
    go.touch()  # start appending as soon as open
    procs = [_spawn(url, go, 50, f"p{i}") for i in range(4)]
    try:
        results = _collect(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    _check_file(url, results, 200)
    assert os.path.exists(tmp_path / "fresh.db")


#: Run in a fresh interpreter: write a store, then fork a child that becomes ``nobody`` with
#: room for no thread beyond its own and reads the store back. (The fork comes after the
#: store is closed, so no other thread is copied half-way; the child keeps the modules the
#: parent imported, since ``nobody`` may not reach them on disk.)
NO_THREAD_READ = """
import os, resource, sys, threading
from stabilize_events import Event, EntityType, EventType, SqliteEventStore

path = sys.argv[1]
s = SqliteEventStore("sqlite:///" + path)
events = [
    Event(event_type=EventType.TASK_STARTED, entity_type=EntityType.TASK, entity_id=f"t-{i}",
          workflow_id="wf-big", data={"i": i})
    for i in range(15_000)
]
stored = [e.sequence for e in s.append_batch(events)]
s.close()
os.chmod(os.path.dirname(path), 0o777)
os.chmod(path, 0o666)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        os.setgid(65534)
        os.setuid(65534)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        try:
            threading.Thread(target=print).start()
            print("a thread started: the limit did not hold")
        except RuntimeError:
            s = SqliteEventStore("sqlite:///" + path)
            got = s.get_events_for_workflow("wf-big")
            used = [e.data["i"] for e in got]
            mode = "ahead" if s.decode_ahead else "lazy"
            again = s.get_events_for_workflow("wf-big")
            s.close()
            print("read", len(got), "then", len(again), mode)
            same = [e.sequence for e in got] == stored == [e.sequence for e in again]
            code = 0 if same and used == [e.data["i"] for e in again] == list(range(15_000)) else 2
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to make a child nobody"
)
def test_a_large_read_without_a_second_thread_reads_on_one() -> None:
    # A large read is read on two threads (split_read.rs): in two halves, or streamed while
    # its payloads are decoded (the default, decode_ahead). Where the process
    # may start no thread, either is read on the calling one, with the same result.
    # (A thread limit binds only users other than root, hence the child as nobody, and a
    # folder right under the temporary directory, which nobody can reach.)
    folder = Path(tempfile.mkdtemp(prefix="stabilize-events-nobody-"))
    try:
        done = subprocess.run(
            [sys.executable, "-c", NO_THREAD_READ, str(folder / "events.db")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.split() == ["read", "15000", "then", "15000", "ahead"]


def test_the_read_strategy_is_the_stores_option_not_earlier_reads(tmp_path: Path) -> None:
    # Whether a large read decodes its payloads as its rows come in is the store's
    # decode_ahead option (default on), whatever earlier reads in the process did with
    # theirs. Either way every read returns the same events and payloads.
    path = tmp_path / "events.db"
    writer = SqliteEventStore(sqlite_url(path))
    stored = writer.append_batch([new_event(workflow_id="wf-a", data={"i": i}) for i in range(3_000)])
    want = [e.data for e in stored]
    close_store(writer)
    assert SqliteEventStore.__init__.__kwdefaults__["decode_ahead"] is _core.DEFAULT_DECODE_AHEAD is True
    stores = {
        "default": SqliteEventStore(sqlite_url(path)),
        "ahead": SqliteEventStore(sqlite_url(path), decode_ahead=True),
        "lazy": SqliteEventStore(sqlite_url(path), decode_ahead=False),
    }
    try:
        assert {name: s.decode_ahead for name, s in stores.items()} == {
            "default": True,
            "ahead": True,
            "lazy": False,
        }
        for used in (3_000, 0, 1_499, 1_500, 0):
            for s in stores.values():
                got = s.get_events_for_workflow("wf-a")
                # Not `got == stored`: comparing events compares (so uses) their payloads.
                assert [(e.sequence, e.event_id) for e in got] == [(e.sequence, e.event_id) for e in stored]
                assert [e.data for e in got[:used]] == want[:used]
        with pytest.raises(errors.ArgumentTypeError, match=r"^decode_ahead must be a bool, not str$"):
            SqliteEventStore(sqlite_url(path), decode_ahead="yes")  # type: ignore[arg-type]
        # A payload decoded ahead is the one `data` gives each time.
        got = stores["ahead"].get_events_for_workflow("wf-a")
        assert all(e.data is e.data for e in got)
        assert [e.data for e in got] == want
    finally:
        for s in stores.values():
            s.close()


def _mapped(path: Path) -> bool:
    """Whether this process maps ``path`` into memory (Linux: /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        return any(line.rstrip("\n").endswith(str(path)) for line in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_mmap_reads_is_the_stores_option(tmp_path: Path) -> None:
    # With mmap_reads a store's reads go through a map of its file; without it (the
    # default) the file is never mapped. The events read are the same either way, and opening
    # (or writing) maps nothing.
    assert SqliteEventStore.__init__.__kwdefaults__["mmap_reads"] is _core.DEFAULT_MMAP_READS is False
    options = {"default": {}, "on": {"mmap_reads": True}, "off": {"mmap_reads": False}}
    writer = SqliteEventStore(sqlite_url(tmp_path / "events.db"))
    written = [e.data for e in writer.append_batch([new_event(data={"i": i}) for i in range(3_000)])]
    close_store(writer)  # the last close checkpoints: the events are in the main file
    for name in options:
        shutil.copy(tmp_path / "events.db", tmp_path / f"{name}.db")
    stores = {name: SqliteEventStore(sqlite_url(tmp_path / f"{name}.db"), **o) for name, o in options.items()}  # type: ignore[arg-type]
    try:
        assert not any(_mapped(tmp_path / f"{name}.db") for name in stores)
        for s in stores.values():
            assert [e.data for e in s.get_events_since(0, limit=5_000)] == written
        assert {name: _mapped(tmp_path / f"{name}.db") for name in stores} == {
            "default": False,
            "on": True,
            "off": False,
        }
        with pytest.raises(errors.ArgumentTypeError, match=r"^mmap_reads must be a bool, not int$"):
            SqliteEventStore(sqlite_url(tmp_path / "x.db"), mmap_reads=1)  # type: ignore[arg-type]
    finally:
        for s in stores.values():
            s.close()


@pytest.mark.parametrize("mode", READ_MODES)
def test_a_read_sets_off_no_collection_and_leaves_the_collector_as_it_was(tmp_path: Path, mode: str) -> None:
    # A read's events and payloads are kept off the cyclic collector, so their thousands of
    # allocations must not set off collections of everything else in the middle of the read
    # (unpaused, these 6,000 events and 12,000 dicts would set off about 25). Their count
    # carries over: at most one young-generation pass, when the collector is back on.
    # The collector is left as the read found it: running, or turned off by the application.
    s = SqliteEventStore(sqlite_url(tmp_path / "events.db"), **read_options(mode))
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        s.append_batch([new_event(workflow_id="wf-a", data={"i": i, "d": {"x": i}}) for i in range(6_000)])
        gc.collect()
        gc.callbacks.append(seen)
        try:
            events = s.get_events_for_workflow("wf-a")
            assert collections in ([], [0])
            assert gc.isenabled()
            assert [e.data["d"]["x"] for e in events] == list(range(6_000))
            gc.disable()
            collections.clear()
            try:
                assert len(s.get_events_for_workflow("wf-a")) == 6_000
                assert not gc.isenabled()
            finally:
                gc.enable()
            assert collections == []
            # The collector works again after the read: a young generation's worth of new
            # containers sets it off (the threshold differs between Python versions).
            junk = [[] for _ in range(gc.get_threshold()[0] + 1)]
            assert collections and junk
        finally:
            gc.callbacks.remove(seen)
    finally:
        s.close()


@pytest.mark.parametrize("mode", READ_MODES)
def test_a_large_read_lets_other_threads_run(tmp_path: Path, mode: str) -> None:
    # Rows are read with the GIL released; read ahead, the payloads are decoded with the GIL
    # held, offered to other threads after each switch interval as Python's own loop does.
    # A thread running Python code meanwhile must keep running all through the read, not
    # only before and after it, nor only while the reader waits for rows.
    s = SqliteEventStore(sqlite_url(tmp_path / "events.db"), **read_options(mode))
    interval = sys.getswitchinterval()
    try:
        # Payloads slower to decode than their rows are to read: the reader never waits for rows.
        payload = {f"k{k}": k for k in range(30)}
        s.append_batch([new_event(workflow_id="wf-a", data={"i": i, **payload}) for i in range(40_000)])
        ran: list[float] = []
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                ran.append(time.perf_counter())
                sum(range(50))

        sys.setswitchinterval(0.001)
        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            windows = []
            for _ in range(4):
                start = time.perf_counter()
                got = s.get_events_for_workflow("wf-a")
                end = time.perf_counter()
                assert len(got) == 40_000
                windows.append((start, end))
        finally:
            stop.set()
            spinner.join()
            sys.setswitchinterval(interval)
        starved = []
        for start, end in windows:
            # The longest stretch of the read in which the other thread did not run.
            marks = [start, *(t for t in ran if start < t < end), end]
            gap = max(b - a for a, b in itertools.pairwise(marks))
            took = end - start
            if gap >= took / 2:
                starved.append(f"no run for {gap * 1e3:.1f} ms of a {took * 1e3:.1f} ms read")
        # A read that holds the GIL starves the thread in every read; the machine's own
        # scheduling (other processes on two cores) may take the thread off in one.
        assert len(starved) <= 1, starved
    finally:
        s.close()
