"""Snapshots: the policy, the integrity hash, replay from the newest usable snapshot, and what
replay does with tampered snapshots and corrupt event rows.

States are checked against the pure-Python oracle (tests/helpers/replay_oracle.py): a rebuild that
starts from a snapshot must give exactly the state of a rebuild from the first event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import STORE_KINDS, close_store, new_store, open_store, sqlite_url
from helpers.replay_oracle import ListStore, empty_state, fold, typed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    InMemoryEventStore,
    SqliteEventStore,
    _core,
    errors,
)
from stabilize_events._core import encode_payload
from stabilize_events.canonical import canonical_json, state_hash
from stabilize_events.defaults import SNAPSHOT_LOOK_UP_AT_EVENTS, SNAPSHOT_MIN_EVENTS
from stabilize_events.replay import EventReplayer, ReplayResult
from stabilize_events.snapshots import Snapshot, SnapshotPolicy, SnapshotStore
from stabilize_events.store.capabilities import FoldsWorkflows
from test_replay import WF, streams

BASE = datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=UTC)
META = EventMetadata(correlation_id=WF, source_handler="SnapshotTest")
REPLAY_LOGGERS = ("stabilize_events.replay", "stabilize_events.snapshots")


def same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert typed(actual) == typed(expected), f"\nactual:   {actual}\nexpected: {expected}"


def workflow_events(n: int, workflow_id: str = WF, start: int = 0) -> list[Event]:
    """``n`` events of a workflow that touch every part of the state, one millisecond apart.

    ``start`` numbers them on from an earlier call (so a stream can be extended).
    """
    events: list[Event] = []
    for i in range(start, start + n):
        step, phase = divmod(i, 6)
        stage, task = f"stage-{step % 40}", f"task-{step % 40}"
        phases: dict[int, tuple[EventType, EntityType, str, dict[str, Any]]] = {
            0: (EventType.STAGE_STARTED, EntityType.STAGE, stage, {"name": f"s{step}", "type": "python"}),
            1: (EventType.TASK_STARTED, EntityType.TASK, task, {"name": f"t{step}", "stage_id": stage}),
            2: (EventType.TASK_RETRIED, EntityType.TASK, task, {}),
            3: (EventType.TASK_COMPLETED, EntityType.TASK, task, {"outputs": {"i": i}}),
            4: (
                EventType.CONTEXT_UPDATED,
                EntityType.WORKFLOW,
                workflow_id,
                {"context": {f"k{step % 3}": i}},
            ),
            5: (EventType.STAGE_COMPLETED, EntityType.STAGE, stage, {"status": "SUCCEEDED", "outputs": [i]}),
        }
        kind, entity_type, entity_id, data = phases[phase]
        if i == 0:
            kind, entity_type, entity_id, data = (
                EventType.WORKFLOW_STARTED,
                EntityType.WORKFLOW,
                workflow_id,
                {"context": {"origin": "test"}},
            )
        events.append(
            Event(
                event_type=kind,
                entity_type=entity_type,
                entity_id=entity_id,
                workflow_id=workflow_id,
                timestamp=BASE + timedelta(milliseconds=i),
                version=i + 1,
                data=data,
                metadata=META,
            )
        )
    return events


def policy_replayer(store: EventStore, every: int = 100, min_events: int = 1) -> EventReplayer:
    """A replayer with a policy of ``every`` events; the workflows of these tests are small, so
    by default every workflow is worth a snapshot (``min_events=1``)."""
    policy = SnapshotPolicy(every_n_events=every, min_events=min_events)
    return EventReplayer(store, SnapshotStore(store, policy))


def stored_workflow(store: EventStore) -> list[Event]:
    return [e for e in store.get_events_for_workflow(WF)]


# --- policy and snapshot values ------------------------------------------------------------


def test_policy_defaults_and_alias() -> None:
    policy = SnapshotPolicy()
    assert (policy.every_n_events, policy.time_interval_seconds) == (100, 3600)
    assert SnapshotPolicy(every_n_events=7).every_n_events == 7
    aliased = SnapshotPolicy(event_interval=25)
    assert aliased.every_n_events == 25 and aliased.event_interval == 25
    assert SnapshotPolicy(5, 60).time_interval_seconds == 60


def test_policy_min_events_and_look_up_point() -> None:
    assert SnapshotPolicy().min_events == SNAPSHOT_MIN_EVENTS
    # A rebuild looks up at SNAPSHOT_LOOK_UP_AT_EVENTS, or at min_events if that is fewer.
    assert SnapshotPolicy(min_events=SNAPSHOT_LOOK_UP_AT_EVENTS * 10).look_up_at == SNAPSHOT_LOOK_UP_AT_EVENTS
    assert SnapshotPolicy(every_n_events=5, min_events=7).look_up_at == 7
    policy = SnapshotPolicy(min_events=40)
    assert not policy.worth_snapshotting(39) and policy.worth_snapshotting(40)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"every_n_events": 0}, errors.InvalidArgumentError),
        ({"every_n_events": -5}, errors.InvalidArgumentError),
        ({"event_interval": 0}, errors.InvalidArgumentError),
        ({"every_n_events": True}, errors.ArgumentTypeError),
        ({"every_n_events": "100"}, errors.ArgumentTypeError),
        ({"every_n_events": 10.0}, errors.ArgumentTypeError),
        ({"time_interval_seconds": 0}, errors.InvalidArgumentError),
        ({"time_interval_seconds": -1}, errors.InvalidArgumentError),
        ({"time_interval_seconds": float("nan")}, errors.InvalidArgumentError),
        ({"time_interval_seconds": "60"}, errors.ArgumentTypeError),
        ({"time_interval_seconds": None}, errors.ArgumentTypeError),
        ({"time_interval_seconds": True}, errors.ArgumentTypeError),
        ({"min_events": 0}, errors.InvalidArgumentError),
        ({"min_events": -3}, errors.InvalidArgumentError),
        ({"min_events": True}, errors.ArgumentTypeError),
        ({"min_events": "500"}, errors.ArgumentTypeError),
        ({"min_events": 500.0}, errors.ArgumentTypeError),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any], error: type[Exception]) -> None:
    # The message names the argument the caller used.
    (name,) = kwargs
    with pytest.raises(error, match=f"^{name} must be"):
        SnapshotPolicy(**kwargs)


def test_policy_counts_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("stabilize_events.snapshots.time.monotonic", lambda: clock[0])
    policy = SnapshotPolicy(every_n_events=10, time_interval_seconds=60)
    assert not policy.should_snapshot("w", 9)
    assert policy.should_snapshot("w", 10) and policy.should_snapshot("w", 11)
    policy.record_snapshot("w")
    assert not policy.should_snapshot("w", 1)
    clock[0] += 60
    assert policy.should_snapshot("w", 1)  # the interval has passed and something happened
    assert not policy.should_snapshot("w", 0)
    assert not policy.should_snapshot("other", 1)  # never snapshotted: no clock running
    # events_due is the threshold should_snapshot applies now.
    assert policy.events_due("w") == 1 and policy.events_due("other") == 10
    policy.record_snapshot("w")
    assert policy.events_due("w") == 10


def test_snapshot_hash_is_sha256_of_canonical_state() -> None:
    state = {"b": [1, 2.5, None], "a": {"z": "ü", "y": True}}
    snapshot = Snapshot(EntityType.WORKFLOW, WF, WF, version=3, sequence=42, state=state)
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert snapshot.state_hash == hashlib.sha256(canonical.encode()).hexdigest()
    reordered = Snapshot(EntityType.WORKFLOW, WF, WF, 3, 42, state={"a": state["a"], "b": state["b"]})
    assert reordered.state_hash == snapshot.state_hash
    changed = Snapshot(EntityType.WORKFLOW, WF, WF, 3, 42, state={**state, "b": [1, 2.5]})
    assert changed.state_hash != snapshot.state_hash

    as_dict = snapshot.to_dict()
    assert as_dict["state_hash"] == snapshot.state_hash
    assert (as_dict["entity_type"], as_dict["sequence"], as_dict["version"]) == ("workflow", 42, 3)
    back = Snapshot.from_dict(as_dict)
    assert (back.entity_type, back.entity_id, back.sequence, back.state) == (
        EntityType.WORKFLOW,
        WF,
        42,
        state,
    )
    assert back.created_at == snapshot.created_at


def test_snapshot_store_needs_a_store_that_keeps_snapshots() -> None:
    # The module names whose store it is (Stabilize's has the same class name as ours).
    with pytest.raises(errors.ArgumentTypeError, match=r"^helpers\.replay_oracle\.ListStore cannot store"):
        SnapshotStore(ListStore())


def test_policy_and_snapshot_store_of_another_kind_are_refused_where_given() -> None:
    # Refused when the store or replayer is built, naming what to pass, not an AttributeError
    # at the first rebuild.
    se = pytest.importorskip("stabilize.events")
    store = InMemoryEventStore()
    with pytest.raises(errors.ArgumentTypeError, match=r"^policy must be a stabilize_events\.SnapshotPolicy"):
        SnapshotStore(store, policy=100)  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError, match="import SnapshotPolicy from stabilize_events"):
        SnapshotStore(store, policy=se.SnapshotPolicy(event_interval=10))  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError, match=r"^snapshot_store must be .*wrap the policy"):
        EventReplayer(store, snapshot_store=SnapshotPolicy())  # type: ignore[arg-type]
    with pytest.raises(
        errors.ArgumentTypeError, match="import SnapshotStore and SnapshotPolicy from stabilize_events"
    ):
        EventReplayer(store, snapshot_store=se.SnapshotStore(store))  # type: ignore[arg-type]
    with pytest.raises(
        errors.ArgumentTypeError, match=r"^snapshot_store must be .*, not .*InMemoryEventStore$"
    ):
        EventReplayer(store, snapshot_store=store)  # type: ignore[arg-type]
    assert EventReplayer(store, snapshot_store=None).rebuild_workflow_state(WF)["stages"] == {}


# --- replay from snapshots -----------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_second_rebuild_replays_at_most_every_n(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(1000))
    replayer = policy_replayer(store, every=100)

    first = replayer.replay(WF)
    assert (first.events_replayed, first.from_snapshot) == (1000, False)
    same_state(first.final_state, fold(WF, stored_workflow(store)))

    second = replayer.replay(WF)
    assert second.from_snapshot and second.events_replayed == 0
    assert second.snapshot_sequence == first.last_sequence
    same_state(second.final_state, first.final_state)  # start and end times come back too

    # Grow the workflow: each rebuild replays only what came after the newest snapshot.
    for added, expected_replays in ((250, [250, 0]), (40, [40, 40]), (70, [110, 0])):
        start = len(stored_workflow(store))
        store.append_batch(workflow_events(added, start=start))
        for expected in expected_replays:
            result = replayer.replay(WF)
            assert result.events_replayed == expected
            assert result.from_snapshot
            same_state(result.final_state, fold(WF, stored_workflow(store)))

    # A replayer without a policy still starts from the stored snapshots, and takes none.
    plain = EventReplayer(store, SnapshotStore(store))
    assert plain.replay(WF).events_replayed == 0
    store.append_batch(workflow_events(150, start=len(stored_workflow(store))))
    assert plain.replay(WF).events_replayed == 150
    assert plain.replay(WF).events_replayed == 150


def stages_and_tasks(n: int) -> list[Event]:
    """``n`` steps of a stage and its task started and completed, with outputs (no retries)."""
    events: list[Event] = []
    for step in range(n):
        stage, task = f"stage-{step}", f"task-{step}"
        for kind, entity_type, entity_id, data in (
            (EventType.STAGE_STARTED, EntityType.STAGE, stage, {"name": f"s{step}", "type": "python"}),
            (EventType.TASK_STARTED, EntityType.TASK, task, {"name": f"t{step}", "stage_id": stage}),
            (EventType.TASK_COMPLETED, EntityType.TASK, task, {"outputs": {"i": step, "x": [1.5, None]}}),
            (EventType.STAGE_COMPLETED, EntityType.STAGE, stage, {"status": "SUCCEEDED"}),
        ):
            events.append(
                Event(
                    event_type=kind,
                    entity_type=entity_type,
                    entity_id=entity_id,
                    workflow_id=WF,
                    timestamp=BASE + timedelta(milliseconds=len(events)),
                    version=len(events) + 1,
                    data=data,
                    metadata=META,
                )
            )
    return events


@pytest.mark.parametrize("kind", ["sqlite-file", "sqlite-memory", "in-memory", "postgres"])
def test_fold_saves_the_snapshot_it_folds(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    """A built-in store asked to save a snapshot as it folds stores the state the fold
    answers with (its hash over the stored bytes), and only when enough events were folded."""
    store = new_store(kind, tmp_path, opened)
    stored = store.append_batch(stages_and_tasks(30))
    assert isinstance(store, FoldsWorkflows)
    assert "snapshot_queued" not in store.fold_workflow(WF, snapshot_after_events=121)
    cut = store.fold_workflow(WF, to_timestamp=BASE + timedelta(hours=1), snapshot_after_events=1)
    assert "snapshot_queued" not in cut  # a time-travel state is no checkpoint
    assert store.get_snapshots(EntityType.WORKFLOW, WF) == []

    folded = store.fold_workflow(WF, snapshot_after_events=120)
    assert folded["snapshot_queued"] is True
    (row,) = store.get_snapshots(EntityType.WORKFLOW, WF)
    assert row["hash_ok"] is True and row["state_hash"].startswith("sha256-msgpack:")
    assert (row["sequence"], row["version"]) == (stored[-1].sequence, 120)
    assert row["max_event_time_us"] == folded["max_event_time_us"]
    same_state(row["state"], folded["state"])
    same_state(folded["state"], fold(WF, stored))

    # A replayer with a policy uses it, and grows the next one from it.
    replayer = policy_replayer(store, every=4)
    second = replayer.replay(WF)
    assert second.from_snapshot and second.events_replayed == 0
    same_state(second.final_state, folded["state"])
    more = store.append_batch(stages_and_tasks(31)[120:])
    third = replayer.replay(WF)
    assert third.from_snapshot and third.events_replayed == 4
    newest = store.get_snapshots(EntityType.WORKFLOW, WF)[0]
    assert (newest["sequence"], newest["version"], newest["hash_ok"]) == (more[-1].sequence, 124, True)
    same_state(newest["state"], fold(WF, stored + more))


def test_snapshots_live_in_the_event_database(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch(workflow_events(300))
    policy_replayer(store).rebuild_workflow_state(WF)
    store.close()

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT entity_id, sequence, state_hash, state FROM event_snapshot").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(WF, 300)]
    # The hash is over the very bytes stored as the state.
    assert rows[0][2] == "sha256-msgpack:" + hashlib.sha256(rows[0][3]).hexdigest()

    reopened = SqliteEventStore(sqlite_url(path))
    try:
        replayer = EventReplayer(reopened, SnapshotStore(reopened))
        result = replayer.replay(WF)
        assert (result.from_snapshot, result.events_replayed, result.snapshot_sequence) == (True, 0, 300)
        same_state(result.final_state, fold(WF, stored_workflow(reopened)))
    finally:
        reopened.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_snapshot_newer_than_as_of_sequence_is_not_used(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(1000))
    events = stored_workflow(store)
    replayer = policy_replayer(store)
    replayer.rebuild_workflow_state(WF, as_of_sequence=400)  # a snapshot at 400
    replayer.rebuild_workflow_state(WF)  # and one at 1000

    plain = EventReplayer(store, SnapshotStore(store))
    for as_of, snapshot_at in ((300, 0), (400, 400), (700, 400), (999, 400), (1000, 1000), (5000, 1000)):
        result = plain.replay(WF, as_of_sequence=as_of)
        assert result.snapshot_sequence == snapshot_at, as_of
        assert result.from_snapshot == (snapshot_at > 0)
        assert result.events_replayed == min(as_of, 1000) - snapshot_at
        same_state(result.final_state, fold(WF, [e for e in events if e.sequence <= as_of]))
        same_state(plain.rebuild_workflow_state(WF, as_of_sequence=as_of), result.final_state)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_snapshot_newer_than_as_of_time_is_not_used(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(600))
    replayer = policy_replayer(store)
    replayer.rebuild_workflow_state(WF, as_of_sequence=200)
    replayer.rebuild_workflow_state(WF, as_of_sequence=600)
    events = stored_workflow(store)
    when = {e.sequence: e.timestamp for e in events}

    plain = EventReplayer(store, SnapshotStore(store))
    for as_of, snapshot_at in ((150, 0), (200, 200), (450, 200), (600, 600)):
        moment = when[as_of]
        expected = fold(WF, [e for e in events if e.timestamp <= moment])
        same_state(plain.time_travel_query(WF, moment), expected)
        result = plain.last_result
        assert result is not None
        assert result.snapshot_sequence == snapshot_at, as_of
        assert result.events_replayed == as_of - snapshot_at
    same_state(plain.time_travel_query(WF, BASE - timedelta(days=1)), empty_state(WF))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_time_travel_skips_a_snapshot_holding_a_later_timestamp(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    """A snapshot taken by sequence may hold an event stamped after the requested instant."""
    store = new_store(kind, tmp_path, opened)
    events = workflow_events(300)
    late = events[49]  # sequence 50, stamped a day after everything else
    events[49] = Event(
        event_type=late.event_type,
        entity_type=late.entity_type,
        entity_id=late.entity_id,
        workflow_id=WF,
        timestamp=BASE + timedelta(days=1),
        version=late.version,
        data={"outputs": {"late": True}},
        metadata=META,
    )
    store.append_batch(events)
    policy_replayer(store).rebuild_workflow_state(WF)  # a snapshot at 300 that includes sequence 50
    stored = stored_workflow(store)
    plain = EventReplayer(store, SnapshotStore(store))

    moment = stored[199].timestamp
    same_state(plain.time_travel_query(WF, moment), fold(WF, [e for e in stored if e.timestamp <= moment]))
    assert plain.last_result is not None and not plain.last_result.from_snapshot
    after_all = BASE + timedelta(days=2)
    same_state(plain.time_travel_query(WF, after_all), fold(WF, stored))
    assert plain.last_result is not None and plain.last_result.from_snapshot


def test_reference_style_workflow_snapshot(tmp_path: Path, opened: list[EventStore]) -> None:
    """`create_workflow_snapshot` (the reference's API) makes a snapshot replay starts from."""
    store = new_store("sqlite-file", tmp_path, opened)
    store.append_batch(workflow_events(500))
    events = stored_workflow(store)
    snapshots = SnapshotStore(store)
    state = fold(WF, [e for e in events if e.sequence <= 300])
    made = snapshots.create_workflow_snapshot(state, WF, version=300, sequence=300)
    assert (
        made.sequence == 300
        and made.state_hash == Snapshot(EntityType.WORKFLOW, WF, WF, 0, 0, state).state_hash
    )
    latest = snapshots.get_latest_snapshot(EntityType.WORKFLOW, WF)
    assert latest is not None and latest.sequence == 300 and latest.state == state

    result = EventReplayer(store, snapshots).replay(WF)
    assert (result.from_snapshot, result.snapshot_sequence, result.events_replayed) == (True, 300, 200)
    same_state(result.final_state, fold(WF, events))


def test_hash_of_a_state_with_keys_that_are_not_strings() -> None:
    # json.dumps(sort_keys=True) cannot sort 1 and "a" in one dict; the hash is still defined,
    # the same whatever the key order, and tells 1 from "1" apart from the value.
    state = {"context": {"a": 1, 1: "one", None: [2], False: "f", 2.5: {3: None, "x": 0}}}
    reordered = {"context": dict(reversed(list(state["context"].items())))}
    assert state_hash(state) == state_hash(reordered)
    assert state_hash(state) != state_hash({"context": {**state["context"], 1: "other"}})
    assert canonical_json({"k": {1: "a", "1": "b"}}) == '{"k":{"1":"b","1":"a"}}'
    # A state of str keys only hashes as it always did (stored snapshots still verify).
    plain = {"b": [1, {"z": 2, "y": None}], "a": "ü"}
    assert canonical_json(plain) == json.dumps(
        plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert canonical_json({2: "b", 10: "a"}) == '{"2":"b","10":"a"}'  # json sorts ints as numbers


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_snapshot_of_a_context_with_keys_that_are_not_strings(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    """Such keys survive the fold, the snapshot (its hash verifies) and the fold on from it."""
    store = new_store(kind, tmp_path, opened)
    contexts: list[dict[Any, Any]] = [
        {"a": 1, "b": 2},
        {1: "one", "b": 3, None: [1]},
        {True: "true is 1", 2.5: {4: "x"}, "a": 5},
        {"c": 6},
    ]
    events = [
        Event(
            event_type=EventType.CONTEXT_UPDATED,
            entity_type=EntityType.WORKFLOW,
            entity_id=WF,
            workflow_id=WF,
            timestamp=BASE + timedelta(seconds=i),
            version=i + 1,
            data={"context": ctx},
            metadata=META,
        )
        for i, ctx in enumerate(contexts)
    ]
    stored = store.append_batch(events)
    expected = {"a": 5, "b": 3, 1: "true is 1", None: [1], 2.5: {4: "x"}, "c": 6}
    replayer = policy_replayer(store, every=1)
    for cut in range(len(stored) + 1):
        state = replayer.rebuild_workflow_state(WF, as_of_sequence=stored[cut - 1].sequence if cut else 0)
        same_state(state, fold(WF, stored[:cut]))
    final = replayer.rebuild_workflow_state(WF)
    assert typed(final["context"]) == typed(expected)
    # Snapshots were taken on the way; the last replay started from one and folded nothing more.
    assert replayer.last_result is not None and replayer.last_result.from_snapshot
    fresh = EventReplayer(store, SnapshotStore(store))
    result = fresh.replay(WF)
    assert result.from_snapshot and result.events_replayed == 0
    same_state(result.final_state, final)
    store.append(
        Event(
            event_type=EventType.CONTEXT_UPDATED,
            entity_type=EntityType.WORKFLOW,
            entity_id=WF,
            workflow_id=WF,
            timestamp=BASE + timedelta(seconds=10),
            version=9,
            data={"context": {"a": 7, 1.0: "float one"}},
            metadata=META,
        )
    )
    after = fresh.replay(WF)
    assert after.from_snapshot and after.events_replayed == 1
    assert typed(after.final_state["context"]) == typed({**expected, "a": 7, 1: "float one"})


native_kinds = st.sampled_from(STORE_KINDS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=native_kinds, events=streams(max_size=30), data=st.data())
def test_replay_through_snapshots_equals_oracle(
    tmp_path: Path, kind: str, events: list[Event], data: st.DataObject
) -> None:
    """Random states survive a snapshot round trip (the hash verifies) and folding on from
    a snapshot gives the same state as folding from the start, now and at any instant."""
    store = (
        open_store(kind, tmp_path)
        if kind != "sqlite-file"
        else SqliteEventStore(sqlite_url(tmp_path / f"{uuid.uuid4().hex}.db"))
    )
    try:
        stored = store.append_batch(events) if events else []
        mine = [e for e in stored if e.workflow_id == WF]
        last = max((e.sequence for e in stored), default=0)
        cut = data.draw(st.integers(0, last), label="snapshot at")
        snapshotting = policy_replayer(store, every=1)
        snapshotting.replay(WF, as_of_sequence=cut)
        plain = EventReplayer(store, SnapshotStore(store))

        result = plain.replay(WF)
        same_state(result.final_state, fold(WF, mine))
        taken = [e for e in mine if e.sequence <= cut and e.schema_version <= 1]
        # Events of a newer schema are skipped; a snapshot would hide them from a
        # newer build for good, so none is taken when any was skipped.
        skipped_newer = any(e.sequence <= cut and e.schema_version > 1 for e in mine)
        if taken and not skipped_newer:
            assert result.from_snapshot, "the snapshot was not used (does its hash verify?)"
            assert result.events_replayed == len(
                [e for e in mine if e.sequence > cut and e.schema_version <= 1]
            )

        moments = sorted({e.timestamp for e in stored}) or [BASE]
        moment = data.draw(st.sampled_from(moments), label="as_of_time")
        same_state(plain.time_travel_query(WF, moment), fold(WF, [e for e in mine if e.timestamp <= moment]))
        seq = data.draw(st.integers(0, last + 1), label="as_of_sequence")
        same_state(
            plain.rebuild_workflow_state(WF, as_of_sequence=seq),
            fold(WF, [e for e in mine if e.sequence <= seq]),
        )
    finally:
        close_store(store)


# --- tampered snapshots --------------------------------------------------------------------


def two_snapshots(path: Path) -> list[Event]:
    """A file store with 1000 events and snapshots at 500 and 1000; closed; its events returned."""
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch(workflow_events(1000))
    replayer = policy_replayer(store)
    replayer.rebuild_workflow_state(WF, as_of_sequence=500)
    replayer.rebuild_workflow_state(WF)
    events = stored_workflow(store)
    store.close()
    return events


def edit(path: Path, sql: str, *params: Any) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute(sql, params).rowcount >= 1
        db.commit()
    finally:
        db.close()


def warnings_about(caplog: pytest.LogCaptureFixture, sequence: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name in REPLAY_LOGGERS
        and f"sequence {sequence}" in r.getMessage()
    ]


TAMPERINGS = {
    "hash": ("UPDATE event_snapshot SET state_hash = ? WHERE sequence = 1000", ("0" * 64,)),
    "state-edited": (
        "UPDATE event_snapshot SET state = ? WHERE sequence = 1000",
        (encode_payload({**empty_state(WF), "status": "SUCCEEDED"}),),
    ),
    "state-garbage": ("UPDATE event_snapshot SET state = X'c1' WHERE sequence = 1000", ()),
    "state-not-a-map": ("UPDATE event_snapshot SET state = X'01' WHERE sequence = 1000", ()),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_snapshot_is_skipped_with_a_warning(
    tampering: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    events = two_snapshots(path)
    sql, params = TAMPERINGS[tampering]
    edit(path, sql, *params)

    store = SqliteEventStore(sqlite_url(path))
    try:
        caplog.set_level(logging.WARNING)
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        assert (result.from_snapshot, result.snapshot_sequence, result.events_replayed) == (True, 500, 500)
        same_state(result.final_state, fold(WF, events))
        named = warnings_about(caplog, 1000)
        assert named and WF in named[0], caplog.text
        assert not warnings_about(caplog, 500)
    finally:
        store.close()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE event_snapshot SET state = 'not a blob' WHERE sequence = 1000",
        "UPDATE event_snapshot SET state_hash = X'00ff' WHERE sequence = 1000",
    ],
    ids=["state-text", "hash-blob"],
)
def test_snapshot_row_of_the_wrong_type_is_skipped(
    sql: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    events = two_snapshots(path)
    edit(path, sql)
    store = SqliteEventStore(sqlite_url(path))
    try:
        caplog.set_level(logging.WARNING)
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        assert (result.snapshot_sequence, result.events_replayed) == (500, 500)
        same_state(result.final_state, fold(WF, events))
        assert warnings_about(caplog, 1000)
    finally:
        store.close()


def test_every_snapshot_tampered_replays_from_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    events = two_snapshots(path)
    edit(path, "UPDATE event_snapshot SET state_hash = 'x' || substr(state_hash, 2)")
    store = SqliteEventStore(sqlite_url(path))
    try:
        caplog.set_level(logging.WARNING)
        replayer = policy_replayer(store)
        result = replayer.replay(WF)
        assert (result.from_snapshot, result.events_replayed) == (False, 1000)
        same_state(result.final_state, fold(WF, events))
        assert warnings_about(caplog, 1000) and warnings_about(caplog, 500)
        # The replayer's policy replaced the bad snapshot at 1000 with a good one.
        caplog.clear()
        again = replayer.replay(WF)
        assert (again.from_snapshot, again.events_replayed) == (True, 0)
        assert not warnings_about(caplog, 1000)
        same_state(again.final_state, result.final_state)
    finally:
        store.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_snapshot_saved_with_wrong_hash_is_not_used(
    kind: str, tmp_path: Path, opened: list[EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(400))
    events = stored_workflow(store)
    good = fold(WF, [e for e in events if e.sequence <= 200])
    lie = {**fold(WF, events[:300]), "status": "CANCELED"}
    snapshots = SnapshotStore(store)
    snapshots.save_snapshot(Snapshot(EntityType.WORKFLOW, WF, WF, 200, 200, good))
    save = store.save_snapshot  # type: ignore[attr-defined]
    # A state that is not what its hash says, and a hash that is not that of its state.
    save(
        EntityType.WORKFLOW,
        WF,
        WF,
        300,
        300,
        lie,
        state_hash_hex=Snapshot(EntityType.WORKFLOW, WF, WF, 0, 0, good).state_hash,
    )
    save(EntityType.WORKFLOW, WF, WF, 350, 350, fold(WF, events[:350]), state_hash_hex="0" * 64)

    caplog.set_level(logging.WARNING)
    result = EventReplayer(store, snapshots).replay(WF)
    assert (result.snapshot_sequence, result.events_replayed) == (200, 200)
    same_state(result.final_state, fold(WF, events))
    assert warnings_about(caplog, 300) and warnings_about(caplog, 350)


# --- corrupt event rows --------------------------------------------------------------------


def corrupt_store(path: Path, sql: str) -> tuple[list[Event], int]:
    """A closed file store of 60 events with one row edited by ``sql`` (``?`` = the sequence)."""
    store = SqliteEventStore(sqlite_url(path))
    store.append_batch(workflow_events(60))
    events = stored_workflow(store)
    store.close()
    # sequence 22 is a task.completed (phase 3): its payload (status, outputs) is read by the fold.
    target = 22
    assert events[target - 1].event_type is EventType.TASK_COMPLETED
    edit(path, sql, target)
    return events, target


CORRUPTIONS = {
    "data-text": "UPDATE event_log SET data = 'not msgpack' WHERE sequence = ?",
    "data-truncated": "UPDATE event_log SET data = substr(data, 1, 3) WHERE sequence = ?",
    "timestamp-text": "UPDATE event_log SET timestamp_us = 'noon' WHERE sequence = ?",
    "event-type-blob": "UPDATE event_log SET event_type = X'ff00' WHERE sequence = ?",
    "entity-id-blob": "UPDATE event_log SET entity_id = X'ff00' WHERE sequence = ?",
    "schema-text": "UPDATE event_log SET schema_version = 'one' WHERE sequence = ?",
}
#: Payloads that are well-formed msgpack up to a point, or not a map: the fold must not read them
#: as an empty payload (that would silently give the state without this event's effects).
NOT_A_PAYLOAD = {
    "data-invalid-marker": "UPDATE event_log SET data = X'c1' WHERE sequence = ?",
    "data-int": "UPDATE event_log SET data = X'01' WHERE sequence = ?",
    "data-array": "UPDATE event_log SET data = X'9101' WHERE sequence = ?",
}


def check_corrupt_row(path: Path, events: list[Event], target: int) -> None:
    store = SqliteEventStore(sqlite_url(path))
    try:
        replayer = EventReplayer(store)
        with pytest.raises(errors.CorruptEventError, match=rf"sequence {target}\b"):
            replayer.rebuild_workflow_state(WF)
        # Points before the bad row do not read it.
        same_state(
            replayer.rebuild_workflow_state(WF, as_of_sequence=target - 1),
            fold(WF, [e for e in events if e.sequence < target]),
        )
        skipped = replayer.replay(WF, skip_corrupt=True)
        assert len(skipped.skipped_corrupt) == 1 and f"sequence {target}" in skipped.skipped_corrupt[0]
        assert skipped.events_replayed == len(events) - 1
        same_state(skipped.final_state, fold(WF, [e for e in events if e.sequence != target]))
    finally:
        store.close()


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_event_row(corruption: str, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events, target = corrupt_store(path, CORRUPTIONS[corruption])
    check_corrupt_row(path, events, target)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_time_travel_over_a_corrupt_row(corruption: str, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events, target = corrupt_store(path, CORRUPTIONS[corruption])
    store = SqliteEventStore(sqlite_url(path))
    try:
        replayer = EventReplayer(store)
        with pytest.raises(errors.CorruptEventError, match=rf"sequence {target}\b"):
            replayer.time_travel_query(WF, BASE + timedelta(days=1))
        skipped = replayer.replay(WF, as_of_time=BASE + timedelta(days=1), skip_corrupt=True)
        assert len(skipped.skipped_corrupt) == 1 and f"sequence {target}" in skipped.skipped_corrupt[0]
        same_state(skipped.final_state, fold(WF, [e for e in events if e.sequence != target]))
        before = events[target - 2].timestamp
        if corruption == "timestamp-text":
            # With its instant unreadable the row cannot be placed before or after any
            # moment: every time-travel query over it reports it.
            with pytest.raises(errors.CorruptEventError, match=rf"sequence {target}\b"):
                replayer.time_travel_query(WF, before)
        else:
            same_state(replayer.time_travel_query(WF, before), fold(WF, events[: target - 1]))
    finally:
        store.close()


@pytest.mark.parametrize("corruption", sorted(NOT_A_PAYLOAD))
def test_payload_that_is_not_a_map_is_corrupt(corruption: str, tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events, target = corrupt_store(path, NOT_A_PAYLOAD[corruption])
    check_corrupt_row(path, events, target)


def test_skipping_corrupt_rows_takes_no_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _events, target = corrupt_store(path, CORRUPTIONS["data-text"])
    store = SqliteEventStore(sqlite_url(path))
    try:
        replayer = policy_replayer(store, every=10)
        assert replayer.replay(WF, skip_corrupt=True).skipped_corrupt
        with pytest.raises(errors.CorruptEventError, match=rf"sequence {target}\b"):
            replayer.rebuild_workflow_state(WF)
    finally:
        store.close()


def test_replay_result_of_a_fresh_replayer_is_empty() -> None:
    replayer = EventReplayer(ListStore())
    assert replayer.last_result is None
    result = replayer.replay(WF)
    assert isinstance(result, ReplayResult) and replayer.last_result is result
    same_state(result.final_state, empty_state(WF))


# --- hash formats: over the stored bytes, and the legacy canonical-JSON one ----------------


def legacy_snapshots(path: Path, events: int = 1000) -> list[Event]:
    """A store with snapshots at 500 and 1000 whose hashes are of the legacy format
    (bare hex SHA-256 of the canonical JSON), as earlier versions saved them."""
    store = SqliteEventStore(sqlite_url(path))
    try:
        store.append_batch(workflow_events(events))
        stored = stored_workflow(store)
        for at in (500, 1000):
            state = fold(WF, [e for e in stored if e.sequence <= at])
            store.save_snapshot(EntityType.WORKFLOW, WF, WF, at, at, state, state_hash_hex=state_hash(state))
    finally:
        store.close()
    return stored


def stored_hashes(path: Path) -> dict[int, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT sequence, state_hash FROM event_snapshot").fetchall())


def test_legacy_snapshot_is_checked_the_old_way_and_used(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events = legacy_snapshots(path)
    store = SqliteEventStore(sqlite_url(path))
    try:
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        assert (result.from_snapshot, result.snapshot_sequence, result.events_replayed) == (True, 1000, 0)
        same_state(result.final_state, fold(WF, events))
        found = SnapshotStore(store).get_latest_snapshot(EntityType.WORKFLOW, WF)
        assert found is not None and found.sequence == 1000
        same_state(found.state, fold(WF, events))
    finally:
        store.close()
    # No policy: nothing rewritten.
    assert not any(h.startswith("sha256-msgpack:") for h in stored_hashes(path).values())


def test_tampered_legacy_snapshot_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.db"
    events = legacy_snapshots(path)
    edit(
        path,
        "UPDATE event_snapshot SET state = ? WHERE sequence = 1000",
        encode_payload({**empty_state(WF), "status": "SUCCEEDED"}),
    )
    store = SqliteEventStore(sqlite_url(path))
    try:
        caplog.set_level(logging.WARNING)
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        assert (result.from_snapshot, result.snapshot_sequence, result.events_replayed) == (True, 500, 500)
        same_state(result.final_state, fold(WF, events))
        assert warnings_about(caplog, 1000) and not warnings_about(caplog, 500)
    finally:
        store.close()


def test_replayer_with_a_policy_replaces_a_legacy_snapshot_it_used(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events = legacy_snapshots(path)
    store = SqliteEventStore(sqlite_url(path))
    try:
        replayer = policy_replayer(store)
        first = replayer.replay(WF)
        assert (first.from_snapshot, first.snapshot_sequence, first.events_replayed) == (True, 1000, 0)
        hashes = stored_hashes(path)
        assert hashes[1000].startswith("sha256-msgpack:") and not hashes[500].startswith("sha256-msgpack:")
        again = replayer.replay(WF)
        assert (again.from_snapshot, again.snapshot_sequence, again.events_replayed) == (True, 1000, 0)
        same_state(again.final_state, fold(WF, events))
    finally:
        store.close()


def test_new_hash_covers_the_stored_bytes_not_a_reserialization(tmp_path: Path) -> None:
    # Stored bytes that decode to the same state but differ (a map written with a
    # wider length header) do not match the hash: the bytes are what is checked.
    path = tmp_path / "events.db"
    store = SqliteEventStore(sqlite_url(path))
    try:
        store.append_batch(workflow_events(200))
        policy_replayer(store).replay(WF)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        (raw,) = db.execute("SELECT state FROM event_snapshot WHERE sequence = 200").fetchone()
    assert raw[0] & 0xF0 == 0x80  # a fixmap: rewrite it as a map16 of the same entries
    widened = bytes([0xDE, 0, raw[0] & 0x0F]) + raw[1:]
    edit(path, "UPDATE event_snapshot SET state = ? WHERE sequence = 200", widened)
    store = SqliteEventStore(sqlite_url(path))
    try:
        row = store.get_snapshots(EntityType.WORKFLOW, WF, None, 1)[0]
        assert row["hash_ok"] is False and row["state"] is not None
        result = EventReplayer(store, SnapshotStore(store)).replay(WF)
        assert (result.from_snapshot, result.events_replayed) == (False, 200)
    finally:
        store.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_hand_made_snapshot_state_is_folded_into_the_usual_shape(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    # A snapshot saved through the public API with a state of another shape (extra key,
    # missing ones) gives the state a fold from it gives, not the stored dict as is.
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(100))
    events = stored_workflow(store)
    state = fold(WF, events)
    odd = {**state, "extra": 1}
    del odd["tasks"]
    SnapshotStore(store).create_workflow_snapshot(odd, WF, 100, 100)
    result = EventReplayer(store, SnapshotStore(store)).replay(WF)
    assert (result.from_snapshot, result.events_replayed) == (True, 0)
    assert "extra" not in result.final_state and result.final_state["tasks"] == {}
    assert result.final_state["stages"] == state["stages"]


# --- hash formats over every store ---------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_every_store_hashes_the_stored_bytes_and_the_core_checks_them(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(200))
    policy_replayer(store).replay(WF)  # saves a snapshot at 200
    row = store.get_snapshots(EntityType.WORKFLOW, WF, None, 1)[0]  # type: ignore[attr-defined]
    assert row["sequence"] == 200 and row["state_hash"].startswith("sha256-msgpack:")
    assert row["hash_ok"] is True
    # The hash is that of the bytes the core encodes the state as, checked by the core.
    stored = _core.encode_payload(row["state"])
    assert _core.snapshot_hash(stored) == row["state_hash"]
    assert _core.snapshot_bytes_intact(stored, row["state_hash"]) is True
    assert _core.snapshot_bytes_intact(stored + b"\x00", row["state_hash"]) is False
    assert _core.snapshot_bytes_intact(stored, state_hash(row["state"])) is None  # legacy: not the core's
    # A hash of the new kind that does not match: hash_ok False, and replay does not use it.
    save = store.save_snapshot  # type: ignore[attr-defined]
    save(EntityType.WORKFLOW, WF, WF, 200, 200, row["state"], state_hash_hex="sha256-msgpack:" + "0" * 64)
    assert store.get_snapshots(EntityType.WORKFLOW, WF, None, 1)[0]["hash_ok"] is False  # type: ignore[attr-defined]
    result = EventReplayer(store, SnapshotStore(store)).replay(WF)
    assert (result.from_snapshot, result.events_replayed) == (False, 200)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_every_store_checks_legacy_hashes_the_old_way_and_a_policy_rewrites_them(
    kind: str, tmp_path: Path, opened: list[EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(workflow_events(1000))
    events = stored_workflow(store)
    save = store.save_snapshot  # type: ignore[attr-defined]
    for at in (500, 1000):
        state = fold(WF, [e for e in events if e.sequence <= at])
        save(EntityType.WORKFLOW, WF, WF, at, at, state, state_hash_hex=state_hash(state))
    # A legacy hash that does not match its state: skipped, the older one used.
    lie = {**fold(WF, events), "status": "CANCELED"}
    save(EntityType.WORKFLOW, WF, WF, 1000, 1000, lie, state_hash_hex=state_hash(fold(WF, events)))
    rows = store.get_snapshots(EntityType.WORKFLOW, WF, None, 10)  # type: ignore[attr-defined]
    assert [(r["sequence"], r["hash_ok"]) for r in rows] == [(1000, None), (500, None)]
    caplog.set_level(logging.WARNING)
    plain = EventReplayer(store, SnapshotStore(store)).replay(WF)
    assert (plain.from_snapshot, plain.snapshot_sequence, plain.events_replayed) == (True, 500, 500)
    same_state(plain.final_state, fold(WF, events))
    assert warnings_about(caplog, 1000)
    # Put the honest legacy snapshot back: used as is without a policy ...
    honest = fold(WF, events)
    save(EntityType.WORKFLOW, WF, WF, 1000, 1000, honest, state_hash_hex=state_hash(honest))
    used = EventReplayer(store, SnapshotStore(store)).replay(WF)
    assert (used.from_snapshot, used.snapshot_sequence, used.events_replayed) == (True, 1000, 0)
    newest = store.get_snapshots(EntityType.WORKFLOW, WF, None, 1)[0]  # type: ignore[attr-defined]
    assert not newest["state_hash"].startswith("sha256-msgpack:")
    # ... and replaced by one of the new kind by a replayer with a policy.
    first = policy_replayer(store).replay(WF)
    assert (first.from_snapshot, first.snapshot_sequence, first.events_replayed) == (True, 1000, 0)
    hashes = {
        r["sequence"]: r["state_hash"]
        for r in store.get_snapshots(EntityType.WORKFLOW, WF, None, 10)  # type: ignore[attr-defined]
    }
    assert hashes[1000].startswith("sha256-msgpack:") and not hashes[500].startswith("sha256-msgpack:")
    again = policy_replayer(store).replay(WF)
    assert (again.from_snapshot, again.snapshot_sequence, again.events_replayed) == (True, 1000, 0)
    same_state(again.final_state, fold(WF, events))
