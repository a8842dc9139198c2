"""The sharp edges of issue 23, one test (or more) each: a damaged database file,
a durable subscription stuck at an undecodable event, bare or unknown type names in
`EventQuery`, deeply nested payloads, argument names in errors, SQLite paths that
cannot work, read-only access, metadata given as a dict, and non-callable bus handlers.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import new_event, sqlite_url
from stabilize_events import (
    EntityType,
    Event,
    EventBus,
    EventMetadata,
    EventQuery,
    EventStore,
    EventType,
    SqliteEventStore,
    SubscriptionManager,
    errors,
)

# --- a damaged database file ----------------------------------------------------------------


def damage_entity_index(path: Path) -> None:
    """Overwrite the root page of the entity index with garbage: inserting an event reads it
    (SQLite: "database disk image is malformed"); reads by workflow never touch it."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'event_log_entity'").fetchone()
    db.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_store_refuses_appends_once_sqlite_reports_the_file_damaged(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch([new_event(workflow_id="wf-1") for _ in range(50)])
    store.close()
    damage_entity_index(path)

    store = SqliteEventStore(sqlite_url(path))
    try:
        with pytest.raises(errors.DatabaseDamagedError) as first:
            store.append(new_event(workflow_id="wf-1"))
        message = str(first.value)
        # Reason first, then what the store does, then how to check and recover.
        assert message.startswith(f"the database file {path} is damaged")
        assert "malformed" in message and "PRAGMA integrity_check" in message and ".recover" in message
        assert isinstance(first.value, errors.StoreError)
        # From now on every write is refused, whether or not it would touch the damage.
        with pytest.raises(errors.DatabaseDamagedError, match="refuses every write"):
            store.append(new_event(workflow_id="wf-2"))
        with pytest.raises(errors.DatabaseDamagedError):
            store.save_subscription("s", None, None, 0)  # type: ignore[attr-defined]
        # Reads of the undamaged parts go on.
        assert len(store.get_events_for_workflow("wf-1")) == 50
        assert store.get_current_sequence() == 50
    finally:
        store.close()


# --- a durable subscription stuck at an undecodable event ----------------------------------


def store_with_undecodable_event(tmp_path: Path) -> tuple[SqliteEventStore, Path]:
    """Events 1-5 of wf-1; the payload of sequence 3 cannot be decoded."""
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch([new_event(workflow_id="wf-1", data={"i": i}) for i in range(1, 6)])
    with sqlite3.connect(path) as db:
        db.execute("UPDATE event_log SET data = X'c1' WHERE sequence = 3")
    db.close()
    return store, path


def test_skip_event_moves_a_stuck_subscription_on_into_its_dead_letter_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = store_with_undecodable_event(tmp_path)
    got: list[int] = []
    try:
        manager = SubscriptionManager(store)
        manager.create_subscription("sub", lambda e: got.append(e.data["i"]), max_errors=3, start_from=0)
        for _ in range(4):
            manager.process_once()
        status = manager.get_subscription_status("sub")
        assert status is not None
        # max_errors semantics unchanged: retried, then disabled after 3 failures.
        assert got == [1, 2] and not status["enabled"] and status["error_count"] == 3
        assert status["last_sequence"] == 2
        # Status and logs say how to get past it, since retrying cannot.
        assert "manager.skip_event('sub', 3)" in status["disabled_reason"]
        assert "dead_letter_undecodable=True" in status["last_error"]

        with pytest.raises(errors.InvalidArgumentError, match="stopped at sequence 3, not 4"):
            manager.skip_event("sub", sequence=4)
        caplog.set_level(logging.WARNING)
        entry = manager.skip_event("sub", sequence=3)
        assert entry["sequence"] == 3 and "CorruptEventError" in entry["error"]
        assert any("sequence 3" in r.getMessage() and "dead-letter" in r.getMessage() for r in caplog.records)
        status = manager.get_subscription_status("sub")
        assert status is not None and status["enabled"] and status["error_count"] == 0
        assert status["dead_letters"] == 1

        manager.catch_up("sub")
        assert got == [1, 2, 4, 5]

        # The dead-letter list is persisted with the subscription.
        again = SubscriptionManager(store)
        assert again.load_subscription("sub", lambda e: None)
        assert [d["sequence"] for d in again.get_dead_letters("sub")] == [3]
        assert again.get_subscription_status("sub")["last_sequence"] == 5  # type: ignore[index]
        with pytest.raises(errors.InvalidArgumentError, match="no event to skip"):
            again.skip_event("sub")
    finally:
        store.close()


def test_dead_letter_undecodable_parks_such_events_at_once(tmp_path: Path) -> None:
    store, _ = store_with_undecodable_event(tmp_path)
    got: list[int] = []
    try:
        manager = SubscriptionManager(store)
        manager.create_subscription(
            "sub", lambda e: got.append(e.data["i"]), max_errors=3, start_from=0, dead_letter_undecodable=True
        )
        manager.catch_up("sub")
        manager.catch_up("sub")
        assert got == [1, 2, 4, 5]
        status = manager.get_subscription_status("sub")
        assert status is not None and status["enabled"] and status["error_count"] == 0
        assert [d["sequence"] for d in manager.get_dead_letters("sub")] == [3]
    finally:
        store.close()


def test_other_failures_are_still_retried_with_dead_letter_undecodable(tmp_path: Path) -> None:
    store = SqliteEventStore(sqlite_url(tmp_path / "events.db"))
    try:
        store.append(new_event())

        def fail(event: Event) -> None:
            raise ValueError("handler bug")

        manager = SubscriptionManager(store)
        manager.create_subscription("sub", fail, max_errors=2, start_from=0, dead_letter_undecodable=True)
        manager.process_once()
        manager.process_once()
        status = manager.get_subscription_status("sub")
        assert status is not None and not status["enabled"] and status["error_count"] == 2
        assert manager.get_dead_letters("sub") == [] and status["last_sequence"] == 0
    finally:
        store.close()


# --- EventQuery.event_types ------------------------------------------------------------------


def test_event_types_takes_a_single_type(store: EventStore) -> None:
    store.append_batch(
        [new_event(event_type=EventType.STAGE_STARTED), new_event(event_type=EventType.TASK_COMPLETED)]
    )
    for one in ("stage.started", EventType.STAGE_STARTED):
        found = list(store.get_events(EventQuery(event_types=one)))  # type: ignore[arg-type]
        assert [e.event_type for e in found] == [EventType.STAGE_STARTED], one
    both = list(store.get_events(EventQuery(event_types=["stage.started", EventType.TASK_COMPLETED])))
    assert len(both) == 2


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("stage.startd", '"stage.started"'), ("STAGE_STARTED", '"stage.started"'), ("nonsense", "EventType")],
)
def test_unknown_event_type_names_are_refused(store: EventStore, name: str, suggestion: str) -> None:
    store.append(new_event(event_type=EventType.STAGE_STARTED))
    with pytest.raises(
        errors.InvalidArgumentError, match=f"^EventQuery.event_types: {name!r}".replace("'", '"')
    ) as e:
        list(store.get_events(EventQuery(event_types=[name])))  # type: ignore[list-item]
    assert suggestion in str(e.value)
    with pytest.raises(errors.InvalidArgumentError):
        store.count_events(EventQuery(event_types=name))  # type: ignore[arg-type, attr-defined]


