"""PostgreSQL store: ordering under concurrency, caller transactions, live wake-up, bad input.

Runs against the server named by STABILIZE_EVENTS_POSTGRES_URL (`.ci/postgres` starts one);
skipped, naming the variable, when it is unset. The contract every store shares is checked
by tests/test_store_conformance.py, which includes this store then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import child_env, close_store, new_event, open_postgres, postgres_url
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from stabilize_events import (
    EntityType,
    EventReplayer,
    EventType,
    InMemoryEventStore,
    PostgresEventStore,
    ProjectionRunner,
    SubscriptionManager,
    errors,
)
from stabilize_events.projections import Projection, StageMetricsProjection

HERE = Path(__file__).parent


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PostgresEventStore]:
    s = open_postgres(tmp_path)
    yield s
    close_store(s)


def _url_with(**changes: Any) -> str:
    params = conninfo_to_dict(postgres_url())
    params.update(changes)
    return make_conninfo(**params)


# --- ordering: readers never step over a late commit ------------------------------------------


def test_read_stops_before_an_open_transaction_and_resumes_after_its_commit(
    store: PostgresEventStore,
) -> None:
    first = store.append(new_event())
    with psycopg.connect(postgres_url()) as caller:
        late = store.append(new_event(), connection=caller)  # reserved, not committed
        after = store.append(new_event())  # a higher sequence, committed first
        assert (first.sequence, late.sequence, after.sequence) == (1, 2, 3)
        # Every read stops before the open transaction's sequence: no gap, nothing skipped.
        assert [e.sequence for e in store.get_events_since(0)] == [1]
        assert store.get_events_since_committed("1") == ([], "1")
        assert [e.sequence for e in store.get_events_for_workflow("wf-1")] == [1]
        assert store.count_events() == 1 and store.get_current_sequence() == 1
        caller.commit()
    assert [e.sequence for e in store.get_events_since(1)] == [2, 3]
    events, cursor = store.get_events_since_committed("1")
    assert [e.event_id for e in events] == [late.event_id, after.event_id] and cursor == "3"


def test_a_rolled_back_caller_transaction_releases_the_readers(store: PostgresEventStore) -> None:
    with psycopg.connect(postgres_url()) as caller:
        gone = store.append(new_event(), connection=caller)
        kept = store.append(new_event())
        assert store.get_events_since(0) == []
        caller.rollback()
    assert [e.event_id for e in store.get_events_since(0)] == [kept.event_id]
    assert store.get_event_by_id(gone.event_id) is None


def _spawn_writer(
    store: PostgresEventStore, name: str, batches: int, size: int, hold_every: int
) -> subprocess.Popen[str]:
    env = child_env(HERE)
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "helpers" / "pg_writer.py"),
            postgres_url(),
            str(store.resolved_schema()),
            name,
            str(batches),
            str(size),
            str(hold_every),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_writer_processes_holding_transactions_open_while_readers_poll(
    store: PostgresEventStore, tmp_path: Path
) -> None:
    """Three processes append batches, some inside caller transactions held open while later
    sequences commit; two pollers read "everything since my position" meanwhile. Each poller
    sees every committed event exactly once, in sequence order; sequences are unique and each
    batch's are consecutive."""
    writers = [_spawn_writer(store, f"w{i}", batches=40, size=5, hold_every=3) for i in range(3)]
    polls: list[list[int]] = [[], []]
    done = threading.Event()
    problems: list[str] = []

    def poll(seen: list[int], commit_cursor: bool) -> None:
        position, cursor = 0, "0"
        while True:
            finished = done.is_set()
            if commit_cursor:
                events, cursor = store.get_events_since_committed(cursor, limit=7)
            else:
                events = store.get_events_since(position, limit=7)
            for e in events:
                if e.sequence <= position:
                    problems.append(f"sequence {e.sequence} read again after {position}")
                position = e.sequence
                seen.append(e.sequence)
            if finished and not events:
                return

    pollers = [threading.Thread(target=poll, args=(polls[i], i == 1)) for i in range(2)]
    for t in pollers:
        t.start()
    outputs = []
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        outputs.append(out)
    done.set()
    for t in pollers:
        t.join(timeout=120)
    assert not problems, problems[:5]
    batches = [[int(s) for s in line.split()] for out in outputs for line in out.splitlines()]
    assert len(batches) == 3 * 40
    for seqs in batches:
        assert seqs == list(range(seqs[0], seqs[0] + 5)), f"batch not consecutive: {seqs}"
    written = sorted(s for seqs in batches for s in seqs)
    assert len(set(written)) == len(written) == 600
    stored = [e.sequence for e in store.get_events_since(0, limit=10_000)]
    assert stored == written
    for seen in polls:
        assert seen == written  # every event, once, in order: nothing stepped over


