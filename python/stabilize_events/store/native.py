"""`NativeEventStore`: the `EventStore` methods, delegated to a Rust backend.

Both built-in stores are this class over a different `_core.NativeStore`; only
their constructors differ. Argument checks, encoding and I/O happen in Rust.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stabilize_events._core import Event, NativeStore
from stabilize_events.errors import InvalidArgumentError
from stabilize_events.store.interface import EventQuery, EventStore
from stabilize_events.types import EntityType


class NativeEventStore(EventStore):
    """An `EventStore` backed by the Rust core. Safe to share between threads."""

    _core: NativeStore

    def __init__(self, core: NativeStore) -> None:
        self._core = core

    @staticmethod
    def _no_connection(connection: Any | None) -> None:
        if connection is not None:
            raise InvalidArgumentError(
                "this store manages its own connections; appending through a caller's "
                "connection is not supported yet (pass connection=None)"
            )

    def append(self, event: Event, connection: Any | None = None) -> Event:
        """Store one event in its own transaction; return it with its sequence."""
        self._no_connection(connection)
        return self._core.append(event)

    def append_batch(self, events: list[Event], connection: Any | None = None) -> list[Event]:
        """Store events in one transaction, all or nothing; return them with their sequences."""
        self._no_connection(connection)
        return self._core.append_batch(events)

    def get_events(self, query: EventQuery) -> Iterator[Event]:
        """Events matching ``query``; the whole page is read before the first is yielded."""
        return iter(self._core.query(query))

    def get_events_for_entity(
        self, entity_type: EntityType, entity_id: str, from_version: int = 0
    ) -> list[Event]:
        """Events of one entity with version above ``from_version``, by sequence."""
        return self._core.events_for_entity(entity_type, entity_id, from_version)

    def get_events_for_workflow(self, workflow_id: str, from_sequence: int = 0) -> list[Event]:
        """Events of one workflow after ``from_sequence``, by sequence."""
        return self._core.events_for_workflow(workflow_id, from_sequence)

    def get_current_sequence(self) -> int:
        """The highest sequence stored, or 0."""
        return self._core.current_sequence()

    def get_events_since(self, sequence: int, limit: int = 1000) -> list[Event]:
        """At most ``limit`` events after ``sequence``, by sequence."""
        return self._core.events_since(sequence, limit)

    def get_event_by_id(self, event_id: str) -> Event | None:
        """The event with this id, or None."""
        return self._core.event_by_id(event_id)

    def count_events(self, query: EventQuery | None = None) -> int:
        """How many events match ``query`` (every filter; limit and offset ignored)."""
        return self._core.count(query)

    def close(self) -> None:
        """Release the database. Later calls raise `StoreClosedError`."""
        self._core.close()

    def __enter__(self) -> NativeEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