def test_event_types_that_is_not_a_list_is_refused(store: EventStore) -> None:
    with pytest.raises(errors.ArgumentTypeError, match="must be a list of event types"):
        list(store.get_events(EventQuery(event_types=5)))  # type: ignore[arg-type]


# --- payload errors ------------------------------------------------------------------------


def test_deeply_nested_payload_error_gives_the_reason_first_and_a_short_path(store: EventStore) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["k"] = {}
        node = node["k"]
    with pytest.raises(errors.PayloadError) as e:
        store.append(new_event(data=deep))
    message = str(e.value)
    assert message.startswith("nesting deeper than"), message
    assert len(message) < 300 and "more ...]" in message
    assert message.count('["k"]') == 8  # four steps at each end of the path


# --- SQLite locations and access -----------------------------------------------------------


def test_a_file_where_a_directory_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "file.py").write_text("")
    with pytest.raises(errors.StoreOpenError, match=r"file\.py is a file, not a directory"):
        SqliteEventStore(f"sqlite:///{tmp_path}/file.py/x.db")
    with pytest.raises(errors.StoreOpenError, match=r"file\.py is a file, not a directory"):
        SqliteEventStore(f"sqlite:///{tmp_path}/file.py/deeper/x.db")
    assert not (tmp_path / "file.py" / "x.db").exists()


#: Run in a fresh interpreter: a store of 3 events in a directory its user cannot write (as
#: root, in children that become ``nobody``: root writes anywhere; the modules are imported
#: before, since ``nobody`` may not reach them on disk). Opening it for writing must
#: say why it cannot and point to ``?mode=ro``; ``?mode=ro`` must say what it lacks while no
#: process has the file open, and read it while one has (the ``-shm`` file then exists).
READ_ONLY_DIRECTORY = """
import os, sqlite3, sys
from stabilize_events import Event, EntityType, EventType, SqliteEventStore, errors

folder = sys.argv[1]
path = os.path.join(folder, "events.db")
url = "sqlite:///" + path
event = lambda: Event(event_type=EventType.TASK_STARTED, entity_type=EntityType.TASK, entity_id="t",
                      workflow_id="wf-1")
SqliteEventStore(url).append_batch([event() for _ in range(3)])
os.chmod(folder, 0o555)


def as_nobody(work):
    if os.geteuid() != 0:  # the directory is already unwritable to this user
        work()
        return
    pid = os.fork()
    if pid != 0:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(1)
        return
    code = 1
    try:
        os.setgid(65534)
        os.setuid(65534)
        work()
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def refused(open_and_use):
    try:
        open_and_use()
        print("no error")
    except errors.StoreError as e:
        print(e)


def unwritable():
    refused(lambda: SqliteEventStore(url).append(event()))
    refused(lambda: SqliteEventStore(url + "?mode=ro"))


def readable():
    print("read", len(SqliteEventStore(url + "?mode=ro").get_events_for_workflow("wf-1")))


as_nobody(unwritable)
writer = sqlite3.connect(path)  # another process's connection: the -shm file exists meanwhile
writer.execute("SELECT count(*) FROM event_log").fetchone()
as_nobody(readable)
writer.close()
"""


