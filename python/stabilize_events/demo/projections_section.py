"""Demo sections built on projections: a timeline per workflow and a stage-metrics table.

`print_timelines` folds each recorded workflow's events into a
`WorkflowTimelineProjection`; `print_stage_metrics` rebuilds a
`StageMetricsProjection` from the store with a `ProjectionRunner` catch-up
over this run's events, as a read model is rebuilt after a restart.
`PROJECTION_SECTIONS` holds both, ready to append to the demo's sections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize_events.demo.context import Section
from stabilize_events.demo.report import format_duration, format_table
from stabilize_events.projections import (
    ProjectionRunner,
    StageMetrics,
    StageMetricsProjection,
    TimelineEntry,
    WorkflowTimelineProjection,
)

if TYPE_CHECKING:
    from stabilize_events.demo.context import DemoContext

#: The status each workflow end leaves, for ends whose payload names none (a cancellation's).
_WORKFLOW_ENDS = {
    "workflow.completed": "SUCCEEDED",
    "workflow.failed": "TERMINAL",
    "workflow.canceled": "CANCELED",
}


def _duration(ms: Any) -> str:
    return format_duration(int(ms)) if isinstance(ms, int | float) else ""


def _details(entry: TimelineEntry) -> str:
    return "  ".join(f"{k}={v}" for k, v in entry.details.items() if v is not None)


def _entity(entry: TimelineEntry) -> str:
    if entry.entity_type == "workflow":
        return "workflow"
    return f"{entry.entity_type} {entry.entity_name or entry.entity_id}"


def print_timelines(ctx: DemoContext) -> None:
    """For each workflow of the run: its timeline, with the status and duration of every step."""
    ctx.line("Durations come from the events' duration_ms, or for a step without one (a failure) from")
    ctx.line("the timestamps of its start and end events; both follow the demo's simulated clock.")
    for recorded in ctx.recorded:
        projection = WorkflowTimelineProjection(recorded.workflow.id)
        projection.apply_all(ctx.store.get_events_for_workflow(recorded.workflow.id))
        timeline = projection.get_state()
        end = next((e for e in reversed(timeline.entries) if e.event_type in _WORKFLOW_ENDS), None)
        took = _duration(timeline.total_duration_ms) if end is not None else ""
        ctx.line()
        outcome = "still running" if end is None else timeline.status or _WORKFLOW_ENDS[end.event_type]
        failures = len(projection.get_failures())
        ctx.line(f"{recorded.workflow.name}: {outcome}" + (f" in {took}" if took else ""))
        ctx.line(
            f"  {len(timeline.entries)} entries, {len(projection.get_stages())} about stages, "
            f"{failures} failed or canceled"
        )
        rows = [
            [e.event_type, _entity(e), e.status or "", _duration(e.duration_ms), _details(e)]
            for e in timeline.entries
        ]
        for text in format_table(["event", "entity", "status", "took", "details"], rows, {3}):
            ctx.line("  " + text)


def _metrics_row(metrics: StageMetrics) -> list[str]:
    return [
        metrics.stage_type,
        str(metrics.execution_count),
        str(metrics.success_count),
        str(metrics.failure_count),
        str(metrics.skip_count),
        f"{metrics.success_rate:.0f}%",
        _duration(metrics.avg_duration_ms) if metrics.durations else "-",
        _duration(metrics.median_duration_ms) if metrics.durations else "-",
        _duration(metrics.p95_duration_ms) if metrics.durations else "-",
        _duration(metrics.max_duration_ms) if metrics.durations else "-",
    ]


def print_stage_metrics(ctx: DemoContext) -> None:
    """Runs, outcomes and durations per stage type, over every workflow of this run."""
    first = min(
        (
            events[0].sequence
            for r in ctx.recorded
            if (events := ctx.store.get_events_for_workflow(r.workflow.id))
        ),
        default=ctx.store.get_current_sequence() + 1,
    )
    projection = StageMetricsProjection()
    runner = ProjectionRunner(ctx.store, projection, from_sequence=first - 1)
    read = runner.catch_up()
    ctx.line(
        f"Rebuilt from the store: {read} events after sequence {first - 1}, caught up to {runner.position}."
    )
    ctx.line("Success % is of finished runs (completed + failed); p95 is the maximum under 20 samples.")
    ctx.line()
    state = projection.get_state()
    rows = [_metrics_row(state[t]) for t in sorted(state)]
    header = ["stage type", "runs", "ok", "failed", "skipped", "success", "avg", "median", "p95", "max"]
    for text in format_table(header, rows, set(range(1, len(header)))):
        ctx.line("  " + text)
    slowest = projection.get_top_slowest_stages(1)
    if slowest:
        ctx.line()
        ctx.line(f"Slowest stage type on average: {slowest[0][0]} ({_duration(slowest[0][1])}).")


PROJECTION_SECTIONS: tuple[Section, ...] = (
    Section("Timeline of each workflow (WorkflowTimelineProjection)", print_timelines),
    Section("Stage metrics of this run (StageMetricsProjection)", print_stage_metrics),
)