# --- appending inside a caller's transaction ---------------------------------------------------


def test_append_through_a_caller_connection_commits_and_rolls_back_with_it(
    store: PostgresEventStore,
) -> None:
    with psycopg.connect(postgres_url()) as conn:
        assert store.can_join(conn)
        conn.execute("CREATE TEMP TABLE caller_state (x int)")
        conn.execute("INSERT INTO caller_state VALUES (1)")
        rolled = store.append_batch([new_event(), new_event()], connection=conn)
        conn.rollback()
        kept = store.append(new_event(), connection=conn)
        conn.commit()
    assert all(store.get_event_by_id(e.event_id) is None for e in rolled)
    got = store.get_event_by_id(kept.event_id)
    assert got == kept
    # The rolled-back sequences were reserved, so the committed one comes after them.
    assert kept.sequence > rolled[-1].sequence


def test_autocommit_caller_connection_appends_in_a_transaction_of_its_own(store: PostgresEventStore) -> None:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        stored = store.append_batch([new_event(), new_event()], connection=conn)
    assert [e.sequence for e in store.get_events_since(0)] == [e.sequence for e in stored]


def test_duplicate_through_a_caller_connection_writes_nothing_and_keeps_the_transaction(
    store: PostgresEventStore,
) -> None:
    existing = store.append(new_event())
    with psycopg.connect(postgres_url()) as conn:
        with pytest.raises(errors.DuplicateEventError, match=existing.event_id):
            store.append_batch([new_event(), new_event(event_id=existing.event_id)], connection=conn)
        ok = store.append(new_event(), connection=conn)  # the caller's transaction still works
        conn.commit()
    assert [e.event_id for e in store.get_events_since(0)] == [existing.event_id, ok.event_id]


def test_connection_on_another_database_or_kind_is_refused(store: PostgresEventStore, tmp_path: Path) -> None:
    other_db = "se_other_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {other_db}")
    try:
        with psycopg.connect(_url_with(dbname=other_db)) as conn:
            assert not store.can_join(conn)
            with pytest.raises(errors.InvalidArgumentError, match="not on this store's database"):
                store.append(new_event(), connection=conn)
        # Same database, other schema: another event table, refused too.
        other = open_postgres(tmp_path, "other.db")
        try:
            with psycopg.connect(postgres_url()) as conn:
                assert store.can_join(conn) and other.can_join(conn)
        finally:
            close_store(other)
        import sqlite3

        with pytest.raises(errors.ArgumentTypeError, match="psycopg 3 connection"):
            store.append(new_event(), connection=sqlite3.connect(":memory:"))
        assert store.count_events() == 0
    finally:
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {other_db}")


# --- replay, projections, subscriptions ------------------------------------------------------


@pytest.mark.timeout(120)
def test_large_appends_complete_alone_in_batches_and_through_a_caller(store: PostgresEventStore) -> None:
    # Large appends go statement by statement (a pipelined 16 MiB append hung now and then in
    # CI: part of the message left unsent while libpq waited for the answer). Each path here.
    big = {"blob": b"\x07" * (15 << 20)}
    for _ in range(4):
        store.append(new_event(data=big))
    batch = store.append_batch([new_event(data={"blob": "y" * (200 << 10)}) for _ in range(30)])
    with psycopg.connect(postgres_url()) as caller:
        through = store.append(new_event(data=big), connection=caller)
    assert store.count_events() == 4 + 30 + 1
    assert store.get_event_by_id(batch[-1].event_id).data == {"blob": "y" * (200 << 10)}
    assert store.get_event_by_id(through.event_id).data == big


