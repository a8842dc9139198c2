"""Projections: the timeline and the stage metrics give the reference's results.

Expected values are literals recorded from ``stabilize.events`` 0.33.1 for the
same events (built by `scenario` below with the reference's classes), so the
tests run without the reference installed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stabilize_events import (
    EntityType,
    Event,
    EventMetadata,
    EventStore,
    EventType,
    InMemoryEventStore,
)
from stabilize_events.projections import (
    Projection,
    StageMetrics,
    StageMetricsProjection,
    TimelineEntry,
    WorkflowTimeline,
    WorkflowTimelineProjection,
)

T0 = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC)


def scenario(api: Any = None) -> list[Any]:
    """A workflow ``wf-1`` exercising every rule of both projections, plus one event of ``wf-2``.

    ``api`` is a module with ``Event``, ``EventType``, ``EntityType`` and
    ``EventMetadata`` (ours by default; the reference's when recording).
    """
    E = api.Event if api else Event
    ET = api.EventType if api else EventType
    EN = api.EntityType if api else EntityType
    meta = (api.EventMetadata if api else EventMetadata)(correlation_id="wf-1")
    out: list[Any] = []
    clock = [T0]

    def add(
        event_type: str,
        entity: str,
        entity_id: str,
        data: dict[str, Any],
        version: int,
        ms: int = 250,
        workflow: str = "wf-1",
    ) -> None:
        clock[0] += timedelta(milliseconds=ms, microseconds=137)
        out.append(
            E(
                event_type=ET(event_type),
                entity_type=EN(entity),
                entity_id=entity_id,
                workflow_id=workflow,
                version=version,
                timestamp=clock[0],
                data=data,
                metadata=meta,
            )
        )

    add(
        "workflow.created",
        "workflow",
        "wf-1",
        {"application": "shop", "type": "PIPELINE", "stage_count": 4},
        1,
    )
    add("workflow.started", "workflow", "wf-1", {"name": "release"}, 2)
    # 24 deploy stages (enough samples for a real p95): durations given, some failing.
    for i in range(24):
        sid = f"deploy-{i}"
        add("stage.started", "stage", sid, {"type": "deploy", "ref_id": f"d{i}", "task_count": 1}, 1)
        add("task.started", "task", f"{sid}-t", {"name": "push", "implementing_class": "Push"}, 1)
        if i % 5 == 3:
            add("task.retried", "task", f"{sid}-t", {"name": "push", "retry_count": 1}, 2)
            add("task.failed", "task", f"{sid}-t", {"name": "push", "error": "timeout"}, 3, ms=900)
            add(
                "stage.failed",
                "stage",
                sid,
                {"type": "deploy", "error": "push failed", "duration_ms": 900 + i},
                2,
            )
        else:
            add("task.completed", "task", f"{sid}-t", {"name": "push", "status": "SUCCEEDED"}, 2, ms=40 * i)
            duration = (i * 37) % 400 + 100
            add(
                "stage.completed",
                "stage",
                sid,
                {"type": "deploy", "status": "SUCCEEDED", "duration_ms": duration},
                2,
            )
    # A build stage whose durations come from timestamps only.
    add("stage.started", "stage", "build", {"type": "build", "name": "Build"}, 1)
    add("context.updated", "stage", "build", {"context": {"k": 1}}, 2)
    add("status.changed", "stage", "build", {"status": "RUNNING"}, 3)
    add("outputs.updated", "stage", "build", {"outputs": {"x": 1}}, 4)
    add("stage.completed", "stage", "build", {"type": "build", "status": "SUCCEEDED"}, 5, ms=1234)
    add("stage.skipped", "stage", "lint", {"type": "check", "name": "Lint", "reason": "disabled"}, 1)
    add("stage.started", "stage", "notify", {"type": "notify", "is_synthetic": True}, 1)
    add("stage.canceled", "stage", "notify", {"type": "notify"}, 2)
    add("task.started", "task", "anon", {}, 1)
    add("task.completed", "task", "anon", {"duration_ms": 7.9}, 2)
    add("jump.executed", "workflow", "wf-1", {"target": "build"}, 3)
    add("stage.started", "stage", "x", {"type": "python", "name": "other"}, 1, workflow="wf-2")
    add("workflow.failed", "workflow", "wf-1", {"status": "TERMINAL", "error": "deploy failed"}, 4)
    return out


# -- expected results, recorded from stabilize.events 0.33.1 ------------------

EXPECTED_WORKFLOW = {
    "workflow_id": "wf-1",
    "total_duration_ms": 36439,
    "status": "TERMINAL",
    "start_time": "2024-05-01T09:00:00.500274+00:00",
    "end_time": "2024-05-01T09:00:36.939892+00:00",
}
EXPECTED_ENTRY_COUNT = 112
EXPECTED_STAGE_ENTRY_COUNT = 53
EXPECTED_TASK_ENTRY_COUNT = 55
#: (event_type, entity_id, entity_name, status, duration_ms, details) of selected entries, by index.
EXPECTED_ENTRIES: dict[int, tuple[Any, ...]] = {
    0: (
        "workflow.created",
        "wf-1",
        None,
        None,
        None,
        {"application": "shop", "type": "PIPELINE", "stage_count": 4},
    ),
    1: ("workflow.started", "wf-1", "release", None, None, {}),
    2: (
        "stage.started",
        "deploy-0",
        "d0",
        None,
        None,
        {"type": "deploy", "is_synthetic": None, "task_count": 1},
    ),
    4: ("task.completed", "deploy-0-t", "push", "SUCCEEDED", 0, {}),
    5: ("stage.completed", "deploy-0", None, "SUCCEEDED", 100, {}),
    9: ("stage.completed", "deploy-1", None, "SUCCEEDED", 137, {}),
    16: ("task.retried", "deploy-3-t", "push", None, None, {}),
    17: ("task.failed", "deploy-3-t", "push", None, 1150, {"error": "timeout"}),
    18: ("stage.failed", "deploy-3", None, None, 903, {"error": "push failed"}),
    96: ("task.completed", "deploy-22-t", "push", "SUCCEEDED", 880, {}),
    103: (
        "stage.started",
        "build",
        "Build",
        None,
        None,
        {"type": "build", "is_synthetic": None, "task_count": None},
    ),
    104: ("stage.completed", "build", None, "SUCCEEDED", 1984, {}),
    105: ("stage.skipped", "lint", "Lint", None, None, {"reason": "disabled"}),
    106: (
        "stage.started",
        "notify",
        None,
        None,
        None,
        {"type": "notify", "is_synthetic": True, "task_count": None},
    ),
    107: ("stage.canceled", "notify", None, None, None, {}),
    108: ("task.started", "anon", None, None, None, {}),
    109: ("task.completed", "anon", None, None, 7.9, {}),
    110: ("jump.executed", "wf-1", None, None, None, {}),
    111: ("workflow.failed", "wf-1", None, "TERMINAL", 36439, {}),
}
EXPECTED_FAILURES = [
    ("task.failed", "deploy-3-t"),
    ("stage.failed", "deploy-3"),
    ("task.failed", "deploy-8-t"),
    ("stage.failed", "deploy-8"),
    ("task.failed", "deploy-13-t"),
    ("stage.failed", "deploy-13"),
    ("task.failed", "deploy-18-t"),
    ("stage.failed", "deploy-18"),
    ("task.failed", "deploy-23-t"),
    ("stage.failed", "deploy-23"),
    ("workflow.failed", "wf-1"),
]


def _stage(stage_type: str, runs: int, ok: int, skipped: int = 0) -> dict[str, Any]:
    """The to_dict() of a stage type without durations."""
    return {
        "stage_type": stage_type,
        "execution_count": runs,
        "success_count": ok,
        "failure_count": 0,
        "skip_count": skipped,
        "success_rate": 100.0 if ok else 0.0,
        "failure_rate": 0.0,
        "avg_duration_ms": 0.0,
        "median_duration_ms": 0.0,
        "p95_duration_ms": 0.0,
        "min_duration_ms": 0,
        "max_duration_ms": 0,
    }


EXPECTED_STAGES: dict[str, dict[str, Any]] = {
    "deploy": {
        "stage_type": "deploy",
        "execution_count": 24,
        "success_count": 19,
        "failure_count": 5,
        "skip_count": 0,
        "success_rate": 79.17,
        "failure_rate": 20.83,
        "avg_duration_ms": 411.33,
        "median_duration_ms": 325.5,
        "p95_duration_ms": 918,
        "min_duration_ms": 100,
        "max_duration_ms": 923,
    },
    "build": _stage("build", 1, 1),
    # context.updated / status.changed / outputs.updated of a stage carry no "type".
    "unknown": _stage("unknown", 0, 0),
    "check": _stage("check", 0, 0, skipped=1),
    "notify": _stage("notify", 1, 0),
    "python": _stage("python", 1, 0),
}
EXPECTED_TASKS: dict[str, dict[str, Any]] = {
    "push": {
        "task_name": "push",
        "implementing_class": "Push",
        "execution_count": 24,
        "success_count": 19,
        "failure_count": 5,
        "retry_count": 5,
        "success_rate": 79.17,
        "avg_duration_ms": 0.0,
    },
    "unknown": {
        "task_name": "unknown",
        "implementing_class": None,
        "execution_count": 1,
        "success_count": 1,
        "failure_count": 0,
        "retry_count": 0,
        "success_rate": 100.0,
        "avg_duration_ms": 7,
    },
}


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def stored(store: EventStore) -> list[Event]:
    """The scenario as read back from the store (with sequences)."""
    store.append_batch(scenario())
    return store.get_events_since(0, 10_000)


def entry_tuple(entry: TimelineEntry) -> tuple[Any, ...]:
    return (
        entry.event_type,
        entry.entity_id,
        entry.entity_name,
        entry.status,
        entry.duration_ms,
        entry.details,
    )


# -- timeline --------------------------------------------------------------------


def test_timeline_matches_reference(stored: list[Event]) -> None:
    projection = WorkflowTimelineProjection("wf-1")
    for event in stored:
        projection.apply(event)
    timeline = projection.get_state()
    assert isinstance(timeline, WorkflowTimeline)
    as_dict = timeline.to_dict()
    assert {k: v for k, v in as_dict.items() if k != "entries"} == EXPECTED_WORKFLOW
    assert len(timeline.entries) == EXPECTED_ENTRY_COUNT
    for index, expected in EXPECTED_ENTRIES.items():
        assert entry_tuple(timeline.entries[index]) == expected, index
    # Timestamps are the events' own, in store order.
    assert [e.timestamp for e in timeline.entries] == sorted(e.timestamp for e in timeline.entries)
    assert as_dict["entries"][0]["timestamp"] == "2024-05-01T09:00:00.250137+00:00"
    assert as_dict["entries"][0]["entity_type"] == "workflow"


def test_timeline_accessors(stored: list[Event]) -> None:
    projection = WorkflowTimelineProjection("wf-1")
    projection.apply_all(stored)
    stages, tasks = projection.get_stages(), projection.get_tasks()
    assert len(stages) == EXPECTED_STAGE_ENTRY_COUNT
    assert len(tasks) == EXPECTED_TASK_ENTRY_COUNT
    assert {e.entity_type for e in stages} == {"stage"}
    assert {e.entity_type for e in tasks} == {"task"}
    assert [(e.event_type, e.entity_id) for e in projection.get_failures()] == EXPECTED_FAILURES
    assert projection.name == "workflow-timeline-wf-1"
    assert projection.workflow_id == "wf-1"


def test_timeline_ignores_other_workflows_and_internal_events(stored: list[Event]) -> None:
    projection = WorkflowTimelineProjection("wf-1")
    projection.apply_all(stored)
    assert "x" not in {e.entity_id for e in projection.get_state().entries}
    internal = {"status.changed", "context.updated", "outputs.updated"}
    assert not internal & {e.event_type for e in projection.get_state().entries}
    other = WorkflowTimelineProjection("wf-2")
    other.apply_all(stored)
    assert [e.entity_id for e in other.get_state().entries] == ["x"]
    assert other.get_state().status is None and other.get_state().total_duration_ms is None
    assert not projection.handles_event_type(stored[-2]) and projection.handles_event_type(stored[0])


def test_timeline_is_idempotent_by_sequence(stored: list[Event]) -> None:
    once = WorkflowTimelineProjection("wf-1")
    once.apply_all(stored)
    twice = WorkflowTimelineProjection("wf-1")
    for event in stored:
        twice.apply(event)
        twice.apply(event)
    twice.apply_all(reversed(stored))
    assert twice.get_state().to_dict() == once.get_state().to_dict()


def test_timeline_applies_unsequenced_events_every_time() -> None:
    # Sequence 0 means "never stored": nothing identifies a repeat (as in the reference).
    event = scenario()[1]
    projection = WorkflowTimelineProjection("wf-1")
    projection.apply(event)
    projection.apply(event)
    assert len(projection.get_state().entries) == 2


def test_timeline_reset(stored: list[Event]) -> None:
    projection = WorkflowTimelineProjection("wf-1")
    projection.apply_all(stored)
    projection.reset()
    empty = projection.get_state()
    assert empty.entries == [] and empty.start_time is None and empty.status is None
    projection.apply_all(stored)
    assert len(projection.get_state().entries) == EXPECTED_ENTRY_COUNT


def test_duration_from_timestamps_truncates_like_the_reference() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    events = [
        Event(
            event_type=EventType.TASK_STARTED,
            entity_type=EntityType.TASK,
            entity_id="t",
            workflow_id="w",
            timestamp=start,
            sequence=1,
        ),
        Event(
            event_type=EventType.TASK_COMPLETED,
            entity_type=EntityType.TASK,
            entity_id="t",
            workflow_id="w",
            # Exactly 1001 ms later, but 1.001 s * 1000 is 1000.999... in floating
            # point: the reference truncates that to 1000, and so must we.
            timestamp=start + timedelta(milliseconds=1001),
            sequence=2,
        ),
    ]
    projection = WorkflowTimelineProjection("w")
    projection.apply_all(events)
    assert projection.get_tasks()[-1].duration_ms == 1000


def test_timeline_entry_to_dict() -> None:
    entry = TimelineEntry(T0, "stage.started", "stage", "s1", "Build", None, None, {"type": "build"})
    assert entry.to_dict() == {
        "timestamp": "2024-05-01T09:00:00+00:00",
        "event_type": "stage.started",
        "entity_type": "stage",
        "entity_id": "s1",
        "entity_name": "Build",
        "status": None,
        "duration_ms": None,
        "details": {"type": "build"},
    }
    assert TimelineEntry(T0, "a", "b", "c").details == {}
    assert WorkflowTimeline("w").to_dict() == {
        "workflow_id": "w",
        "entries": [],
        "total_duration_ms": None,
        "status": None,
        "start_time": None,
        "end_time": None,
    }


# -- stage metrics ---------------------------------------------------------------


def test_metrics_match_reference(stored: list[Event]) -> None:
    projection = StageMetricsProjection()
    projection.apply_all(stored)
    state = projection.get_state()
    assert all(isinstance(m, StageMetrics) for m in state.values())
    assert list(state) == list(EXPECTED_STAGES)
    assert {t: m.to_dict() for t, m in state.items()} == EXPECTED_STAGES
    assert projection.to_dict() == {"stages": EXPECTED_STAGES, "tasks": EXPECTED_TASKS}
    deploy = state["deploy"]
    assert deploy.avg_duration_ms == pytest.approx(411.3333333333333, abs=0)
    assert (deploy.median_duration_ms, deploy.p95_duration_ms) == (325.5, 918)
    assert (deploy.min_duration_ms, deploy.max_duration_ms) == (100, 923)
    assert deploy.success_rate == pytest.approx(79.16666666666666)
    assert deploy.failure_rate == pytest.approx(20.833333333333336)
    assert projection.get_top_slowest_stages() == [("deploy", 411.3333333333333)]
    assert projection.get_top_failing_stages(2) == [("deploy", 20.833333333333336), ("build", 0.0)]
    assert projection.get_metrics_for_type("deploy") is deploy
    assert projection.get_metrics_for_type("nope") is None
    push = projection.get_task_metrics_for_name("push")
    assert push is not None and push.retry_count == 5
    assert set(projection.get_task_state()) == {"push", "unknown"}
    assert projection.name == "stage-metrics"


def test_p95_uses_the_maximum_below_twenty_samples() -> None:
    few = StageMetrics("s", durations=[5, 1, 9, 3])
    assert (few.p95_duration_ms, few.median_duration_ms, few.avg_duration_ms) == (9, 4.0, 4.5)
    many = StageMetrics("s", durations=list(range(100, 0, -1)))
    # int(100 * 0.95) = 95 -> the 96th smallest.
    assert many.p95_duration_ms == 96
    empty = StageMetrics("s")
    assert (empty.p95_duration_ms, empty.min_duration_ms, empty.success_rate) == (0.0, 0, 0.0)


def test_metrics_count_a_transition_once(stored: list[Event], store: EventStore) -> None:
    once = StageMetricsProjection()
    once.apply_all(stored)
    # Every event applied twice, and the deploy stages' transitions appended
    # again (new sequences, same entity versions): nothing changes.
    again = store.append_batch([e for e in scenario() if e.entity_id.startswith("deploy")])
    twice = StageMetricsProjection()
    for event in stored + again:
        twice.apply(event)
        twice.apply(event)
    assert twice.to_dict() == once.to_dict()


def test_metrics_dedup_without_version_uses_sequence() -> None:
    def completed(sequence: int) -> Event:
        return Event(
            event_type=EventType.STAGE_COMPLETED,
            entity_type=EntityType.STAGE,
            entity_id="s",
            workflow_id="w",
            version=0,
            sequence=sequence,
            data={"type": "t", "duration_ms": 10},
        )

    projection = StageMetricsProjection()
    for sequence in (5, 5, 6, 0, 0):
        projection.apply(completed(sequence))
    # 5 once, 6 once, and unsequenced events every time.
    assert projection.get_state()["t"].success_count == 4


def test_metrics_reset_and_filter(stored: list[Event]) -> None:
    projection = StageMetricsProjection()
    projection.apply_all(stored)
    projection.reset()
    assert projection.get_state() == {} and projection.get_task_state() == {}
    projection.apply_all(stored)
    assert projection.to_dict()["stages"] == EXPECTED_STAGES
    assert not projection.handles_event_type(stored[0])  # a workflow event
    assert projection.handles_event_type(stored[2])


def test_standard_stream_results() -> None:
    # The bench's standard stream (workloads.md), 42 events, as the reference folds it.
    store = InMemoryEventStore()
    meta = EventMetadata(correlation_id="wf-0", source_handler="Bench")
    cycle = [
        (EventType.STAGE_STARTED, EntityType.STAGE, "stage"),
        (EventType.TASK_STARTED, EntityType.TASK, "task"),
        (EventType.TASK_COMPLETED, EntityType.TASK, "task"),
        (EventType.STAGE_COMPLETED, EntityType.STAGE, "stage"),
    ]
    events = [
        Event(
            event_type=cycle[i % 4][0],
            entity_type=cycle[i % 4][1],
            entity_id=f"wf-0-{cycle[i % 4][2]}-{i // 4}",
            workflow_id="wf-0",
            version=i,
            timestamp=T0 + timedelta(milliseconds=3 * i),
            data={"name": f"step-{i // 4}", "type": "python", "status": "SUCCEEDED"},
            metadata=meta,
        )
        for i in range(40)
    ]
    stored = store.append_batch(events)
    timeline, metrics = WorkflowTimelineProjection("wf-0"), StageMetricsProjection()
    for event in stored:
        timeline.apply(event)
        metrics.apply(event)
    assert [e.duration_ms for e in timeline.get_stages()][:4] == [None, 9, None, 9]
    assert [e.duration_ms for e in timeline.get_tasks()][:2] == [None, 3]
    assert timeline.get_state().status is None
    # version 0 of the first event falls back to its sequence; the others dedup by version.
    assert metrics.get_state()["python"].to_dict() == {
        "stage_type": "python",
        "execution_count": 10,
        "success_count": 10,
        "failure_count": 0,
        "skip_count": 0,
        "success_rate": 100.0,
        "failure_rate": 0.0,
        "avg_duration_ms": 0.0,
        "median_duration_ms": 0.0,
        "p95_duration_ms": 0.0,
        "min_duration_ms": 0,
        "max_duration_ms": 0,
    }


def test_custom_projection_contract() -> None:
    class Counter(Projection):
        def __init__(self) -> None:
            self.seen: set[int] = set()

        @property
        def name(self) -> str:
            return "counter"

        def apply(self, event: Event) -> None:
            self.seen.add(event.sequence)

        def get_state(self) -> int:
            return len(self.seen)

    counter = Counter()
    assert counter.handles_event_type(scenario()[0])
    counter.reset()  # the default reset does nothing
    assert counter.apply_all(e.with_sequence(i + 1) for i, e in enumerate(scenario()[:3])) == 3
    assert counter.get_state() == 3
    with pytest.raises(TypeError):
        Projection()  # type: ignore[abstract]


def test_demo_sections_print_timelines_and_metrics() -> None:
    import io

    from stabilize_events.demo import SECTIONS, run_demo
    from stabilize_events.demo.projections_section import PROJECTION_SECTIONS

    out = io.StringIO()
    run_demo(InMemoryEventStore(), "memory://", out=out, sections=(SECTIONS[0], *PROJECTION_SECTIONS))
    text = out.getvalue()
    assert "Timeline of each workflow" in text and "Stage metrics of this run" in text
    assert "deploy-payments-api: SUCCEEDED in 2m58s" in text
    assert "reindex-products: CANCELED in 4m16s" in text  # a status, and the same duration as section 2
    assert "Rebuilt from the store: 71 events after sequence 0" in text
    metrics_rows = [line.split() for line in text.split("Stage metrics of this run")[1].splitlines()]
    assert ["shell", "2", "1", "1", "0", "50%"] in [row[:6] for row in metrics_rows]
