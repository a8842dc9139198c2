"""configure_event_sourcing end to end: the global recorder stores into a real store and publishes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.models import Task, WorkflowStatus, sample_workflow
from stabilize_events import (
    EntityType,
    Event,
    EventStore,
    EventType,
    InMemoryEventStore,
    SqliteEventStore,
    errors,
)
from stabilize_events.bus import SubscriptionMode, get_event_bus, reset_event_bus
from stabilize_events.recorder import (
    EventRecorder,
    get_event_recorder,
    reset_event_recorder,
    set_event_context,
)
from stabilize_events.sourcing import configure_event_sourcing

LIFECYCLE = [
    EventType.WORKFLOW_CREATED,
    EventType.WORKFLOW_STARTED,
    EventType.STAGE_STARTED,
    EventType.TASK_STARTED,
    EventType.TASK_COMPLETED,
    EventType.OUTPUTS_UPDATED,
    EventType.STAGE_COMPLETED,
    EventType.WORKFLOW_COMPLETED,
]


@pytest.fixture(autouse=True)
def _isolated_globals() -> Iterator[None]:
    reset_event_bus()
    reset_event_recorder()
    yield
    reset_event_bus()
    reset_event_recorder()


@pytest.fixture(params=["in-memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "in-memory":
        yield InMemoryEventStore()
        return
    s = SqliteEventStore(f"sqlite:///{tmp_path / 'events.db'}", create_tables=True)
    yield s
    s.close()


def run_lifecycle(recorder: EventRecorder) -> list[Event]:
    """Record one small workflow from creation to completion; return the recorded events."""
    wf = sample_workflow()
    stage = wf.stages[0]
    task = stage.add_task(Task(id="tk-1", version=1))
    wf.start_time = stage.start_time = task.start_time = 1_000
    events = [recorder.record_workflow_created(wf), recorder.record_workflow_started(wf, ["st-1", "st-2"])]
    events.append(recorder.record_stage_started(stage, source_handler="StartStageHandler"))
    events.append(recorder.record_task_started(task, wf.id))
    task.status, task.end_time = WorkflowStatus.SUCCEEDED, 1_250
    events.append(recorder.record_task_completed(task, wf.id, {"rows": [1, 2, None], "ok": True}))
    events.append(recorder.record_outputs_updated(EntityType.STAGE, stage.id, wf.id, {"rows": 3}))
    stage.status, stage.end_time, stage.outputs = WorkflowStatus.SUCCEEDED, 1_300, {"rows": 3}
    events.append(recorder.record_stage_completed(stage))
    wf.status, wf.end_time = WorkflowStatus.SUCCEEDED, 1_400
    events.append(recorder.record_workflow_completed(wf))
    return events


def test_configure_installs_global_recorder_and_fresh_bus(store: EventStore) -> None:
    old_bus = get_event_bus()
    recorder = configure_event_sourcing(store, bus_max_workers=2)
    assert isinstance(recorder, EventRecorder)
    assert get_event_recorder() is recorder
    assert get_event_bus() is not old_bus


def test_recorded_events_are_stored_and_published(store: EventStore) -> None:
    configure_event_sourcing(store)
    sync_seen: list[Event] = []
    async_seen: list[Event] = []
    failures: list[Event] = []
    bus = get_event_bus()
    bus.subscribe("sync", sync_seen.append)
    bus.subscribe("async", async_seen.append, mode=SubscriptionMode.ASYNC)
    bus.subscribe("fail", failures.append, event_types={EventType.WORKFLOW_FAILED, EventType.TASK_FAILED})
    set_event_context("wf-1", actor="alice")

    recorder = get_event_recorder()
    assert recorder is not None
    recorded = run_lifecycle(recorder)

    stored = store.get_events_for_workflow("wf-1")
    assert [e.event_type for e in stored] == LIFECYCLE
    assert [e.sequence for e in stored] == list(range(1, len(LIFECYCLE) + 1))
    assert stored == recorded
    assert sync_seen == recorded
    bus.shutdown(wait=True)  # flush ASYNC deliveries
    assert async_seen == recorded
    assert failures == []

    completed = stored[4]
    assert completed.data == {
        "name": "compile",
        "status": "SUCCEEDED",
        "end_time": 1_250,
        "duration_ms": 250,
        "outputs": {"rows": [1, 2, None], "ok": True},
    }
    assert stored[2].metadata.to_dict() == {
        "correlation_id": "wf-1",
        "causation_id": None,
        "actor": "alice",
        "source_handler": "StartStageHandler",
    }


def test_publish_to_bus_false_only_stores(store: EventStore) -> None:
    configure_event_sourcing(store, publish_to_bus=False)
    seen: list[Event] = []
    get_event_bus().subscribe("spy", seen.append)
    recorder = get_event_recorder()
    assert recorder is not None
    run_lifecycle(recorder)
    assert seen == []
    assert store.get_current_sequence() == len(LIFECYCLE)


def test_reconfiguring_moves_recording_to_the_new_store_and_bus(tmp_path: Path) -> None:
    first_store, second_store = InMemoryEventStore(), InMemoryEventStore()
    configure_event_sourcing(first_store)
    old_seen: list[Event] = []
    get_event_bus().subscribe("old", old_seen.append)

    configure_event_sourcing(second_store)
    new_seen: list[Event] = []
    get_event_bus().subscribe("new", new_seen.append)
    recorder = get_event_recorder()
    assert recorder is not None
    run_lifecycle(recorder)

    assert first_store.get_current_sequence() == 0
    assert second_store.get_current_sequence() == len(LIFECYCLE)
    assert old_seen == []
    assert len(new_seen) == len(LIFECYCLE)


def test_sqlite_events_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    store = SqliteEventStore(url, create_tables=True)
    configure_event_sourcing(store)
    recorder = get_event_recorder()
    assert recorder is not None
    recorded = run_lifecycle(recorder)
    store.close()

    reopened = SqliteEventStore(url)
    try:
        assert reopened.get_events_for_workflow("wf-1") == recorded
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("given", "hint"),
    [("sqlite:///app.db", "SqliteEventStore('sqlite:///app.db')"), (None, "InMemoryEventStore()")],
)
def test_something_that_is_no_store_is_refused_with_nothing_configured(given: object, hint: str) -> None:
    bus = get_event_bus()
    with pytest.raises(errors.ArgumentTypeError, match=r"^event_store must be an event store") as refused:
        configure_event_sourcing(given)  # type: ignore[arg-type]
    assert hint in str(refused.value)
    # Nothing was configured: no recorder, the same bus.
    assert get_event_recorder() is None and get_event_bus() is bus
    with pytest.raises(errors.ArgumentTypeError):
        EventRecorder(given)  # type: ignore[arg-type]
