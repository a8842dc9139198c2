"""Upcasting: `EventMigrator` on its own, and replay running older events through the global
migrator (and skipping events of a newer schema) on every store kind.

`CURRENT_SCHEMA_VERSION` is 1, so "old" events here are stored with ``schema_version=0``
and use the payload keys ``state`` and ``result`` where version 1 says ``status`` and
``outputs``; the 0 -> 1 migration renames them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import KINDS_WITH_LIST_STORE, STORE_KINDS, new_store
from helpers.replay_oracle import fold, typed
from stabilize_events import (
    CURRENT_SCHEMA_VERSION,
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    errors,
)
from stabilize_events.migration import EventMigrator, get_event_migrator, reset_event_migrator
from stabilize_events.replay import EventReplayer
from stabilize_events.snapshots import SnapshotPolicy, SnapshotStore

WF = "wf-up"
BASE = datetime(2024, 6, 1, 9, 30, 0, 500, tzinfo=UTC)
META = EventMetadata(correlation_id=WF, source_handler="MigrationTest")


@pytest.fixture(autouse=True)
def clean_global_migrator() -> Iterator[None]:
    """Every test starts and ends with an empty global migrator."""
    reset_event_migrator()
    yield
    reset_event_migrator()


def evolve(event: Event, **changes: Any) -> Event:
    """A copy of ``event`` with some fields replaced."""
    fields: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "sequence": event.sequence,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "workflow_id": event.workflow_id,
        "version": event.version,
        "data": event.data,
        "metadata": event.metadata,
        "schema_version": event.schema_version,
    }
    fields.update(changes)
    return Event(**fields)


RENAMES = {"state": "status", "result": "outputs"}


def v0_to_v1(event: Event) -> Event:
    """The 0 -> 1 step: ``state`` became ``status``, ``result`` became ``outputs``."""
    data = {RENAMES.get(key, key): value for key, value in event.data.items()}
    return evolve(event, data=data, schema_version=1)


def ev(
    event_type: EventType, entity_id: str, t: float, data: dict[str, Any], schema_version: int = 1
) -> Event:
    entity_type = {"stage": EntityType.STAGE, "task": EntityType.TASK}.get(
        event_type.value.split(".")[0], EntityType.WORKFLOW
    )
    return Event(
        event_type=event_type,
        entity_type=entity_type,
        entity_id=entity_id,
        workflow_id=WF,
        timestamp=BASE + timedelta(seconds=t),
        version=1,
        data=data,
        metadata=META,
        schema_version=schema_version,
    )


def mixed_stream() -> list[Event]:
    """Old (v0) and current (v1) events of one workflow; a v0 payload's keys need the migration."""
    return [
        ev(EventType.WORKFLOW_STARTED, WF, 0, {"context": {"a": 1}}, schema_version=0),
        ev(EventType.STAGE_STARTED, "s1", 1, {"name": "build"}, schema_version=0),
        ev(EventType.TASK_STARTED, "t1", 2, {"name": "compile", "stage_id": "s1"}, schema_version=0),
        ev(
            EventType.TASK_COMPLETED,
            "t1",
            3,
            {"state": "FAILED_CONTINUE", "result": {"x": 1}},
            schema_version=0,
        ),
        ev(EventType.TASK_FAILED, "t2", 4, {"status": "TERMINAL", "error": "boom"}),
        ev(EventType.STAGE_COMPLETED, "s1", 5, {"state": "TERMINAL", "result": [1, 2]}, schema_version=0),
        ev(EventType.STAGE_COMPLETED, "s2", 6, {"status": "SUCCEEDED", "outputs": {"ok": True}}),
        ev(EventType.WORKFLOW_FAILED, WF, 7, {"state": "TERMINAL"}, schema_version=0),
    ]


def upcast_all(events: list[Event]) -> list[Event]:
    return [v0_to_v1(e) if e.schema_version == 0 else e for e in events]


def same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert typed(actual) == typed(expected), f"\nactual:   {actual}\nexpected: {expected}"


# --- EventMigrator -------------------------------------------------------------------------


def test_register_is_a_decorator_of_single_steps() -> None:
    migrator = EventMigrator()
    assert migrator.registered_migrations == []
    step = migrator.register(0, 1)(v0_to_v1)
    assert step is v0_to_v1
    migrator.register(2, 3)(v0_to_v1)
    migrator.register(1, 2)(v0_to_v1)
    assert migrator.registered_migrations == [(0, 1), (1, 2), (2, 3)]
    for bad in ((0, 2), (1, 1), (2, 1)):
        with pytest.raises(errors.InvalidArgumentError):
            migrator.register(*bad)