def _workflow_events(workflow_id: str) -> list[Any]:
    from stabilize_events import EventMetadata, create_stage_event, create_workflow_event

    meta = EventMetadata(correlation_id=workflow_id)
    return [
        create_workflow_event(
            EventType.WORKFLOW_CREATED, workflow_id, 1, {"application": "app", "name": "n"}, meta
        ),
        create_workflow_event(EventType.WORKFLOW_STARTED, workflow_id, 2, {}, meta),
        create_stage_event(EventType.STAGE_STARTED, "st-1", workflow_id, 1, {"name": "build"}, meta),
        create_stage_event(
            EventType.STAGE_COMPLETED, "st-1", workflow_id, 2, {"name": "build", "status": "SUCCEEDED"}, meta
        ),
        create_workflow_event(EventType.WORKFLOW_COMPLETED, workflow_id, 3, {}, meta),
    ]


def test_replayer_over_postgres_equals_the_in_memory_store(store: PostgresEventStore) -> None:
    reference = InMemoryEventStore()
    events = _workflow_events("wf-r")
    for e in events:
        reference.append(e)
    store.append_batch(events)
    ours = EventReplayer(store).rebuild_workflow_state("wf-r")
    theirs = EventReplayer(reference).rebuild_workflow_state("wf-r")
    assert ours == theirs and ours["status"] is not None
    assert EventReplayer(store).rebuild_workflow_state("wf-r", as_of_sequence=2) == EventReplayer(
        reference
    ).rebuild_workflow_state("wf-r", as_of_sequence=2)


def test_projection_runner_and_durable_subscription_catch_up(store: PostgresEventStore) -> None:
    store.append_batch(_workflow_events("wf-p"))
    runner = ProjectionRunner(store, StageMetricsProjection())
    assert runner.catch_up() == 5 and runner.position == 5
    got: list[int] = []
    manager = SubscriptionManager(store)
    manager.create_subscription("sub-1", lambda e: got.append(e.sequence), start_from="beginning")
    assert manager.catch_up("sub-1") == 5 and got == [1, 2, 3, 4, 5]
    saved = store.get_subscription("sub-1")
    assert saved is not None and saved["last_sequence"] == 5


# --- live delivery ------------------------------------------------------------------------


def test_wait_for_events_wakes_on_another_processes_commit(store: PostgresEventStore, tmp_path: Path) -> None:
    assert store.wait_for_events(0, timeout=0.2) is False
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(store.wait_for_events(0, timeout=60)))
    waiter.start()
    writer = _spawn_writer(store, "live", batches=1, size=1, hold_every=0)
    _out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    waiter.join(timeout=60)
    assert result == [True]
    assert store.notify_channel.startswith("stabilize_events_")


# --- bad input -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_is_a_clear_error() -> None:
    url = _url_with(host="127.0.0.1", port=str(_free_port()))
    with pytest.raises(errors.StoreOpenError, match=r"cannot connect to PostgreSQL.*start the server"):
        PostgresEventStore(url, connect_timeout=2)


def test_wrong_password_is_a_clear_error() -> None:
    with pytest.raises(errors.StoreOpenError, match="password") as info:
        PostgresEventStore(_url_with(password="certainly-wrong"))
    assert "certainly-wrong" not in str(info.value)


def test_missing_database_is_a_clear_error() -> None:
    with pytest.raises(errors.StoreOpenError, match='database "no_such_db_x" does not exist'):
        PostgresEventStore(_url_with(dbname="no_such_db_x"))


def test_missing_schema_and_missing_tables_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.SchemaError, match="schema 'no_such_schema' does not exist"):
        PostgresEventStore(postgres_url(), schema="no_such_schema")
    name = "empty_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    with pytest.raises(errors.SchemaError, match=r"tables are missing.*create_tables=True") as info:
        PostgresEventStore(postgres_url(), schema=name)
    assert "CREATE TABLE IF NOT EXISTS" in str(info.value)


