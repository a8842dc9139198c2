"""EventRecorder: every record_* method's event (type, entity, version, payload), metadata, store and bus.

The expected payloads are pinned from Stabilize 0.33.1's recorder run on the
same model values (keys, values and key order), so this file needs no
Stabilize install.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers.models import PausedDetails, Stage, Task, Trigger, Workflow, WorkflowStatus, sample_workflow
from stabilize_events import EntityType, Event, EventMetadata, EventType, InMemoryEventStore
from stabilize_events.bus import get_event_bus, reset_event_bus
from stabilize_events.recorder import (
    EventRecorder,
    configure_event_recorder,
    get_event_metadata,
    get_event_recorder,
    reset_event_recorder,
    set_event_context,
)

S = WorkflowStatus
W, ST, T = EntityType.WORKFLOW, EntityType.STAGE, EntityType.TASK


@dataclass
class World:
    """A workflow whose first stage ("st-1", version 4) has one task ("tk-1", version 2)."""

    wf: Workflow
    stage: Stage
    task: Task


@pytest.fixture
def world() -> World:
    wf = sample_workflow()
    stage = wf.stages[0]
    task = stage.add_task(Task(id="tk-1", version=2))
    return World(wf, stage, task)


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


@pytest.fixture
def recorder(store: InMemoryEventStore) -> EventRecorder:
    return EventRecorder(store, publish_to_bus=False)


@pytest.fixture(autouse=True)
def _isolated_globals() -> Iterator[None]:
    reset_event_bus()
    reset_event_recorder()
    yield
    reset_event_bus()
    reset_event_recorder()


# -- every record_* method, pinned ------------------------------------------------------


def _started(w: World) -> World:
    w.wf.start_time = 1000
    w.stage.start_time = 1100
    w.task.start_time = 1200
    return w


def _finished(w: World) -> World:
    _started(w)
    w.wf.status, w.wf.end_time = S.SUCCEEDED, 4500
    w.stage.status, w.stage.end_time, w.stage.outputs = S.SUCCEEDED, 1900, {"artifact": "a.tar"}
    w.task.status, w.task.end_time = S.SUCCEEDED, 1700
    return w


def _failed(w: World) -> World:
    _finished(w)
    w.wf.status = w.stage.status = w.task.status = S.TERMINAL
    w.task.task_exception_details = {"exception": "ValueError: x", "trace": "..."}
    return w


def _canceled(w: World) -> World:
    _finished(w)
    w.wf.canceled_by, w.wf.cancellation_reason = "bob", "obsolete"
    return w


def _paused(w: World) -> World:
    w.wf.paused = PausedDetails(paused_by="carol", pause_time=2000)
    return w


def _resumed(w: World) -> World:
    w.wf.paused = PausedDetails(paused_by="carol", pause_time=2000, resume_time=2600, paused_ms=600)
    return w


Action = Callable[[EventRecorder, World], Event]
Expected = tuple[EventType, EntityType, str, int, dict[str, Any]]

CASES: dict[str, tuple[Action, Expected]] = {
    "workflow_created": (
        lambda r, w: r.record_workflow_created(w.wf),
        (
            EventType.WORKFLOW_CREATED,
            W,
            "wf-1",
            1,
            {
                "application": "billing",
                "name": "nightly",
                "type": "PIPELINE",
                "trigger_type": "webhook",
                "stage_count": 4,
                "initial_stage_count": 2,
            },
        ),
    ),
    "workflow_started": (
        lambda r, w: r.record_workflow_started(_started(w).wf, ["st-1", "st-2"]),
        (
            EventType.WORKFLOW_STARTED,
            W,
            "wf-1",
            2,
            {
                "start_time": 1000,
                "initial_stage_ids": ["st-1", "st-2"],
                "context": {"region": "eu", "retries": 2},
            },
        ),
    ),
    "workflow_started_no_ids": (
        lambda r, w: r.record_workflow_started(_started(w).wf),
        (
            EventType.WORKFLOW_STARTED,
            W,
            "wf-1",
            2,
            {
                "start_time": 1000,
                "initial_stage_ids": [],
                "context": {"region": "eu", "retries": 2},
            },
        ),
    ),
    "workflow_completed": (
        lambda r, w: r.record_workflow_completed(_finished(w).wf),
        (
            EventType.WORKFLOW_COMPLETED,
            W,
            "wf-1",
            3,
            {"status": "SUCCEEDED", "end_time": 4500, "duration_ms": 3500},
        ),
    ),
    "workflow_completed_unstarted": (
        lambda r, w: r.record_workflow_completed(w.wf),
        (
            EventType.WORKFLOW_COMPLETED,
            W,
            "wf-1",
            3,
            {"status": "NOT_STARTED", "end_time": None, "duration_ms": None},
        ),
    ),
    "workflow_failed": (
        lambda r, w: r.record_workflow_failed(_failed(w).wf, "boom"),
        (EventType.WORKFLOW_FAILED, W, "wf-1", 3, {"status": "TERMINAL", "error": "boom", "end_time": 4500}),
    ),
    "workflow_canceled": (
        lambda r, w: r.record_workflow_canceled(_canceled(w).wf),
        (
            EventType.WORKFLOW_CANCELED,
            W,
            "wf-1",
            3,
            {"canceled_by": "bob", "reason": "obsolete", "end_time": 4500},
        ),
    ),
    "workflow_paused": (
        lambda r, w: r.record_workflow_paused(_paused(w).wf),
        (EventType.WORKFLOW_PAUSED, W, "wf-1", 4, {"paused_by": "carol", "pause_time": 2000}),
    ),
    "workflow_paused_without_details": (
        lambda r, w: r.record_workflow_paused(w.wf),
        (EventType.WORKFLOW_PAUSED, W, "wf-1", 4, {"paused_by": None, "pause_time": None}),
    ),
    "workflow_resumed": (
        lambda r, w: r.record_workflow_resumed(_resumed(w).wf),
        (EventType.WORKFLOW_RESUMED, W, "wf-1", 4, {"resume_time": 2600, "paused_ms": 600}),
    ),
    "workflow_resumed_no_stages": (
        lambda r, w: r.record_workflow_resumed(Workflow(stages=[])),
        (EventType.WORKFLOW_RESUMED, W, "wf-1", 1, {"resume_time": None, "paused_ms": None}),
    ),
    "stage_started": (
        lambda r, w: r.record_stage_started(_started(w).stage),
        (
            EventType.STAGE_STARTED,
            ST,
            "st-1",
            4,
            {
                "ref_id": "build",
                "type": "shell",
                "name": "Build",
                "start_time": 1100,
                "is_synthetic": False,
                "parent_stage_id": None,
                "task_count": 1,
            },
        ),
    ),
    "stage_started_synthetic": (
        lambda r, w: r.record_stage_started(w.wf.stages[3]),
        (
            EventType.STAGE_STARTED,
            ST,
            "st-4",
            0,
            {
                "ref_id": "build-pre",
                "type": "shell",
                "name": "Build",
                "start_time": None,
                "is_synthetic": True,
                "parent_stage_id": "st-1",
                "task_count": 0,
            },
        ),
    ),
    "stage_completed": (
        lambda r, w: r.record_stage_completed(_finished(w).stage),
        (
            EventType.STAGE_COMPLETED,
            ST,
            "st-1",
            4,
            {
                "ref_id": "build",
                "type": "shell",
                "name": "Build",
                "status": "SUCCEEDED",
                "end_time": 1900,
                "duration_ms": 800,
                "outputs": {"artifact": "a.tar"},
            },
        ),
    ),
    "stage_failed": (
        lambda r, w: r.record_stage_failed(_failed(w).stage, "exit 2"),
        (
            EventType.STAGE_FAILED,
            ST,
            "st-1",
            4,
            {
                "ref_id": "build",
                "type": "shell",
                "name": "Build",
                "status": "TERMINAL",
                "error": "exit 2",
                "end_time": 1900,
            },
        ),
    ),
    "stage_skipped": (
        lambda r, w: r.record_stage_skipped(w.wf.stages[1], "condition false"),
        (
            EventType.STAGE_SKIPPED,
            ST,
            "st-2",
            0,
            {
                "ref_id": "lint",
                "type": "python",
                "name": "Lint",
                "reason": "condition false",
            },
        ),
    ),
    "stage_canceled": (
        lambda r, w: r.record_stage_canceled(w.stage),
        (EventType.STAGE_CANCELED, ST, "st-1", 4, {"ref_id": "build", "type": "shell", "name": "Build"}),
    ),
    "stage_suspended": (
        lambda r, w: r.record_stage_suspended(w.stage),
        (EventType.STAGE_SUSPENDED, ST, "st-1", 4, {"ref_id": "build", "type": "shell", "name": "Build"}),
    ),
    "stage_resumed": (
        lambda r, w: r.record_stage_resumed(w.stage, "approve"),
        (
            EventType.STAGE_RESUMED,
            ST,
            "st-1",
            4,
            {
                "ref_id": "build",
                "type": "shell",
                "name": "Build",
                "signal_name": "approve",
            },
        ),
    ),
    "stage_resumed_default_signal": (
        lambda r, w: r.record_stage_resumed(w.stage),
        (
            EventType.STAGE_RESUMED,
            ST,
            "st-1",
            4,
            {"ref_id": "build", "type": "shell", "name": "Build", "signal_name": ""},
        ),
    ),
    "task_started": (
        lambda r, w: r.record_task_started(_started(w).task, "wf-1"),
        (
            EventType.TASK_STARTED,
            T,
            "tk-1",
            2,
            {
                "name": "compile",
                "implementing_class": "app.tasks.Compile",
                "start_time": 1200,
                "stage_id": "st-1",
            },
        ),
    ),
    "task_started_detached": (
        lambda r, w: r.record_task_started(Task(id="tk-9"), "wf-1"),
        (
            EventType.TASK_STARTED,
            T,
            "tk-9",
            0,
            {
                "name": "compile",
                "implementing_class": "app.tasks.Compile",
                "start_time": None,
                "stage_id": None,
            },
        ),
    ),
    "task_completed": (
        lambda r, w: r.record_task_completed(_finished(w).task, "wf-1", {"rows": 3}),
        (
            EventType.TASK_COMPLETED,
            T,
            "tk-1",
            2,
            {
                "name": "compile",
                "status": "SUCCEEDED",
                "end_time": 1700,
                "duration_ms": 500,
                "outputs": {"rows": 3},
            },
        ),
    ),
    "task_completed_no_outputs": (
        lambda r, w: r.record_task_completed(_finished(w).task, "wf-1"),
        (
            EventType.TASK_COMPLETED,
            T,
            "tk-1",
            2,
            {
                "name": "compile",
                "status": "SUCCEEDED",
                "end_time": 1700,
                "duration_ms": 500,
                "outputs": {},
            },
        ),
    ),
    "task_failed": (
        lambda r, w: r.record_task_failed(_failed(w).task, "wf-1", "bad"),
        (
            EventType.TASK_FAILED,
            T,
            "tk-1",
            2,
            {
                "name": "compile",
                "status": "TERMINAL",
                "error": "bad",
                "end_time": 1700,
                "exception_details": {"exception": "ValueError: x", "trace": "..."},
            },
        ),
    ),
    "task_failed_no_details": (
        lambda r, w: r.record_task_failed(w.task, "wf-1", "bad"),
        (
            EventType.TASK_FAILED,
            T,
            "tk-1",
            2,
            {
                "name": "compile",
                "status": "NOT_STARTED",
                "error": "bad",
                "end_time": None,
                "exception_details": None,
            },
        ),
    ),
    "task_retried": (
        lambda r, w: r.record_task_retried(_failed(w).task, "wf-1", 3),
        (
            EventType.TASK_RETRIED,
            T,
            "tk-1",
            2,
            {"name": "compile", "attempt": 3, "last_error": "ValueError: x"},
        ),
    ),
    "task_retried_no_details": (
        lambda r, w: r.record_task_retried(w.task, "wf-1", 4),
        (EventType.TASK_RETRIED, T, "tk-1", 2, {"name": "compile", "attempt": 4, "last_error": None}),
    ),
    # Not in Stabilize 0.33 (it has the event type only): designed like stage suspended.
    "task_suspended": (
        lambda r, w: r.record_task_suspended(w.task, "wf-1"),
        (EventType.TASK_SUSPENDED, T, "tk-1", 2, {"name": "compile", "stage_id": "st-1"}),
    ),
    "status_change": (
        lambda r, w: r.record_status_change(ST, "st-1", "wf-1", S.RUNNING, S.SUCCEEDED, version=7),
        (EventType.STATUS_CHANGED, ST, "st-1", 7, {"old_status": "RUNNING", "new_status": "SUCCEEDED"}),
    ),
    "status_change_default_version": (
        lambda r, w: r.record_status_change(T, "tk-1", "wf-1", S.NOT_STARTED, S.RUNNING),
        (EventType.STATUS_CHANGED, T, "tk-1", 1, {"old_status": "NOT_STARTED", "new_status": "RUNNING"}),
    ),
    "context_updated": (
        lambda r, w: r.record_context_updated(W, "wf-1", "wf-1", {"k": 1}, version=3),
        (EventType.CONTEXT_UPDATED, W, "wf-1", 3, {"context": {"k": 1}}),
    ),
    "outputs_updated": (
        lambda r, w: r.record_outputs_updated(ST, "st-1", "wf-1", {"o": [1, 2]}),
        (EventType.OUTPUTS_UPDATED, ST, "st-1", 1, {"outputs": {"o": [1, 2]}}),
    ),
    "jump_executed": (
        lambda r, w: r.record_jump_executed("wf-1", "st-3", "st-1", "restart", version=5),
        (
            EventType.JUMP_EXECUTED,
            W,
            "wf-1",
            5,
            {"from_stage_id": "st-3", "to_stage_id": "st-1", "jump_type": "restart"},
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_record_method_builds_the_reference_event(
    case: str, recorder: EventRecorder, store: InMemoryEventStore, world: World
) -> None:
    action, (event_type, entity_type, entity_id, version, data) = CASES[case]
    event = action(recorder, world)
    assert event.event_type is event_type
    assert event.entity_type is entity_type
    assert event.entity_id == entity_id
    assert event.workflow_id == "wf-1"
    assert event.version == version
    assert event.data == data
    assert list(event.data) == list(data)  # same key order as the reference
    assert event.sequence == 1
    stored = store.get_events_for_workflow("wf-1")
    assert stored == [event]
    assert list(stored[0].data) == list(data)


def test_every_record_method_has_a_pinned_case() -> None:
    methods = {name for name in dir(EventRecorder) if name.startswith("record_")}
    assert len(methods) == 23  # 7 workflow, 7 stage, 5 task, 4 generic
    assert {name.removeprefix("record_") for name in methods} <= set(CASES)


def test_stage_without_execution_has_empty_workflow_id(recorder: EventRecorder) -> None:
    event = recorder.record_stage_canceled(Stage(id="lonely"))
    assert (event.entity_id, event.workflow_id) == ("lonely", "")


def test_workflow_without_trigger_counts_as_manual(recorder: EventRecorder) -> None:
    event = recorder.record_workflow_created(Workflow(trigger=None))
    assert event.data["trigger_type"] == "manual"
    assert Trigger().type == "manual"


def test_sequences_increase_across_records(recorder: EventRecorder, world: World) -> None:
    events = [
        recorder.record_workflow_created(world.wf),
        recorder.record_stage_started(world.stage),
        recorder.record_task_started(world.task, "wf-1"),
    ]
    assert [e.sequence for e in events] == [1, 2, 3]


# -- metadata from the context --------------------------------------------------------------


def test_metadata_defaults() -> None:
    # A fresh thread starts from the default context, whatever this one set.
    result: list[EventMetadata] = []
    thread = threading.Thread(target=lambda: result.append(get_event_metadata()))
    thread.start()
    thread.join()
    assert result[0] == EventMetadata(
        correlation_id="", causation_id=None, actor="system", source_handler=None
    )


def test_context_flows_into_recorded_events(recorder: EventRecorder, world: World) -> None:
    set_event_context("corr-1", causation_id="cause-1", actor="alice")
    event = recorder.record_stage_started(world.stage, source_handler="StartStageHandler")
    assert event.metadata.to_dict() == {
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
        "actor": "alice",
        "source_handler": "StartStageHandler",
    }
    set_event_context("corr-2")  # causation and actor fall back to their defaults
    assert get_event_metadata() == EventMetadata(correlation_id="corr-2", causation_id=None, actor="system")


def test_context_is_per_thread(recorder: EventRecorder, world: World) -> None:
    set_event_context("main-corr", actor="main")
    seen: dict[str, str] = {}

    def worker(name: str) -> None:
        set_event_context(f"{name}-corr", actor=name)
        seen[name] = recorder.record_task_started(world.task, "wf-1").metadata.correlation_id

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": "a-corr", "b": "b-corr"}
    assert get_event_metadata().correlation_id == "main-corr"


# -- store and bus ----------------------------------------------------------------------------


class BrokenStore(InMemoryEventStore):
    """Fails every append."""

    def append(self, event: Event, connection: Any | None = None) -> Event:
        raise OSError("disk full")

    def append_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        raise OSError("disk full")


class ConnectionSpyStore(InMemoryEventStore):
    """Records the connection each append was given, then appends without it."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[Any] = []

    def append(self, event: Event, connection: Any | None = None) -> Event:
        self.connections.append(connection)
        return super().append(event)

    def append_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        self.connections.append(connection)
        return super().append_batch(events)


