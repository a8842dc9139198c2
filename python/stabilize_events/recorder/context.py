"""Causality context for the events a thread or task records.

`set_event_context` states who is acting and why (correlation id, causing
event, actor); every event recorded afterwards in the same context (thread,
or asyncio task, through `contextvars`) carries it in its `EventMetadata`.
"""

from __future__ import annotations

from contextvars import ContextVar

from stabilize_events._core import EventMetadata

# One variable holding the whole triple: a single lookup per recorded event,
# and the three values always change together.
_context: ContextVar[tuple[str, str | None, str]] = ContextVar(
    "stabilize_events_context", default=("", None, "system")
)


def set_event_context(correlation_id: str, causation_id: str | None = None, actor: str = "system") -> None:
    """Make the current context's events carry these values in their metadata.

    ``correlation_id`` links related events (usually the workflow id),
    ``causation_id`` is the id of the event that caused this work and ``actor``
    says who triggered it (a user id, or ``"system"``).
    """
    _context.set((correlation_id, causation_id, actor))


def get_event_metadata(source_handler: str | None = None) -> EventMetadata:
    """Metadata for a new event: the current context plus the emitting ``source_handler``."""
    correlation_id, causation_id, actor = _context.get()
    return EventMetadata(
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor=actor,
        source_handler=source_handler,
    )


__all__ = ["get_event_metadata", "set_event_context"]
