"""Snapshots a rebuild hands over to be saved after it returns, and where a rebuild looks
for one: pending saves seen by reads, written by ``flush``/``close``, failures logged, a crash
mid-save losing the snapshot only; small workflows folded with no look-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import child_env, new_store, sqlite_url
from helpers.replay_oracle import fold
from stabilize_events import EntityType, EventStore, SqliteEventStore, errors
from stabilize_events.defaults import SNAPSHOT_LOOK_UP_AT_EVENTS
from stabilize_events.replay import EventReplayer
from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore
from test_replay import WF
from test_snapshots import policy_replayer, same_state, stages_and_tasks, stored_workflow, workflow_events


def snapshot_rows(path: Path) -> list[tuple[int, bytes, str]]:
    """(sequence, state, state_hash) of every stored snapshot, read by another connection."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT sequence, state, state_hash FROM event_snapshot ORDER BY sequence")
        return rows.fetchall()
    finally:
        conn.close()


def test_close_writes_the_pending_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch(workflow_events(600))
    first = policy_replayer(store).replay(WF)
    store.close()

    ((sequence, state, stored_hash),) = snapshot_rows(path)
    assert sequence == first.last_sequence
    assert stored_hash == "sha256-msgpack:" + hashlib.sha256(state).hexdigest()
    reopened = SqliteEventStore(sqlite_url(path))
    try:
        again = EventReplayer(reopened, SnapshotStore(reopened)).replay(WF)
        assert (again.from_snapshot, again.events_replayed) == (True, 0)
        same_state(again.final_state, first.final_state)
    finally:
        reopened.close()


def test_flush_makes_pending_snapshots_durable_for_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    try:
        for k in range(5):
            store.append_batch(workflow_events(120, workflow_id=f"wf-{k}"))
        snapshots = SnapshotStore(store, SnapshotPolicy(every_n_events=100, min_events=1))
        replayer = EventReplayer(store, snapshots)
        results = [replayer.replay(f"wf-{k}") for k in range(5)]
        snapshots.flush()
        rows = snapshot_rows(path)
        assert sorted(r[0] for r in rows) == sorted(r.last_sequence for r in results)
        assert all(h == "sha256-msgpack:" + hashlib.sha256(s).hexdigest() for _, s, h in rows)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite-file", "sqlite-memory", "in-memory"])