def test_published_event_is_the_stored_one(store: InMemoryEventStore, world: World) -> None:
    got: list[Event] = []
    get_event_bus().subscribe("spy", got.append)
    event = EventRecorder(store).record_workflow_created(world.wf)
    assert got == [event]
    assert got[0].sequence == 1


def test_publish_to_bus_false_does_not_publish(store: InMemoryEventStore, world: World) -> None:
    got: list[Event] = []
    get_event_bus().subscribe("spy", got.append)
    EventRecorder(store, publish_to_bus=False).record_workflow_created(world.wf)
    assert got == []
    assert get_event_bus().stats.events_published == 0
    assert store.get_current_sequence() == 1


def test_store_failure_is_logged_and_raised_and_nothing_published(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Event] = []
    get_event_bus().subscribe("spy", got.append)
    with caplog.at_level(logging.ERROR), pytest.raises(OSError, match="disk full"):
        EventRecorder(BrokenStore()).record_stage_failed(world.stage, "x")
    assert got == []
    assert "stage.failed" in caplog.text and "st-1" in caplog.text


def test_bus_failure_is_logged_not_raised(
    store: InMemoryEventStore, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: Event) -> None:
        raise RuntimeError("bus down")

    monkeypatch.setattr(get_event_bus(), "publish", explode)
    with caplog.at_level(logging.WARNING):
        event = EventRecorder(store).record_workflow_created(world.wf)
    assert event.sequence == 1
    assert store.get_current_sequence() == 1
    assert "bus down" in caplog.text


