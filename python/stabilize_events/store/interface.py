"""The event store contract: `EventStore`, `EventQuery` and `AppendResult`.

Guarantees every store gives (stated once, checked by ``tests/test_store_conformance.py``):

- Append-only: stored events are never changed or removed.
- Sequences are global, unique and strictly increasing, assigned at append;
  a batch receives consecutive sequences in its order.
- ``append_batch`` is atomic: on any error (an unencodable payload, a
  duplicate ``event_id``, an I/O failure) nothing of the batch is stored.
- Reads return events ordered by sequence unless a query asks otherwise.
- A read sees the store at one moment: while appends go on, it returns the
  matching events up to some point, every one of them, and none after it.
- A store may be shared between threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stabilize_events.defaults import READ_LIMIT
from stabilize_events.errors import ArgumentTypeError

if TYPE_CHECKING:
    from stabilize_events._core import Event
    from stabilize_events.types import EntityType, EventType


@dataclass
class EventQuery:
    """Filters, ordering and paging for `EventStore.get_events`.

    Unset filters do not filter. ``from_sequence`` is exclusive and
    ``to_sequence`` inclusive; both timestamp bounds are inclusive. ``order_by``
    is ``"sequence"`` or ``"timestamp"``.
    """

    entity_type: EntityType | None = None
    entity_id: str | None = None
    workflow_id: str | None = None
    event_types: list[EventType] | None = None
    from_sequence: int | None = None
    to_sequence: int | None = None
    from_timestamp: datetime | None = None
    to_timestamp: datetime | None = None
    limit: int = READ_LIMIT
    offset: int = 0

    order_by: str = "sequence"
    ascending: bool = True


def require_event_list(events: object) -> None:
    """Refuse, as `append_batch` is called, one event or anything else that is not a list
    of events, with what to pass instead (iterating would fail with a bare TypeError)."""
    if hasattr(events, "event_id"):
        raise ArgumentTypeError(
            "events must be a list of events, not one event; nothing was written "
            "(use append(event), or append_batch([event]))"
        )
    if not hasattr(events, "__iter__") or isinstance(events, (str, bytes, dict)):
        raise ArgumentTypeError(
            f"events must be a list of events, not {type(events).__name__}; nothing was written"
        )


@dataclass
class AppendResult:
    """Events as appended, with the sequences the store assigned them."""

    events: list[Event] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)

    @property
    def first_sequence(self) -> int:
        """The first sequence assigned, or 0 when nothing was appended."""
        return self.sequences[0] if self.sequences else 0

    @property
    def last_sequence(self) -> int:
        """The last sequence assigned, or 0 when nothing was appended."""
        return self.sequences[-1] if self.sequences else 0


class EventStore(ABC):
    """An append-only, globally sequenced log of events."""

    @abstractmethod
    def append(self, event: Event, connection: Any | None = None) -> Event:
        """Store one event and return it with its assigned sequence."""

    def can_join(self, connection: Any) -> bool:
        """Whether ``append(..., connection=connection)`` writes inside that connection's open
        transaction (committed or rolled back with it). False unless a store says otherwise."""
        return False

    @abstractmethod
    def append_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        """Store events atomically, in order; return them with their sequences."""

    @abstractmethod
    def get_events(self, query: EventQuery) -> Iterator[Event]:
        """Events matching ``query``, ordered and paged as it asks."""

    @abstractmethod
    def get_events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int = 0
    ) -> list[Event]:
        """Events of one entity whose version is greater than ``from_version``, by sequence."""

    @abstractmethod
    def get_events_for_workflow(self, workflow_id: str, from_sequence: int = 0) -> list[Event]:
        """Events of one workflow after ``from_sequence``, by sequence."""

    @abstractmethod
    def get_current_sequence(self) -> int:
        """The highest sequence stored, or 0 when the store is empty."""

    @abstractmethod
    def get_events_since(self, sequence: int, limit: int = READ_LIMIT) -> list[Event]:
        """At most ``limit`` events after ``sequence``, by sequence (catch-up reads)."""

    @abstractmethod
    def get_event_by_id(self, event_id: str) -> Event | None:
        """The event with this id, or None."""

    @abstractmethod
    def count_events(self, query: EventQuery | None = None) -> int:
        """How many events match ``query`` (all filters; limit and offset ignored)."""
