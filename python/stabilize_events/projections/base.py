"""The `Projection` contract: a read model folded from events.

A projection receives events one at a time through `Projection.apply` and
exposes what it built through `Projection.get_state`. Projections are fed
from the store (catch-up), from the bus (live), or both through a
`stabilize_events.projections.ProjectionRunner`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilize_events._core import Event


class Projection(ABC):
    """Base class of read models built by applying events.

    Contract for subclasses:

    - ``apply`` must be idempotent: applying an event a second time (the same
      stored sequence delivered again by a catch-up and by the bus, or by an
      at-least-once redelivery) leaves the state unchanged.
    - ``reset`` returns the projection to its initial state, so that it can be
      rebuilt by replaying events from the beginning.
    - ``handles_event_type`` lets a feeder skip events the projection ignores;
      it must never reject an event that ``apply`` would act upon.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """A name identifying this projection (unique among those a process runs)."""

    @abstractmethod
    def apply(self, event: Event) -> None:
        """Fold ``event`` into the state (idempotent)."""

    @abstractmethod
    def get_state(self) -> Any:
        """The state built so far; its type is the subclass's."""

    def reset(self) -> None:  # noqa: B027 - a no-op default is the documented behaviour
        """Forget everything applied so far. The default does nothing."""

    def handles_event_type(self, event: Event) -> bool:
        """Whether ``event`` can change this projection. The default accepts every event."""
        return True

    def apply_all(self, events: Iterable[Event]) -> int:
        """Apply ``events`` in order; return how many were passed in."""
        apply = self.apply
        n = 0
        for event in events:
            apply(event)
            n += 1
        return n