def test_failing_subscriber_does_not_reach_the_recorder(store: InMemoryEventStore, world: World) -> None:
    get_event_bus().subscribe("bad", lambda e: 1 / 0)
    event = EventRecorder(store).record_workflow_created(world.wf)
    assert event.sequence == 1
    assert get_event_bus().stats.errors == 1


def test_connection_is_passed_to_the_store(world: World) -> None:
    spy = ConnectionSpyStore()
    recorder = EventRecorder(spy, publish_to_bus=False)
    conn = object()
    recorder.record_workflow_created(world.wf, connection=conn)
    recorder.record_task_started(world.task, "wf-1")
    recorder._record_batch([Event(workflow_id="wf-1")], connection=conn)
    assert spy.connections == [conn, None, conn]


def test_record_batch_appends_atomically_and_publishes_in_order(store: InMemoryEventStore) -> None:
    got: list[int] = []
    get_event_bus().subscribe("spy", lambda e: got.append(e.data["n"]))
    recorder = EventRecorder(store)
    assert recorder._record_batch([]) == []
    recorded = recorder._record_batch([Event(workflow_id="wf-1", data={"n": i}) for i in range(5)])
    assert [e.sequence for e in recorded] == [1, 2, 3, 4, 5]
    assert got == [0, 1, 2, 3, 4]


