"""What the demo's sections share: the store, the output, and what was recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from stabilize_events import EventStore
    from stabilize_events.demo.scenarios import RecordedWorkflow, SimClock


@dataclass
class DemoContext:
    """State passed from section to section of one demo run.

    Sections run in order; an earlier one fills ``recorded`` (the scenario
    workflows), later ones read them back from ``store`` and print to ``out``.
    """

    store: EventStore
    store_url: str
    out: TextIO
    #: The simulated clock the scenarios run on and the recorder stamps events with.
    clock: SimClock
    recorded: list[RecordedWorkflow] = field(default_factory=list)
    #: Events the live bus subscriber saw while the scenarios ran.
    live_events: int = 0

    def line(self, text: str = "") -> None:
        """Print one line of output."""
        print(text, file=self.out)


@dataclass(frozen=True)
class Section:
    """One titled part of the demo's output; ``run`` prints it."""

    title: str
    run: Callable[[DemoContext], None]
