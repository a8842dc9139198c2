"""``stabilize-events upgrade``: carrying a database written by Stabilize's own event store over.

The source database is made by Stabilize 0.33.1 itself: real workflows run through
its queue processor with `stabilize.events.SqliteEventStore` recording (workflow
store, queue and events in one file, as applications have them), snapshots and
durable subscription positions written through its APIs. The upgraded events are
compared with what Stabilize's own store reads back.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stabilize.events as se
from conftest import kill_upgrade_midway, sqlite_url
from stabilize import (
    Orchestrator,
    PythonTask,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
)
from stabilize.persistence.connection import get_connection_manager
from stabilize_events import SqliteEventStore, _core
from stabilize_events.cli import main
from stabilize_events.errors import SchemaError
from stabilize_events.snapshots import SnapshotStore
from stabilize_events.types import RAW_EVENT_TYPE, EntityType, EventType
from stabilize_events.upgrade.convert import event_fields

#: Written into Stabilize's table as a newer Stabilize would: a type this build does not know,
#: and a timestamp at another offset (the instant is kept, read back in UTC).
UNKNOWN_TYPE = "stage.teleported"
OFFSET_TIME = "2024-05-01T14:30:00.654321+02:00"

STABILIZE_TABLES = ("events", "snapshots", "event_subscriptions")
OUR_TABLES = ("event_log", "event_snapshot", "event_subscription")


@dataclass(frozen=True)
class Source:
    """A Stabilize database and what was written into it."""

    path: Path
    workflow_ids: list[str]
    events: int
    subscriptions: dict[str, int]


def _python_stage(ref: str, script: str, after: set[str] | None = None) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="python",
        name=f"Stage {ref}",
        requisite_stage_ref_ids=after or set(),
        context={"script": script},
        tasks=[
            TaskExecution.create(
                name=f"run {ref}", implementing_class="python", stage_start=True, stage_end=True
            )
        ],
    )


def _run_workflows(url: str) -> list[str]:
    """Run three workflows (parallel stages, one failing) with Stabilize recording into ``url``."""
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url, table_name="queue_messages")
    queue._create_table()
    event_store = se.SqliteEventStore(url, create_tables=True)
    registry = TaskRegistry()
    registry.register("python", PythonTask)
    se.configure_event_sourcing(event_store)
    try:
        processor = QueueProcessor(queue, store=store, task_registry=registry)
        orchestrator = Orchestrator(queue)
        ids = []
        for i in range(3):
            last = "raise ValueError('disk full')" if i == 2 else "RESULT = {'rows': [1, 2.5, None, True]}"
            workflow = Workflow.create(
                application="upgrade-test",
                name=f"pipeline {i} — ünïcode ✓",
                stages=[
                    _python_stage("fetch", f"RESULT = {{'n': {i}, 'text': 'héllo ✓'}}"),
                    _python_stage("left", "RESULT = 1", {"fetch"}),
                    _python_stage("right", last, {"fetch"}),
                ],
            )
            store.store(workflow)
            orchestrator.start(workflow)
            processor.process_all(timeout=30.0)
            ids.append(workflow.id)
        return ids
    finally:
        se.reset_event_recorder()
        se.reset_event_bus()


def _add_snapshots_and_subscriptions(url: str, workflow_ids: list[str]) -> dict[str, int]:
    """Snapshots of two workflows' replayed state and two durable subscriptions, through Stabilize."""
    event_store = se.SqliteEventStore(url, create_tables=False)
    snapshots = se.SnapshotStore(event_store)
    replayer = se.EventReplayer(event_store)
    for wf in workflow_ids[:2]:
        events = event_store.get_events_for_workflow(wf)
        middle = events[len(events) // 2]
        state = replayer.rebuild_workflow_state(wf, as_of_sequence=middle.sequence)
        snapshots.create_workflow_snapshot(state, wf, version=middle.version, sequence=middle.sequence)
    manager = se.SubscriptionManager(event_store)
    manager.create_subscription(
        "audit", lambda e: None, event_types=[se.EventType.WORKFLOW_COMPLETED], start_from="beginning"
    )
    manager.create_subscription(
        "hooks",
        lambda e: None,
        entity_filter={"entity_type": "stage"},
        webhook_url="https://hooks.example/stage",
        start_from="beginning",
    )
    positions = {"audit": event_store.get_current_sequence() - 3, "hooks": 7}
    for sub, position in positions.items():
        event_store.update_subscription_sequence(sub, position)
    return positions


@contextmanager
def _db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, committed and closed on the way out (an unclosed one
    lingers until collected and blocks Stabilize's journal mode change)."""
    conn = sqlite3.connect(path)
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def _add_newer_rows(path: Path) -> None:
    """Two rows as a newer Stabilize writes them: an unknown type, and another UTC offset."""
    with _db(path) as conn:
        for event_id, event_type, timestamp in [
            ("01NEWERTYPE000000000000000", UNKNOWN_TYPE, "2024-05-01T12:00:00.000001+00:00"),
            ("01OFFSETTIME00000000000000", "stage.completed", OFFSET_TIME),
        ]:
            conn.execute(
                "INSERT INTO events (event_id, event_type, timestamp, entity_type, entity_id, workflow_id, "
                "version, data, correlation_id, causation_id, actor, source_handler, schema_version) "
                "VALUES (?, ?, ?, 'stage', 'stage-x', 'wf-newer', 1, ?, 'wf-newer', NULL, NULL, NULL, NULL)",
                (event_id, event_type, timestamp, '{"speed": 1e300, "nested": {"k": [-0.0, "✓"]}}'),
            )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A Stabilize database, made once; tests upgrade copies of it (`fresh`)."""
    logging.getLogger("stabilize").setLevel(logging.CRITICAL)
    path = tmp_path_factory.mktemp("stabilize") / "app.db"
    url = sqlite_url(path)
    ids = _run_workflows(url)
    positions = _add_snapshots_and_subscriptions(url, ids)
    _add_newer_rows(path)
    with _db(path) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert events > 40  # 15 per workflow, and the two newer rows
    return Source(path, ids, events, positions)


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy (Stabilize's connections stay open, with pages in its WAL)."""
    with _db(src) as a, _db(dst) as b:
        a.backup(b)


@pytest.fixture
def fresh(source: Source, tmp_path: Path) -> Path:
    """A copy of the Stabilize database of `source`, for one test."""
    path = tmp_path / "app.db"
    _copy(source.path, path)
    return path


def _tables(path: Path) -> set[str]:
    with _db(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _count(path: Path, table: str) -> int:
    with _db(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    with _db(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_unchanged(before: dict[str, bytes], folder: Path) -> None:
    """Every file is as it was. Reading a database in WAL mode (ours) may leave SQLite's
    empty -wal and its -shm index beside it: they hold no data."""
    after = _files(folder)
    assert {name: after[name] for name in before if name in after} == before
    for name in after.keys() - before.keys():
        assert name.endswith(("-shm", "-wal")) and name[:-4] in before, name
        if name.endswith("-wal"):
            assert after[name] == b"", name


def _upgrade(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["upgrade", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _fields(event: Any) -> dict[str, Any]:
    """An event of either package as comparable values (they share the attribute names)."""
    return event_fields(event)


@contextmanager
def stabilize_store(path: Path) -> Iterator[se.SqliteEventStore]:
    """Stabilize's own event store on ``path``, its connection closed afterwards.

    Stabilize sets ``journal_mode = DELETE`` on every connection it opens, which
    fails while our store (WAL) is open on the file: its reads come first.
    """
    url = sqlite_url(path)
    try:
        yield se.SqliteEventStore(url, create_tables=False)
    finally:
        get_connection_manager().close_sqlite_connection(url)


def _assert_same_history(path: Path, workflow_ids: list[str]) -> None:
    """Our store reads every event as Stabilize's own store reads its row."""
    workflows = [*workflow_ids, "wf-newer"]
    with stabilize_store(path) as theirs:
        expected = {wf: [_fields(e) for e in theirs.get_events_for_workflow(wf)] for wf in workflows}
        everything = [_fields(e) for e in theirs.get_events_since(0, limit=1_000_000)]
    with SqliteEventStore(sqlite_url(path)) as ours:
        for wf in workflows:
            assert expected[wf]
            assert [_fields(e) for e in ours.get_events_for_workflow(wf)] == expected[wf]
        assert [_fields(e) for e in ours.get_events_since(0, limit=1_000_000)] == everything


def test_store_refuses_a_database_not_upgraded_and_names_the_command(fresh: Path) -> None:
    url = sqlite_url(fresh)
    before = _tables(fresh)
    with pytest.raises(SchemaError) as caught:
        SqliteEventStore(url)
    message = str(caught.value)
    command = f"stabilize-events upgrade {url}"
    assert command in message
    assert message.index("not been upgraded") < message.index(command)
    assert "events" in message.split(command)[0]
    assert _tables(fresh) == before  # our tables were not added


def test_an_empty_stabilize_events_table_is_no_reason_to_refuse(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    SqliteWorkflowStore(url, create_tables=True)
    se.SqliteEventStore(url, create_tables=True)  # Stabilize's tables, nothing recorded yet
    get_connection_manager().close_sqlite_connection(url)
    with SqliteEventStore(url) as ours:
        assert ours.count_events() == 0
        assert ours.append(_core.Event(event_type="workflow.created", entity_type="workflow")).sequence == 1


def test_dry_run_reports_and_writes_nothing(
    fresh: Path, source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(fresh.parent)
    code, out, _ = _upgrade(capsys, sqlite_url(fresh))
    assert code == 0
    _assert_unchanged(before, fresh.parent)
    assert f"{source.events:,} events (sequences 1 to {source.events:,})" in out
    assert "2 snapshots, 2 subscriptions" in out
    assert "not created yet" in out
    assert f"Would copy {source.events:,} events" in out
    assert "1 event has a timestamp with an offset other than UTC" in out  # the +02:00 row
    assert "nothing was written" in out


def test_upgrade_copies_events_snapshots_and_subscriptions_as_stabilize_reads_them(
    fresh: Path, source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(fresh)
    code, out, err = _upgrade(capsys, url, "--apply")
    assert code == 0, err
    assert f"Copied {source.events:,} events." in out
    assert "all match" in out
    assert set(STABILIZE_TABLES) <= _tables(fresh)  # kept without --drop-old
    _assert_same_history(fresh, source.workflow_ids)

    with stabilize_store(fresh) as theirs:
        their_snapshots = {
            wf: theirs.get_latest_snapshot(se.EntityType.WORKFLOW, wf) for wf in source.workflow_ids[:2]
        }
        their_subs = {sub: theirs.get_subscription(sub) for sub in source.subscriptions}
    # A type this build does not know keeps its string in the table.
    with _db(fresh) as conn:
        stored_type = conn.execute(
            "SELECT event_type FROM event_log WHERE event_id = '01NEWERTYPE000000000000000'"
        ).fetchone()[0]
    assert stored_type == UNKNOWN_TYPE
    with SqliteEventStore(url) as ours:  # opens normally beside the old tables
        unknown = ours.get_event_by_id("01NEWERTYPE000000000000000")
        assert unknown is not None and unknown.event_type is EventType.UNKNOWN
        assert unknown.data[RAW_EVENT_TYPE] == UNKNOWN_TYPE
        shifted = ours.get_event_by_id("01OFFSETTIME00000000000000")
        assert shifted is not None
        assert shifted.timestamp == datetime.fromisoformat(OFFSET_TIME)
        assert shifted.timestamp.utcoffset() is not None and shifted.timestamp.microsecond == 654321

        for wf in source.workflow_ids[:2]:
            their_snapshot = their_snapshots[wf]
            our_snapshot = ours.get_snapshots(EntityType.WORKFLOW, wf, None, 1)[0]
            assert their_snapshot is not None
            for key in ("entity_id", "workflow_id", "version", "sequence", "state"):
                assert our_snapshot[key] == their_snapshot[key], key
            # Recomputed in our form (over the stored bytes): Stabilize's hash would fail our check.
            assert (
                our_snapshot["state_hash"].startswith("sha256-msgpack:") and our_snapshot["hash_ok"] is True
            )
            assert our_snapshot["state_hash"] != their_snapshot["state_hash"]
            # The reference's call (Stabilize's SnapshotStore makes it) gives Stabilize's own form.
            for_stabilize = ours.get_latest_snapshot(EntityType.WORKFLOW, wf)
            assert for_stabilize is not None and for_stabilize["state_hash"] == their_snapshot["state_hash"]
            usable = SnapshotStore(ours).get_latest_snapshot(
                EntityType.WORKFLOW, wf, max_event_time=datetime.now(UTC)
            )
            assert usable is not None and usable.sequence == their_snapshot["sequence"]

        for sub, position in source.subscriptions.items():
            their_sub = their_subs[sub]
            our_sub = ours.get_subscription(sub)
            assert their_sub is not None and our_sub is not None
            assert our_sub["last_sequence"] == their_sub["last_sequence"] == position
            for key in ("event_types", "entity_filter", "webhook_url"):
                expected = their_sub[key]
                if key == "event_types" and expected is not None:
                    expected = [EventType(t.value) for t in expected]
                assert our_sub[key] == expected, key

        # New events follow Stabilize's last sequence.
        appended = ours.append(_core.Event(event_type="workflow.created", entity_type="workflow"))
        assert appended.sequence == source.events + 1


def test_rerun_after_completion_adds_nothing(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(fresh)
    assert _upgrade(capsys, url, "--apply")[0] == 0
    before = {t: _rows(fresh, t) for t in OUR_TABLES}
    code, out, _ = _upgrade(capsys, url, "--apply")
    assert code == 0
    assert "Copied 0 events" in out and "all match" in out
    assert {t: _rows(fresh, t) for t in OUR_TABLES} == before
    code, out, _ = _upgrade(capsys, url)
    assert code == 0 and "Would copy 0 events" in out


def test_an_upgrade_killed_midway_resumes_to_a_correct_result(
    fresh: Path, source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    # More events, through Stabilize's own store, so that the copy takes many chunks.
    url = sqlite_url(fresh)
    with stabilize_store(fresh) as theirs:
        for b in range(15):
            theirs.append_batch(
                [
                    se.Event(
                        event_type=se.EventType.CONTEXT_UPDATED,
                        entity_type=se.EntityType.STAGE,
                        entity_id=f"stage-{b}",
                        workflow_id=f"wf-bulk-{b}",
                        version=i + 1,
                        data={"i": i, "batch": b, "context": {"k": [i, str(i)]}},
                        metadata=se.EventMetadata(correlation_id=f"wf-bulk-{b}", actor="bulk"),
                    )
                    for i in range(1_000)
                ]
            )
    total = _count(fresh, "events")
    chunk = 3
    # Its progress lines (one per chunk, 45 bytes or more each) far exceed a pipe's buffer
    # (64 KiB), which this test stops reading: the child is blocked mid-copy when killed.
    assert total // chunk * 45 > 3 * 65536
    kill_upgrade_midway(url, chunk)

    copied = _count(fresh, "event_log")
    assert 3 * chunk <= copied < total
    assert copied % chunk == 0  # whole chunks only
    with pytest.raises(SchemaError, match="stabilize-events upgrade"):
        SqliteEventStore(url)  # half an upgrade is refused too

    code, out, err = _upgrade(capsys, url, "--apply")
    assert code == 0, err
    assert f"Copied {total - copied:,} events ({copied:,} were copied before)." in out
    assert _count(fresh, "event_log") == total
    _assert_same_history(fresh, source.workflow_ids)


def test_drop_old_only_after_a_verification_without_differences(
    fresh: Path, source: Source, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(fresh)
    assert _upgrade(capsys, url, "--apply")[0] == 0
    with _db(fresh) as conn:  # damage two upgraded events
        conn.execute("UPDATE event_log SET actor = 'mallory' WHERE sequence = 5")
        conn.execute(
            "UPDATE event_log SET data = ? WHERE sequence = 9", (_core.encode_payload({"forged": True}),)
        )
    code, _, err = _upgrade(capsys, url, "--apply", "--drop-old")
    assert code == 3
    assert "2 differences" in err
    assert "sequence 5 " in err and "actor: expected 'system', got 'mallory'" in err
    assert "sequence 9 " in err and "forged" in err
    assert set(STABILIZE_TABLES) <= _tables(fresh)

    with _db(fresh) as conn:  # repair from the source rows, through our own path
        conn.execute("DELETE FROM event_log WHERE sequence IN (5, 9)")
    code, out, err = _upgrade(capsys, url, "--apply", "--drop-old")
    assert code == 0, err
    assert "Copied 2 events" in out and "Dropped Stabilize's tables" in out
    tables = _tables(fresh)
    assert not set(STABILIZE_TABLES) & tables
    assert {"pipeline_executions", "stage_executions", "queue_messages"} <= tables  # Stabilize's others
    with SqliteEventStore(url) as ours:
        assert ours.count_events() == source.events
        assert ours.get_subscription("audit") is not None
    code, _, err = _upgrade(capsys, url)
    assert code == 2 and "no Stabilize events table" in err


def test_a_row_that_cannot_be_carried_over_stops_the_upgrade_and_names_it(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(fresh)
    with _db(fresh) as conn:
        good = conn.execute("SELECT data FROM events WHERE sequence = 20").fetchone()[0]
        conn.execute("UPDATE events SET data = '{not json' WHERE sequence = 20")
    code, _, err = _upgrade(capsys, url, "--apply", "--chunk-size", "7")
    assert code == 1
    assert "sequence 20" in err and "not JSON" in err and "run the upgrade again" in err
    assert _count(fresh, "event_log") == 14  # the two whole chunks before it
    with _db(fresh) as conn:
        conn.execute("UPDATE events SET data = ? WHERE sequence = 20", (good,))
    assert _upgrade(capsys, url, "--apply")[0] == 0


def test_a_database_whose_event_log_holds_other_events_is_refused(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(fresh)
    core = _core.NativeStore.sqlite(url)  # our tables, written before the upgrade existed
    core.append(_core.Event(event_type="workflow.created", entity_type="workflow", entity_id="ours"))
    core.close()
    before = _files(fresh.parent)
    for args in ([url], [url, "--apply"]):
        code, _, err = _upgrade(capsys, *args)
        assert code == 2
        assert "share sequences" in err and "nothing was written" in err
    assert _count(fresh, "event_log") == 1
    _assert_unchanged(before, fresh.parent)


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Iterator[dict[str, str]]:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    ours = tmp_path / "ours.db"
    with SqliteEventStore(sqlite_url(ours)) as s:
        s.append(_core.Event(event_type="workflow.created", entity_type="workflow"))
    yield {
        "missing file": sqlite_url(tmp_path / "missing.db"),
        "not SQLite": sqlite_url(text),
        "no Stabilize tables": sqlite_url(ours),
        "not an SQLite URL": "mysql://localhost/app",
        "in memory": "sqlite:///:memory:",
    }


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing file", "no database file at"),
        ("not SQLite", "cannot be opened as an SQLite database"),
        ("no Stabilize tables", "no Stabilize events table"),
        ("not an SQLite URL", "not an SQLite URL"),
        ("in memory", "in-memory database"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str,
    says: str,
    bad_inputs: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _files(tmp_path)
    for args in ([bad_inputs[case]], [bad_inputs[case], "--apply", "--drop-old"]):
        code, out, err = _upgrade(capsys, *args)
        assert code == 2
        assert out == ""
        assert err.startswith("stabilize-events: error: ") and err.count("\n") == 1
        assert says in err
    _assert_unchanged(before, tmp_path)


def test_help_documents_exit_codes_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["upgrade", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--apply", "--drop-old", "--chunk-size", "exit codes:", "130", "example:"):
        assert needle in text
    assert "stabilize-events upgrade sqlite:///app.db --apply" in text
    with pytest.raises(SystemExit) as done:
        main(["upgrade", "sqlite:///x.db", "--chunk-size", "0"])
    assert done.value.code == 2


def test_the_check_runs_while_a_store_of_this_process_has_the_file_open(tmp_path: Path) -> None:
    # The check reads through Python's sqlite3, the same SQLite library as the store's: a store
    # already open on the file does not keep a second one from seeing Stabilize's new events.
    url = sqlite_url(tmp_path / "app.db")
    first = SqliteEventStore(url)
    writer = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('CREATE TABLE events (sequence INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT, "
        "event_type TEXT, timestamp TEXT, entity_type TEXT, entity_id TEXT, workflow_id TEXT, "
        "version INTEGER, data TEXT, correlation_id TEXT, causation_id TEXT, actor TEXT, "
        "source_handler TEXT, schema_version INTEGER)'); "
        "c.execute(\"INSERT INTO events VALUES (7, 'e7', 'stage.started', '2024-01-01T00:00:00+00:00', "
        "'stage', 's', 'w', 1, '{}', 'w', NULL, NULL, NULL, 1)\"); c.commit(); c.close()"
    )
    subprocess.run([sys.executable, "-c", writer, str(tmp_path / "app.db")], check=True, timeout=60)
    with pytest.raises(SchemaError, match="sequences 7 to 7"):
        SqliteEventStore(url)
    first.close()
    with pytest.raises(SchemaError, match="sequences 7 to 7"):
        SqliteEventStore(url)