def test_migrate_walks_the_chain_in_order() -> None:
    migrator = EventMigrator()
    calls: list[tuple[int, int]] = []

    def step(to: int) -> Callable[[Event], Event]:
        def run(event: Event) -> Event:
            calls.append((event.schema_version, to))
            return evolve(event, data={**event.data, f"v{to}": True}, schema_version=to)

        return run

    for v in range(3):
        migrator.register(v, v + 1)(step(v + 1))
    old = ev(EventType.TASK_COMPLETED, "t1", 0, {"state": "x"}, schema_version=0)

    to_current = migrator.migrate(old)
    assert to_current.schema_version == CURRENT_SCHEMA_VERSION == 1
    assert calls == [(0, 1)]
    calls.clear()
    migrated = migrator.migrate(old, target_version=3)
    assert calls == [(0, 1), (1, 2), (2, 3)]
    assert migrated.schema_version == 3
    assert migrated.data == {"state": "x", "v1": True, "v2": True, "v3": True}
    assert (migrated.event_id, migrated.timestamp, migrated.entity_id) == (old.event_id, old.timestamp, "t1")

    current = ev(EventType.TASK_COMPLETED, "t1", 0, {})
    calls.clear()
    assert migrator.migrate(current) is current
    assert calls == []


def test_missing_step_strict_and_lenient() -> None:
    migrator = EventMigrator()
    migrator.register(0, 1)(v0_to_v1)
    old = ev(EventType.TASK_COMPLETED, "t1", 0, {"state": "x"}, schema_version=0)
    with pytest.raises(ValueError, match="v1 to v2") as refused:
        migrator.migrate(old, target_version=2)
    # From the documented hierarchy, naming the event and the fix.
    assert isinstance(refused.value, errors.InvalidArgumentError)
    assert old.event_id in str(refused.value) and "register(1, 2)" in str(refused.value)
    partly = migrator.migrate(old, target_version=2, strict=False)
    assert partly.schema_version == 1 and partly.data == {"status": "x"}  # migrated as far as possible

    empty = EventMigrator()
    with pytest.raises(ValueError):
        empty.migrate(old)
    assert empty.migrate(old, strict=False) is old