def test_read_only_directory_gives_a_hint_and_mode_ro_reads_it() -> None:
    # A folder right under the temporary directory, which nobody can reach.
    folder = Path(tempfile.mkdtemp(prefix="stabilize-events-ro-"))
    folder.chmod(0o755)
    try:
        done = subprocess.run(
            [sys.executable, "-c", READ_ONLY_DIRECTORY, str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
    assert done.returncode == 0, (done.stdout, done.stderr)
    writing, reading_alone, read = done.stdout.splitlines()
    assert re.search(r"not writable by this process.*\?mode=ro", writing), writing
    assert re.search(
        r"opened read-only \(\?mode=ro\), but reading a WAL database needs .*-shm", reading_alone
    )
    assert "open it read-only" not in reading_alone
    assert read == "read 3"


def test_read_only_mode_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    writer = SqliteEventStore(sqlite_url(path))
    try:
        writer.append_batch([new_event() for _ in range(3)])
        reader = SqliteEventStore(f"{sqlite_url(path)}?mode=ro")
        try:
            assert reader.get_current_sequence() == 3
            writer.append(new_event())  # seen by the read-only store as it is written
            assert len(reader.get_events_for_workflow("wf-1")) == 4
            with pytest.raises(
                errors.StoreError, match=r"^writing refused: .* opened read-only \(\?mode=ro\)"
            ):
                reader.append(new_event())
            with pytest.raises(errors.StoreError, match="read-only"):
                reader.save_snapshot(EntityType.WORKFLOW, "wf-1", "wf-1", 1, 1, {})  # type: ignore[attr-defined]
        finally:
            reader.close()
        assert writer.get_current_sequence() == 4
    finally:
        writer.close()


def test_read_only_mode_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreOpenError, match=r"missing\.db does not exist \(opened read-only"):
        SqliteEventStore(f"sqlite:///{tmp_path}/missing.db?mode=ro")
    assert not (tmp_path / "missing.db").exists()
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(errors.SchemaError, match="not an event store"):
        SqliteEventStore(f"sqlite:///{tmp_path}/other.db?mode=ro")
    with sqlite3.connect(tmp_path / "other.db") as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["t"]
    db.close()


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db?mode=rw", "sqlite:///x.db?cache=shared", "sqlite:///:memory:?mode=ro"]
)
def test_other_query_strings_are_refused(url: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        SqliteEventStore(url)


# --- metadata as a dict, handlers that cannot be called -----------------------------------


def test_event_takes_metadata_as_a_dict() -> None:
    event = Event(
        event_type=EventType.STAGE_STARTED,
        entity_type=EntityType.STAGE,
        entity_id="s",
        workflow_id="wf",
        metadata={"correlation_id": "wf", "actor": "me"},
    )
    assert event.metadata == EventMetadata(correlation_id="wf", actor="me")
    assert isinstance(event.metadata, EventMetadata)


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        ({"correlation": "wf"}, errors.InvalidArgumentError, "unknown key 'correlation'"),
        ("wf", errors.ArgumentTypeError, "^metadata must be an EventMetadata or a dict"),
        (42, errors.ArgumentTypeError, "^metadata must be an EventMetadata or a dict"),
    ],
)
def test_event_refuses_other_metadata_clearly(metadata: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Event(
            event_type=EventType.STAGE_STARTED,
            entity_type=EntityType.STAGE,
            entity_id="s",
            workflow_id="wf",
            metadata=metadata,
        )


def test_bus_refuses_a_handler_that_is_not_callable() -> None:
    bus = EventBus()
    with pytest.raises(errors.ArgumentTypeError, match=r"^handler must be callable, not str"):
        bus.subscribe("x", "notcallable")  # type: ignore[arg-type]
    assert bus.get_subscriptions() == []
    bus.publish(new_event())  # nothing was registered: nothing delivered, no error
    assert bus.stats.events_delivered == 0 and bus.stats.errors == 0
