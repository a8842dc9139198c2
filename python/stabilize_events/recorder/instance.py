"""The process-wide `EventRecorder` that handlers fall back to when none is passed in."""

from __future__ import annotations

import threading

from stabilize_events.recorder.recorder import EventRecorder
from stabilize_events.store.interface import EventStore

_event_recorder: EventRecorder | None = None
_recorder_lock = threading.Lock()


def get_event_recorder() -> EventRecorder | None:
    """The global recorder, or None while event sourcing is not configured."""
    # A plain read: rebinding a module global is atomic, so readers need no lock.
    return _event_recorder


def configure_event_recorder(event_store: EventStore, publish_to_bus: bool = True) -> EventRecorder:
    """Install (replacing any previous one) a global recorder writing to ``event_store``."""
    global _event_recorder
    recorder = EventRecorder(event_store, publish_to_bus=publish_to_bus)
    with _recorder_lock:
        _event_recorder = recorder
    return recorder


def reset_event_recorder() -> None:
    """Forget the global recorder, switching recording off (for tests)."""
    global _event_recorder
    with _recorder_lock:
        _event_recorder = None


__all__ = ["configure_event_recorder", "get_event_recorder", "reset_event_recorder"]