def test_record_batch_failure_raises_and_publishes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    got: list[Event] = []
    get_event_bus().subscribe("spy", got.append)
    with caplog.at_level(logging.ERROR), pytest.raises(OSError):
        EventRecorder(BrokenStore())._record_batch([Event(), Event()])
    assert got == []
    assert "batch of 2" in caplog.text


def test_record_batch_bus_failure_is_logged_not_raised(
    store: InMemoryEventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(events: list[Event]) -> None:
        raise RuntimeError("bus down")

    monkeypatch.setattr(get_event_bus(), "publish_batch", explode)
    with caplog.at_level(logging.WARNING):
        recorded = EventRecorder(store)._record_batch([Event(), Event()])
    assert len(recorded) == 2
    assert "bus down" in caplog.text


# -- the global recorder ----------------------------------------------------------------------


def test_global_recorder_lifecycle(store: InMemoryEventStore) -> None:
    assert get_event_recorder() is None
    recorder = configure_event_recorder(store, publish_to_bus=False)
    assert get_event_recorder() is recorder
    again = configure_event_recorder(store)
    assert again is not recorder and get_event_recorder() is again
    reset_event_recorder()
    assert get_event_recorder() is None


def test_configure_event_recorder_from_many_threads(store: InMemoryEventStore) -> None:
    made: list[EventRecorder] = []
    barrier = threading.Barrier(8)

    def configure() -> None:
        barrier.wait()
        made.append(configure_event_recorder(store))

    threads = [threading.Thread(target=configure) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8
    assert get_event_recorder() in made


def test_clock_stamps_every_event_the_recorder_builds(store: InMemoryEventStore, world: World) -> None:
    from datetime import UTC, datetime, timedelta

    ticks = iter(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(10))
    recorder = EventRecorder(store, publish_to_bus=False, clock=lambda: next(ticks))
    w = _finished(world)
    recorder.record_workflow_created(w.wf)
    recorder.record_stage_started(w.stage)
    recorder.record_task_completed(w.task, w.wf.id)
    stamps = [e.timestamp for e in store.get_events_since(0, 10)]
    assert stamps == [datetime(2030, 1, 1, 0, m, tzinfo=UTC) for m in range(3)]
    # Through the global setup too, and without it the current time.
    configured = configure_event_recorder(store, clock=lambda: datetime(2031, 5, 5, tzinfo=UTC))
    assert configured.record_workflow_started(w.wf).timestamp == datetime(2031, 5, 5, tzinfo=UTC)
    before = datetime.now(UTC)
    plain = EventRecorder(store, publish_to_bus=False).record_workflow_completed(w.wf)
    assert before <= plain.timestamp <= datetime.now(UTC)