def test_newer_event_is_never_migrated_down(caplog: pytest.LogCaptureFixture) -> None:
    migrator = EventMigrator()
    migrator.register(0, 1)(v0_to_v1)
    newer = ev(EventType.TASK_COMPLETED, "t1", 0, {"state": "x"}, schema_version=2)
    with pytest.raises(errors.InvalidArgumentError, match="newer"):
        migrator.migrate(newer)
    caplog.set_level(logging.WARNING)
    assert migrator.migrate(newer, strict=False) is newer
    assert any(newer.event_id in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_global_migrator() -> None:
    first = get_event_migrator()
    assert get_event_migrator() is first
    first.register(0, 1)(v0_to_v1)
    assert get_event_migrator().registered_migrations == [(0, 1)]
    reset_event_migrator()
    fresh = get_event_migrator()
    assert fresh is not first and fresh.registered_migrations == []


# --- replay upcasts ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_replay_upcasts_old_events(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    stored = store.append_batch(mixed_stream())
    assert [e.schema_version for e in stored] == [0, 0, 0, 0, 1, 0, 1, 0]
    calls: list[str] = []

    @get_event_migrator().register(0, 1)
    def upcast(event: Event) -> Event:
        calls.append(event.event_id)
        return v0_to_v1(event)

    replayer = EventReplayer(store)
    state = replayer.rebuild_workflow_state(WF)
    same_state(state, fold(WF, upcast_all(stored)))
    assert state["tasks"]["t1"]["status"] == "FAILED_CONTINUE" and state["tasks"]["t1"]["outputs"] == {"x": 1}
    assert state["stages"]["s1"]["status"] == "TERMINAL" and state["status"] == "TERMINAL"
    # Only the old events went through the migration, once each per rebuild.
    assert calls == [e.event_id for e in stored if e.schema_version == 0]

    # Time travel and as_of_sequence upcast too (a migrated event keeps its sequence and time).
    for seq in range(len(stored) + 1):
        expected = fold(WF, upcast_all([e for e in stored if e.sequence <= seq]))
        same_state(replayer.rebuild_workflow_state(WF, as_of_sequence=seq), expected)
    moment = stored[3].timestamp
    same_state(
        replayer.time_travel_query(WF, moment),
        fold(WF, upcast_all([e for e in stored if e.timestamp <= moment])),
    )

    # Checkpoint replay hands the handler upcast events.
    seen: list[Event] = []
    replayer.replay_workflow_from_checkpoint(WF, stored[1].sequence, seen.append)
    assert [e.schema_version for e in seen] == [1] * (len(stored) - 2)
    assert seen[1].data == {"status": "FAILED_CONTINUE", "outputs": {"x": 1}}
    assert [e.sequence for e in seen] == [e.sequence for e in stored[2:]]


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_without_migrations_old_events_are_folded_as_stored(
    kind: str, tmp_path: Path, opened: list[EventStore]
) -> None:
    store = new_store(kind, tmp_path, opened)
    stored = store.append_batch(mixed_stream())
    state = EventReplayer(store).rebuild_workflow_state(WF)
    same_state(state, fold(WF, stored))
    assert state["tasks"]["t1"]["status"] == "SUCCEEDED"  # ``state`` is not a key the fold reads


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_newer_schema_is_skipped_with_a_warning(
    kind: str, tmp_path: Path, opened: list[EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(kind, tmp_path, opened)
    get_event_migrator().register(0, 1)(v0_to_v1)
    events = [
        *mixed_stream(),
        # A newer build's layout: applying it would read a wrong status.
        ev(EventType.STAGE_COMPLETED, "s2", 8, {"status": {"code": "X"}, "outputs": "v2"}, schema_version=2),
        ev(EventType.TASK_STARTED, "t9", 9, {"name": "from the future"}, schema_version=7),
        ev(EventType.WORKFLOW_RESUMED, WF, 10, {}),
    ]
    stored = store.append_batch(events)
    newer = [e for e in stored if e.schema_version > 1]

    caplog.set_level(logging.WARNING)
    replayer = EventReplayer(store)
    result = replayer.replay(WF)
    same_state(result.final_state, fold(WF, upcast_all(stored)))
    assert "t9" not in result.final_state["tasks"]
    assert result.final_state["stages"]["s2"]["status"] == "SUCCEEDED"
    assert result.skipped_newer == [(e.event_id, e.schema_version) for e in newer]
    assert result.events_replayed == len(stored) - len(newer)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for e in newer:
        assert any(e.event_id in m and f"v{e.schema_version}" in m for m in messages), messages


@pytest.mark.parametrize("kind", KINDS_WITH_LIST_STORE)
def test_failing_migration_surfaces(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    store.append_batch(mixed_stream())
    behaviour: dict[str, Any] = {"mode": "raise"}

    @get_event_migrator().register(0, 1)
    def upcast(event: Event) -> Any:
        if behaviour["mode"] == "raise":
            raise RuntimeError(f"cannot migrate {event.event_id}")
        return {"not": "an event"}

    replayer = EventReplayer(store)
    with pytest.raises(RuntimeError, match="cannot migrate"):
        replayer.rebuild_workflow_state(WF)
    behaviour["mode"] = "junk"
    with pytest.raises(errors.ArgumentTypeError):
        replayer.rebuild_workflow_state(WF)
    # The store is still fine, and replay works again once the migration does.
    reset_event_migrator()
    get_event_migrator().register(0, 1)(v0_to_v1)
    same_state(replayer.rebuild_workflow_state(WF), fold(WF, upcast_all(store.get_events_for_workflow(WF))))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_snapshot_holds_the_upcast_state(kind: str, tmp_path: Path, opened: list[EventStore]) -> None:
    store = new_store(kind, tmp_path, opened)
    stored = store.append_batch(mixed_stream())
    get_event_migrator().register(0, 1)(v0_to_v1)
    replayer = EventReplayer(store, SnapshotStore(store, SnapshotPolicy(every_n_events=3, min_events=1)))
    first = replayer.replay(WF)
    reset_event_migrator()  # the snapshot already holds the upcast state
    second = replayer.replay(WF)
    assert second.from_snapshot and second.events_replayed == 0
    same_state(second.final_state, fold(WF, upcast_all(stored)))
    same_state(second.final_state, first.final_state)
