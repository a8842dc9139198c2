"""Runs the demo: configures event sourcing on a store, then each section in turn.

Sections are `Section` objects in `SECTIONS`; a new part of the demo (replay,
timelines...) is a function taking the `DemoContext`, added to that tuple.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from stabilize_events import configure_event_sourcing, get_event_bus, reset_event_recorder
from stabilize_events.demo.context import DemoContext, Section
from stabilize_events.demo.projections_section import PROJECTION_SECTIONS
from stabilize_events.demo.replay_section import REPLAY_SECTIONS
from stabilize_events.demo.report import print_totals, print_workflow_events
from stabilize_events.demo.scenarios import SCENARIOS, SimClock, run_scenarios

if TYPE_CHECKING:
    from stabilize_events import Event, EventStore

LIVE_SUBSCRIPTION = "demo-live-counter"


def record_scenarios(ctx: DemoContext) -> None:
    """Play every scenario through the recorder, counting bus deliveries on the way."""
    ctx.line(f"Store: {ctx.store_url}")
    for scenario in SCENARIOS:
        ctx.line(f"  - {scenario.title}")

    def count(_event: Event) -> None:
        ctx.live_events += 1

    bus = get_event_bus()
    bus.subscribe(LIVE_SUBSCRIPTION, count)
    try:
        ctx.recorded = run_scenarios(ctx.clock)
    finally:
        bus.unsubscribe(LIVE_SUBSCRIPTION)


SECTIONS: tuple[Section, ...] = (
    Section(f"Recording {len(SCENARIOS)} workflows through the event recorder", record_scenarios),
    Section("Events per workflow, read back from the store", print_workflow_events),
    Section("Totals", print_totals),
    *REPLAY_SECTIONS,
    *PROJECTION_SECTIONS,
)


def run_demo(
    store: EventStore,
    store_url: str,
    out: TextIO | None = None,
    sections: Sequence[Section] = SECTIONS,
) -> DemoContext:
    """Record the demo workflows into ``store`` and print each section to ``out``.

    Installs a global recorder on ``store`` with `configure_event_sourcing`, its events
    stamped by the demo's simulated clock (``clock=``), and removes it again afterwards.
    Returns the context, holding what was recorded.
    """
    clock = SimClock()
    ctx = DemoContext(
        store=store, store_url=store_url, out=out if out is not None else sys.stdout, clock=clock
    )
    configure_event_sourcing(store, clock=clock.timestamp)
    try:
        for n, section in enumerate(sections, start=1):
            if n > 1:
                ctx.line()
            ctx.line(f"== {n}. {section.title} ==")
            section.run(ctx)
    finally:
        reset_event_recorder()
    return ctx