def test_reads_of_a_workflow_wait_for_its_pending_snapshot(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    """Every store that saves snapshots after the rebuild returns shows them to its own reads
    at once: the rows, and the next rebuild, which starts from the snapshot."""
    store = new_store(kind, tmp_path, opened)
    for k in range(8):
        store.append_batch(workflow_events(150, workflow_id=f"wf-{k}"))
    replayer = policy_replayer(store)
    firsts = {f"wf-{k}": replayer.replay(f"wf-{k}") for k in range(8)}
    for workflow_id, first in firsts.items():
        assert not first.from_snapshot
        assert store.get_latest_snapshot(EntityType.WORKFLOW, workflow_id)["sequence"] == first.last_sequence
        second = replayer.replay(workflow_id)
        assert (second.from_snapshot, second.events_replayed) == (True, 0)
        same_state(second.final_state, first.final_state)


def test_a_failed_save_is_logged_and_the_rebuild_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    writer = SqliteEventStore(sqlite_url(path))
    writer.append_batch(workflow_events(300))
    expected = fold(WF, stored_workflow(writer))
    writer.close()

    reader = SqliteEventStore(f"{sqlite_url(path)}?mode=ro")
    try:
        caplog.set_level(logging.WARNING)
        snapshots = SnapshotStore(reader, SnapshotPolicy(every_n_events=100, min_events=1))
        replayer = EventReplayer(reader, snapshots)
        result = replayer.replay(WF)
        same_state(result.final_state, expected)
        snapshots.flush()
        failed = [r.getMessage() for r in caplog.records if "was not saved" in r.getMessage()]
        assert len(failed) == 1, caplog.text
        assert f"workflow {WF} at sequence {result.last_sequence}" in failed[0]
        assert "read-only" in failed[0]
        again = replayer.replay(WF)
        assert not again.from_snapshot
        same_state(again.final_state, expected)
    finally:
        reader.close()
    assert snapshot_rows(path) == []


CHILD = textwrap.dedent(
    """
    import sys
    from stabilize_events import SqliteEventStore
    from stabilize_events.replay import EventReplayer
    from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore

    store = SqliteEventStore(sys.argv[1])
    snapshots = SnapshotStore(store, SnapshotPolicy(every_n_events=100, min_events=1))
    EventReplayer(store, snapshots).replay(sys.argv[2])
    print("queued", flush=True)
    snapshots.flush()
    print("saved", flush=True)
    """
)


@pytest.mark.parametrize("delay_ms", [0, 5, 20, 80])
def test_a_crash_during_the_save_loses_the_snapshot_only(delay_ms: int, tmp_path: Path) -> None:
    """A child rebuilds a large workflow, hands its snapshot over and is killed (SIGKILL) while
    it is saved: the events are all there, the file is sound, and a snapshot row, if any, is
    whole (the next rebuild from it gives the full fold)."""
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch(stages_and_tasks(5_000))
    events = stored_workflow(store)
    store.close()

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sqlite_url(path), WF],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "queued"
        time.sleep(delay_ms / 1000)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    for _sequence, state, stored_hash in snapshot_rows(path):
        assert stored_hash == "sha256-msgpack:" + hashlib.sha256(state).hexdigest()
    store = SqliteEventStore(sqlite_url(path))
    try:
        assert [e.event_id for e in stored_workflow(store)] == [e.event_id for e in events]
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        same_state(result.final_state, fold(WF, events))
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite-file", "in-memory"])
def test_a_workflow_smaller_than_the_look_up_point_is_folded_without_looking(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    """With a policy, a rebuild looks for a snapshot only once it reaches
    `SNAPSHOT_LOOK_UP_AT_EVENTS` events (or the policy's ``min_events``, if fewer)."""
    store = new_store(kind, tmp_path, opened)
    small = SNAPSHOT_LOOK_UP_AT_EVENTS - 1
    store.append_batch(workflow_events(small, workflow_id="small"))
    store.append_batch(workflow_events(small + 10, workflow_id="large"))
    snapshots = SnapshotStore(store)
    for workflow_id, at in (("small", small - 3), ("large", small + 5)):
        plain = EventReplayer(store).replay(workflow_id, as_of_sequence=None)
        cut = [e for e in store.get_events_for_workflow(workflow_id)][at - 1]
        state = EventReplayer(store).replay(workflow_id, as_of_sequence=cut.sequence).final_state
        snapshots.create_workflow_snapshot(state, workflow_id, at, cut.sequence)
        result = policy_replayer(store, min_events=SNAPSHOT_LOOK_UP_AT_EVENTS).replay(workflow_id)
        same_state(result.final_state, plain.final_state)
        if workflow_id == "small":
            assert (result.from_snapshot, result.events_replayed) == (False, small)
        else:
            assert (result.from_snapshot, result.snapshot_sequence) == (True, cut.sequence)
            assert result.events_replayed == small + 10 - at
    # A policy of a smaller min_events looks up at that count.
    assert policy_replayer(store, min_events=5).replay("small").from_snapshot


def test_fold_that_looks_up_a_snapshot_starts_from_the_first_event(tmp_path: Path) -> None:
    store = SqliteEventStore(sqlite_url(tmp_path / "events.db"))
    try:
        store.append_batch(workflow_events(10))
        for bad in ({"from_sequence": 3}, {"skip_corrupt": True}, {"upcast": lambda e: e}):
            with pytest.raises(errors.InvalidArgumentError, match="look_up_snapshot_at folds from the first"):
                store.fold_workflow(WF, look_up_snapshot_at=5, **bad)  # type: ignore[arg-type]
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_does_not_wait_for_its_parents_pending_save(tmp_path: Path) -> None:
    """A child made by ``fork`` while a save is pending has no worker of its own: its flush
    returns at once (the parent writes the snapshot) instead of waiting for ever."""
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    try:
        store.append_batch(workflow_events(600))
        policy_replayer(store).replay(WF)
        pid = os.fork()
        if pid == 0:  # the child: flush and leave without running the parent's cleanup
            try:
                store.flush_snapshots()
            finally:
                os._exit(0)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        if done == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's flush_snapshots waited for its parent's save")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        store.flush_snapshots()
        assert len(snapshot_rows(path)) == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    "at_least", [60, SNAPSHOT_LOOK_UP_AT_EVENTS + 20], ids=["below-look-up-point", "past-look-up-point"]
)
@pytest.mark.parametrize("skip_corrupt", [False, True], ids=["look-up-fold", "fold-after-look-up"])
@pytest.mark.parametrize("kind", ["sqlite-file", "in-memory"])
def test_a_workflow_below_min_events_is_not_snapshotted(
    kind: str, skip_corrupt: bool, at_least: int, tmp_path: Path, opened: list[EventStore]
) -> None:
    """``min_events`` decides which workflows are worth a snapshot: where the fold looks the
    snapshot up itself (before and past its look-up point) and where the replayer looks it up
    first (``skip_corrupt``)."""
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(at_least - 1, workflow_id="below"))
    store.append_batch(workflow_events(at_least, workflow_id="at"))
    replayer = policy_replayer(store, every=10, min_events=at_least)
    for workflow_id, worth in (("below", False), ("at", True)):
        plain = EventReplayer(store).replay(workflow_id).final_state
        first = replayer.replay(workflow_id, skip_corrupt=skip_corrupt)
        store.flush_snapshots()
        saved = store.get_snapshots(EntityType.WORKFLOW, workflow_id)
        assert [row["sequence"] for row in saved] == ([first.last_sequence] if worth else [])
        second = replayer.replay(workflow_id, skip_corrupt=skip_corrupt)
        expected = (True, 0) if worth else (False, at_least - 1)
        assert (second.from_snapshot, second.events_replayed) == expected
        same_state(first.final_state, plain)
        same_state(second.final_state, plain)
    # A snapshot of the smaller workflow stored by other means is used once it is looked up.
    cut = list(store.get_events_for_workflow("below"))[at_least - 11]
    state = EventReplayer(store).replay("below", as_of_sequence=cut.sequence).final_state
    SnapshotStore(store).create_workflow_snapshot(state, "below", at_least - 10, cut.sequence)
    assert replayer.replay("below").from_snapshot == (at_least > SNAPSHOT_LOOK_UP_AT_EVENTS)
    assert policy_replayer(store, every=10).replay("below").from_snapshot
