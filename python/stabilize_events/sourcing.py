"""One-call setup of event sourcing: the global event bus and the global recorder."""

from __future__ import annotations

from stabilize_events.bus import configure_event_bus
from stabilize_events.recorder.instance import configure_event_recorder
from stabilize_events.recorder.recorder import EventRecorder
from stabilize_events.store.interface import EventStore


def configure_event_sourcing(
    event_store: EventStore, publish_to_bus: bool = True, bus_max_workers: int = 4
) -> EventRecorder:
    """Turn event sourcing on for the whole process and return the recorder.

    Replaces the global bus with one of ``bus_max_workers`` ASYNC workers and
    installs a global recorder writing to ``event_store`` (publishing on that
    bus when ``publish_to_bus``). After this, ``get_event_recorder().record_...``
    persists and publishes with no other wiring.
    """
    configure_event_bus(max_workers=bus_max_workers)
    return configure_event_recorder(event_store, publish_to_bus=publish_to_bus)


__all__ = ["configure_event_sourcing"]
