"""`ProjectionRunner`: catch-up from the store, then live from the bus, nothing missed or doubled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from stabilize_events import (
    EntityType,
    Event,
    EventStore,
    EventType,
)
from stabilize_events.bus import EventBus
from stabilize_events.errors import ArgumentTypeError, InvalidArgumentError
from stabilize_events.projections import (
    Projection,
    ProjectionRunner,
    StageMetricsProjection,
    WorkflowTimelineProjection,
)


class Recording(Projection):
    """Remembers the sequences it was given, in order; optionally fails on some."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.sequences: list[int] = []
        self.fail_on = fail_on if fail_on is not None else set()

    @property
    def name(self) -> str:
        return "recording"

    def apply(self, event: Event) -> None:
        if event.sequence in self.fail_on:
            raise RuntimeError(f"cannot apply {event.sequence}")
        self.sequences.append(event.sequence)

    def get_state(self) -> list[int]:
        return self.sequences


def make_events(n: int, workflow: str = "wf-1", start: int = 0) -> list[Event]:
    """``n`` stage/task events of ``workflow`` (four-event cycle, versions from ``start``)."""
    cycle = [
        (EventType.STAGE_STARTED, EntityType.STAGE, "stage"),
        (EventType.TASK_STARTED, EntityType.TASK, "task"),
        (EventType.TASK_COMPLETED, EntityType.TASK, "task"),
        (EventType.STAGE_COMPLETED, EntityType.STAGE, "stage"),
    ]
    out = []
    for i in range(start, start + n):
        event_type, entity_type, kind = cycle[i % 4]
        out.append(
            Event(
                event_type=event_type,
                entity_type=entity_type,
                entity_id=f"{workflow}-{kind}-{i // 4}",
                workflow_id=workflow,
                version=i + 1,
                data={"name": f"step-{i // 4}", "type": "python", "duration_ms": i},
            )
        )
    return out


@pytest.fixture
def bus() -> Iterator[EventBus]:
    b = EventBus()
    yield b
    b.shutdown()


def record(store: EventStore, bus: EventBus, events: list[Event]) -> list[Event]:
    """What the recorder does: store, then publish what was stored."""
    stored = store.append_batch(events)
    for event in stored:
        bus.publish(event)
    return stored


def full_fold(store: EventStore) -> StageMetricsProjection:
    projection = StageMetricsProjection()
    projection.apply_all(store.get_events_since(0, 1_000_000))
    return projection


def test_catch_up_alone_rebuilds_from_the_store(store: EventStore) -> None:
    store.append_batch(make_events(250))
    runner = ProjectionRunner(store, Recording(), batch_size=100)
    assert runner.catch_up() == 250
    assert runner.projection.get_state() == list(range(1, 251))
    assert runner.position == 250 and runner.events_applied == 250
    assert runner.catch_up() == 0


def test_catch_up_then_live(store: EventStore, bus: EventBus) -> None:
    record(store, bus, make_events(40))  # published before anyone listened
    projection = StageMetricsProjection()
    runner = ProjectionRunner(store, projection, bus)
    assert runner.start() == 40
    assert runner.running
    record(store, bus, make_events(20, start=40))
    assert runner.position == 60
    assert projection.to_dict() == full_fold(store).to_dict()
    runner.stop()


def test_events_stored_before_and_published_after_the_switch_apply_once(
    store: EventStore, bus: EventBus
) -> None:
    # Stored before start() but published after it: both the catch-up and the
    # bus see them.
    stored = store.append_batch(make_events(30))
    projection = Recording()
    runner = ProjectionRunner(store, projection, bus)
    runner.start()
    for event in stored:
        bus.publish(event)
    assert projection.sequences == list(range(1, 31))


