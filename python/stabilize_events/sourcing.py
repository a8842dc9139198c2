"""One-call setup of event sourcing: the global event bus and the global recorder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from stabilize_events import stabilize_bridge
from stabilize_events.bus import configure_event_bus
from stabilize_events.recorder.instance import configure_event_recorder
from stabilize_events.recorder.recorder import EventRecorder, require_event_store
from stabilize_events.store.interface import EventStore


def configure_event_sourcing(
    event_store: EventStore,
    publish_to_bus: bool = True,
    bus_max_workers: int = 4,
    *,
    stabilize: bool | None = None,
    clock: Callable[[], datetime] | None = None,
) -> EventRecorder:
    """Turn event sourcing on for the whole process and return the recorder.

    Replaces the global bus with one of ``bus_max_workers`` ASYNC workers and
    installs a global recorder writing to ``event_store`` (publishing on that
    bus when ``publish_to_bus``). After this, ``get_event_recorder().record_...``
    persists and publishes with no other wiring.

    ``stabilize`` wires the recorder and bus into Stabilize's handlers as well,
    so that every handler of a Stabilize app records through them: each event
    joins the handler's store transaction when ``event_store`` is on the same
    database (`EventStore.can_join`), and is published only after it commits;
    its metadata comes from the context Stabilize's handlers set.
    Default None: wire them when Stabilize is installed. True requires it
    (ImportError naming the extra otherwise); False leaves Stabilize alone.
    Stabilize's event model is checked first: a mismatch raises
    `IntegrationError` with nothing configured.

    ``clock`` stamps each event the recorder builds with its time instead of the
    current one (see `EventRecorder`; default None: the current time).
    """
    require_event_store(event_store)
    wire = stabilize_bridge.stabilize_installed() if stabilize is None else stabilize
    hooks = stabilize_bridge.load() if wire else None
    bus = configure_event_bus(max_workers=bus_max_workers)
    recorder = configure_event_recorder(
        event_store,
        publish_to_bus=publish_to_bus,
        transaction_scope=hooks.current_scope if hooks is not None else None,
        metadata=hooks.event_metadata if hooks is not None else None,
        clock=clock,
    )
    if hooks is not None:
        hooks.attach(recorder, bus)
        stabilize_bridge.share_files_with_stabilize()
    return recorder


__all__ = ["configure_event_sourcing"]
