"""Readable views of what the demo recorded, read back from the store.

`print_workflow_events` prints one table per workflow (sequence, time, event
type, entity, key data); `print_totals` prints event counts by type for each
workflow, the run's total and the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stabilize_events import EntityType, EventQuery, EventType

if TYPE_CHECKING:
    from stabilize_events import Event
    from stabilize_events.demo.context import DemoContext

#: The payload keys worth showing for each event type, in display order.
KEY_DATA: dict[EventType, tuple[str, ...]] = {
    EventType.WORKFLOW_CREATED: ("trigger_type", "stage_count", "initial_stage_count"),
    EventType.WORKFLOW_STARTED: ("initial_stage_ids",),
    EventType.WORKFLOW_COMPLETED: ("status", "duration_ms"),
    EventType.WORKFLOW_FAILED: ("status", "error"),
    EventType.WORKFLOW_CANCELED: ("canceled_by", "reason"),
    EventType.STAGE_STARTED: ("type", "task_count"),
    EventType.STAGE_COMPLETED: ("status", "duration_ms"),
    EventType.STAGE_FAILED: ("status", "error"),
    EventType.STAGE_SKIPPED: ("reason",),
    EventType.STAGE_CANCELED: ("type",),
    EventType.TASK_STARTED: ("implementing_class",),
    EventType.TASK_COMPLETED: ("status", "duration_ms"),
    EventType.TASK_FAILED: ("status", "error"),
    EventType.TASK_RETRIED: ("attempt", "last_error"),
}

DETAILS_WIDTH = 64


def format_duration(ms: int) -> str:
    """``950ms``, ``41.3s`` or ``2m05s``."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes}m{seconds:02d}s"


def _format_value(key: str, value: Any) -> str:
    if key == "duration_ms" and isinstance(value, int):
        return format_duration(value)
    if isinstance(value, list):
        return str(len(value))
    return str(value)


def key_data(event: Event) -> str:
    """The few payload fields that say what an event is about, as ``key=value`` pairs."""
    keys = KEY_DATA.get(event.event_type, tuple(event.data)[:3])
    parts: list[str] = []
    for key in keys:
        value = event.data.get(key)
        if value is None:
            continue
        label = "duration" if key == "duration_ms" else key
        if key == "initial_stage_ids":
            label = "initial_stages"
        parts.append(f"{label}={_format_value(key, value)}")
    actor = event.metadata.actor
    if actor and actor != "system":
        parts.append(f"by={actor}")
    text = "  ".join(parts)
    return text if len(text) <= DETAILS_WIDTH else text[: DETAILS_WIDTH - 1] + "…"


def entity_label(event: Event) -> str:
    """``workflow``, or the stage's or task's name after its kind."""
    if event.entity_type == EntityType.WORKFLOW:
        return "workflow"
    name = event.data.get("name")
    return f"{event.entity_type.value} {name if name else event.entity_id}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Rows laid out in aligned columns under ``header``; columns in ``right`` align right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)]


def print_workflow_events(ctx: DemoContext) -> None:
    """One table per recorded workflow: every event of it, read back from the store."""
    ctx.line("Time is when each event was recorded; the durations in the key data come from the")
    ctx.line("simulated clock the scenarios run on, in epoch milliseconds as in Stabilize's models.")
    for recorded in ctx.recorded:
        wf = recorded.workflow
        events = ctx.store.get_events_for_workflow(wf.id)
        took = (
            format_duration(wf.end_time - wf.start_time)
            if wf.start_time is not None and wf.end_time is not None
            else "?"
        )
        ctx.line()
        ctx.line(f"{wf.name} ({wf.application}) — {recorded.scenario.title}")
        ctx.line(f"  id {wf.id}: {wf.status.name} after {took}, {len(events)} events")
        rows = [
            [
                str(e.sequence),
                e.timestamp.strftime("%H:%M:%S.%f")[:-3],
                e.event_type.value,
                entity_label(e),
                key_data(e),
            ]
            for e in events
        ]
        for text in format_table(["seq", "time (UTC)", "event", "entity", "key data"], rows, {0}):
            ctx.line("  " + text)


def print_totals(ctx: DemoContext) -> None:
    """Counts of each event type per workflow (asked of the store), and overall totals."""
    keys = [r.scenario.key for r in ctx.recorded]
    counts: dict[EventType, list[int]] = {}
    for event_type in EventType:
        row = [
            ctx.store.count_events(EventQuery(workflow_id=r.workflow.id, event_types=[event_type]))
            for r in ctx.recorded
        ]
        if any(row):
            counts[event_type] = row
    per_workflow = [ctx.store.count_events(EventQuery(workflow_id=r.workflow.id)) for r in ctx.recorded]
    rows = [[t.value, *map(str, row), str(sum(row))] for t, row in counts.items()]
    rows.append(["all events", *map(str, per_workflow), str(sum(per_workflow))])
    right = set(range(1, len(keys) + 2))
    ctx.line()
    for text in format_table(["event type", *keys, "total"], rows, right):
        ctx.line("  " + text)
    ctx.line()
    run_total = sum(per_workflow)
    ctx.line(f"Recorded {run_total} events for {len(ctx.recorded)} workflows in this run.")
    ctx.line(f"The live bus subscriber received {ctx.live_events} of them as they were recorded.")
    ctx.line(
        f"The store {ctx.store_url} now holds {ctx.store.count_events()} events "
        f"(latest sequence {ctx.store.get_current_sequence()})."
    )