class RacingStore:
    """A store whose first catch-up read races with a writer: events are
    stored and published while the runner is reading."""

    def __init__(self, inner: EventStore, bus: EventBus) -> None:
        self.inner, self.bus, self.raced = inner, bus, False

    def get_events_since(self, sequence: int, limit: int = 1000) -> list[Event]:
        if not self.raced:
            self.raced = True
            # The writer's thread: it blocks on the runner's lock until the
            # catch-up ends, like a real concurrent publisher would.
            writer = threading.Thread(target=record, args=(self.inner, self.bus, make_events(25, start=100)))
            writer.start()
            writer.join(0.2)
            self.writer = writer
        return self.inner.get_events_since(sequence, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_writer_racing_the_catch_up_loses_and_doubles_nothing(store: EventStore, bus: EventBus) -> None:
    store.append_batch(make_events(100))
    racing = RacingStore(store, bus)
    projection = Recording()
    runner = ProjectionRunner(racing, projection, bus, batch_size=10)  # type: ignore[arg-type]
    runner.start()
    racing.writer.join(5)
    assert projection.sequences == list(range(1, 126))
    runner.stop()


def test_out_of_order_publication_is_filled_from_the_store(store: EventStore, bus: EventBus) -> None:
    projection = Recording()
    runner = ProjectionRunner(store, projection, bus)
    runner.start()
    stored = store.append_batch(make_events(5))
    # Two writers finished in one order and published in the other.
    for index in (1, 0, 4, 2, 3):
        bus.publish(stored[index])
    assert projection.sequences == [1, 2, 3, 4, 5]


def test_stop_and_resume_from_last_position(store: EventStore, bus: EventBus) -> None:
    projection = Recording()
    runner = ProjectionRunner(store, projection, bus)
    runner.start()
    record(store, bus, make_events(10))
    runner.stop()
    assert not runner.running
    record(store, bus, make_events(10, start=10))  # missed live: runner stopped
    assert runner.position == 10
    assert runner.start() == 10
    record(store, bus, make_events(5, start=20))
    assert projection.sequences == list(range(1, 26))
    runner.stop()
    assert runner.subscription_id not in bus.get_subscriptions()


def test_resume_in_a_new_runner_from_a_sequence(store: EventStore, bus: EventBus) -> None:
    store.append_batch(make_events(30))
    projection = Recording()
    with ProjectionRunner(store, projection, bus, from_sequence=12) as runner:
        assert runner.running
        assert projection.sequences == list(range(13, 31))
    assert not runner.running


def test_failing_apply_on_a_live_event_is_retried_not_skipped(store: EventStore, bus: EventBus) -> None:
    projection = Recording(fail_on={3})
    runner = ProjectionRunner(store, projection, bus)
    runner.start()
    record(store, bus, make_events(4))  # 3 fails (the bus logs it); 4 waits behind it
    assert projection.sequences == [1, 2]
    assert isinstance(runner.last_error, RuntimeError)
    assert runner.position == 2
    assert bus.stats.errors >= 1
    projection.fail_on.clear()
    record(store, bus, make_events(1, start=4))
    assert projection.sequences == [1, 2, 3, 4, 5]


def test_failing_apply_during_catch_up_raises_and_keeps_position(store: EventStore) -> None:
    store.append_batch(make_events(10))
    projection = Recording(fail_on={7})
    runner = ProjectionRunner(store, projection)
    with pytest.raises(RuntimeError, match="cannot apply 7"):
        runner.catch_up()
    assert runner.position == 6
    projection.fail_on.clear()
    runner.catch_up()
    assert projection.sequences == list(range(1, 11))


def test_unstored_events_on_the_bus_are_ignored(store: EventStore, bus: EventBus) -> None:
    projection = Recording()
    runner = ProjectionRunner(store, projection, bus)
    runner.start()
    bus.publish(make_events(1)[0])  # sequence 0: never stored
    assert projection.sequences == [] and runner.position == 0


def test_projection_filter_skips_but_advances(store: EventStore, bus: EventBus) -> None:
    store.append_batch(make_events(8, workflow="wf-2") + make_events(8, workflow="wf-1"))
    timeline = WorkflowTimelineProjection("wf-1")
    runner = ProjectionRunner(store, timeline, bus)
    runner.start()
    assert runner.position == 16 and runner.events_applied == 8
    assert {e.entity_id.split("-stage")[0].split("-task")[0] for e in timeline.get_state().entries} == {
        "wf-1"
    }


def test_concurrent_writers_during_start(store: EventStore, bus: EventBus) -> None:
    projection = Recording()
    runner = ProjectionRunner(store, projection, bus, batch_size=7)
    writers = [
        threading.Thread(target=lambda k=k: [record(store, bus, make_events(3, f"w{k}")) for _ in range(10)])
        for k in range(4)
    ]
    for w in writers:
        w.start()
    runner.start()
    for w in writers:
        w.join()
    assert projection.sequences == list(range(1, store.get_current_sequence() + 1))
    assert store.get_current_sequence() == 120


def test_uses_the_global_bus_by_default(store: EventStore) -> None:
    from stabilize_events.bus import get_event_bus

    runner = ProjectionRunner(store, Recording())
    runner.start()
    try:
        assert runner.subscription_id in get_event_bus().get_subscriptions()
    finally:
        runner.stop()
    assert "stopped" in repr(runner)


def test_bad_arguments(store: EventStore) -> None:
    with pytest.raises(InvalidArgumentError):
        ProjectionRunner(store, Recording(), from_sequence=-1)
    with pytest.raises(InvalidArgumentError):
        ProjectionRunner(store, Recording(), batch_size=0)
    # Not a projection, or the class instead of an instance: refused at the call.
    for wrong in (object(), Recording, None):
        with pytest.raises(ArgumentTypeError, match=r"^projection must be a Projection .* pass an instance"):
            ProjectionRunner(store, wrong)  # type: ignore[arg-type]


def test_with_poll_interval_the_runner_follows_events_never_published_on_its_bus(
    store: EventStore, bus: EventBus
) -> None:
    """As when another process writes: the events reach the store but not this bus. The
    runner's follower reads them on the store's notification (PostgreSQL) or its next poll."""
    import time

    runner = ProjectionRunner(store, Recording(), bus, poll_interval=0.05)
    runner.start()
    try:
        store.append_batch(make_events(5))
        deadline = time.monotonic() + 10
        while runner.position < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.position == 5 and runner.last_follow_error is None
    finally:
        runner.stop()
    store.append_batch(make_events(2, start=5))
    time.sleep(0.2)
    assert runner.position == 5  # stopped: no follower reads any more
    with pytest.raises(InvalidArgumentError, match="poll_interval"):
        ProjectionRunner(store, Recording(), bus, poll_interval=0)
