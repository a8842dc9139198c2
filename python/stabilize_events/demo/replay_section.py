"""Demo section on replay: each workflow's state rebuilt from its events, the
state halfway through (time travel by sequence), and what changed in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stabilize_events.demo.context import Section
from stabilize_events.demo.report import format_table
from stabilize_events.replay import EventReplayer

if TYPE_CHECKING:
    from stabilize_events.demo.context import DemoContext

#: How many changed paths to show per workflow before summarising the rest.
SHOWN_CHANGES = 6
#: Longest change line shown; whole new stages print as long dicts.
WIDTH = 110


def _count(state: dict[str, Any], status: str) -> int:
    return sum(1 for s in state["stages"].values() if s.get("status") == status)


def print_rebuilt_states(ctx: DemoContext) -> None:
    """One row per workflow: its state as folded back from the store."""
    replayer = EventReplayer(ctx.store)
    rows = []
    for recorded in ctx.recorded:
        result = replayer.replay(recorded.workflow.id)
        state = result.final_state
        stages = state["stages"]
        retries = sum(int(t.get("retry_count") or 0) for t in state["tasks"].values())
        rows.append(
            [
                str(state["name"]),
                str(state["status"]),
                str(len(stages)),
                str(_count(state, "SUCCEEDED")),
                str(_count(state, "SKIPPED")),
                str(len(state["tasks"])),
                str(retries),
                str(result.events_replayed),
            ]
        )
    header = ["workflow", "status", "stages", "succeeded", "skipped", "tasks", "retries", "events"]
    for text in format_table(header, rows, right={2, 3, 4, 5, 6, 7}):
        ctx.line("  " + text)


def print_time_travel(ctx: DemoContext) -> None:
    """Each workflow at the midpoint of its events, and the changes from there to the end."""
    replayer = EventReplayer(ctx.store)
    for recorded in ctx.recorded:
        wf = recorded.workflow
        events = ctx.store.get_events_for_workflow(wf.id)
        if len(events) < 2:
            continue
        middle = events[len(events) // 2 - 1].sequence
        last = events[-1].sequence
        halfway = replayer.rebuild_workflow_state(wf.id, as_of_sequence=middle)
        running = [sid for sid, s in halfway["stages"].items() if s.get("status") == "RUNNING"]
        ctx.line()
        ctx.line(
            f"{wf.name}: at sequence {middle} (of {events[0].sequence}..{last}) it was {halfway['status']}"
        )
        ctx.line(f"  stages known then: {len(halfway['stages'])}, running: {len(running)}")
        changes = replayer.compare_states(wf.id, middle, last)["changes"]
        ctx.line(f"  {len(changes)} changes from sequence {middle} to {last}:")
        for change in changes[:SHOWN_CHANGES]:
            ctx.line(f"    {change if len(change) <= WIDTH else change[: WIDTH - 3] + '...'}")
        if len(changes) > SHOWN_CHANGES:
            ctx.line(f"    ... and {len(changes) - SHOWN_CHANGES} more")


REPLAY_SECTIONS: tuple[Section, ...] = (
    Section("Workflow state rebuilt from the events (replay)", print_rebuilt_states),
    Section("Time travel: each workflow halfway through, and what changed since", print_time_travel),
)