def test_another_layout_version_is_refused(tmp_path: Path) -> None:
    opened = open_postgres(tmp_path)
    schema = opened.resolved_schema()
    opened.close()
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        admin.execute(f"UPDATE {schema}.event_store_meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(errors.SchemaError, match="layout version '0'"):
        PostgresEventStore(postgres_url(), schema=schema)


def test_closed_store_refuses_calls(store: PostgresEventStore) -> None:
    store.close()
    with pytest.raises(errors.StoreClosedError):
        store.append(new_event())
    with pytest.raises(errors.StoreClosedError):
        store.get_events_since(0)


def test_resolved_schema_and_search_path(tmp_path: Path) -> None:
    s = open_postgres(tmp_path)
    schema = s.resolved_schema()
    assert schema is not None
    try:
        # Without schema=, the tables are found on the search_path given in the URL.
        found = PostgresEventStore(_url_with(options=f"-csearch_path={schema}"))
        try:
            assert found.resolved_schema() == schema
            found.append(new_event(entity_type=EntityType.STAGE))
            assert s.count_events() == 1
        finally:
            found.close()
    finally:
        s.close()


def test_subscription_manager_wakes_on_another_processes_commit(store: PostgresEventStore) -> None:
    """The manager polls every 10 minutes here: an event from another process reaches the
    handler at once only because the commit's NOTIFY wakes it."""
    got: list[int] = []
    arrived = threading.Event()

    def handler(event: Any) -> None:
        got.append(event.sequence)
        arrived.set()

    store.append(new_event())
    manager = SubscriptionManager(store, poll_interval=600)
    manager.create_subscription("live-sub", handler, start_from="beginning")
    manager.start()
    try:
        assert arrived.wait(60) and got == [1]  # the first poll, at start
        arrived.clear()
        writer = _spawn_writer(store, "wake", batches=1, size=1, hold_every=0)
        _out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert arrived.wait(60), "the manager did not wake on the other process's commit"
        assert got == [1, 2]
    finally:
        manager.stop()


def test_projection_runner_leaves_a_live_event_ahead_of_an_open_transaction(
    store: PostgresEventStore,
) -> None:
    from stabilize_events import EventBus

    bus = EventBus()
    seen: list[int] = []

    class Recorder(Projection):
        @property
        def name(self) -> str:
            return "recorder"

        def apply(self, event: Any) -> None:
            seen.append(event.sequence)

        def get_state(self) -> Any:
            return list(seen)

    runner = ProjectionRunner(store, Recorder(), bus=bus)
    runner.start()
    try:
        with psycopg.connect(postgres_url()) as caller:
            store.append(new_event(), connection=caller)  # sequence 1, still open
            live = store.append(new_event())  # sequence 2, committed
            bus.publish(live)
            assert seen == [] and runner.position == 0  # not applied over the open sequence 1
            caller.commit()
        assert runner.catch_up() == 2
        assert seen == [1, 2] and runner.position == 2
    finally:
        runner.stop()


# --- the server restarted mid-stream ------------------------------------------------------------


def test_server_restart_mid_stream_loses_no_acknowledged_event_and_halves_no_batch(
    store: PostgresEventStore,
) -> None:
    """``pg_ctl restart -m immediate`` (a crash, then recovery) while a thread appends batches:
    every acknowledged batch is stored whole, every failed one is all there or not at all, and
    the same store object works again once the server is back."""
    pg_ctl, data = os.environ.get("STABILIZE_EVENTS_PG_CTL"), os.environ.get("STABILIZE_EVENTS_PG_DATA")
    if not pg_ctl or not data:
        pytest.skip("STABILIZE_EVENTS_PG_CTL / STABILIZE_EVENTS_PG_DATA not set (.ci/postgres sets them)")
    acknowledged: list[list[str]] = []
    failed: list[tuple[list[str], str]] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            batch = [new_event(workflow_id="wf-restart") for _ in range(50)]
            ids = [e.event_id for e in batch]
            try:
                store.append_batch(batch)
                acknowledged.append(ids)
            except errors.StoreError as error:
                failed.append((ids, str(error)))
                time.sleep(0.05)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 20:
            time.sleep(0.01)
        # The restarted server must not inherit a pipe of ours: run() would wait for it forever.
        subprocess.run(
            [*pg_ctl.split(), "restart", "-D", data, "-m", "immediate", "-w", "-t", "60"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        before = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(timeout=120)
    assert len(acknowledged) >= before + 20, f"the store did not work again: {failed[-1:]}"
    stored = {e.event_id for e in store.get_events_for_workflow("wf-restart")}
    for ids in acknowledged:
        assert set(ids) <= stored
    for ids, why in failed:
        present = [i in stored for i in ids]
        assert all(present) or not any(present), f"a failed batch is half-written ({why})"
    assert len(stored) % 50 == 0
