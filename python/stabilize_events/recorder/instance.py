"""The process-wide `EventRecorder` that handlers fall back to when none is passed in."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from stabilize_events import stabilize_bridge
from stabilize_events._core import EventMetadata
from stabilize_events.recorder.recorder import EventRecorder
from stabilize_events.stabilize_bridge import TransactionScope
from stabilize_events.store.interface import EventStore

_event_recorder: EventRecorder | None = None
_recorder_lock = threading.Lock()


def get_event_recorder() -> EventRecorder | None:
    """The global recorder, or None while event sourcing is not configured."""
    # A plain read: rebinding a module global is atomic, so readers need no lock.
    return _event_recorder


def configure_event_recorder(
    event_store: EventStore,
    publish_to_bus: bool = True,
    *,
    transaction_scope: Callable[[], TransactionScope | None] | None = None,
    metadata: Callable[[str | None], EventMetadata] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> EventRecorder:
    """Install (replacing any previous one) a global recorder writing to ``event_store``.

    ``transaction_scope``, ``metadata`` and ``clock`` are passed to `EventRecorder` (default
    None: no scopes, metadata from `set_event_context`, events stamped with the current time).
    """
    global _event_recorder
    recorder = EventRecorder(
        event_store,
        publish_to_bus=publish_to_bus,
        transaction_scope=transaction_scope,
        metadata=metadata,
        clock=clock,
    )
    with _recorder_lock:
        _event_recorder = recorder
    return recorder


def reset_event_recorder() -> None:
    """Forget the global recorder, switching recording off (for tests); Stabilize's handlers,
    if `configure_event_sourcing` gave them this recorder, stop recording too."""
    global _event_recorder
    with _recorder_lock:
        previous, _event_recorder = _event_recorder, None
    hooks = stabilize_bridge.loaded_hooks()
    if hooks is not None and previous is not None:
        hooks.detach(recorder=previous)


__all__ = ["configure_event_recorder", "get_event_recorder", "reset_event_recorder"]
